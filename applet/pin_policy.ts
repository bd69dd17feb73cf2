/**
 * The card's PIN policy (Windows /pinpolicy), enforced on every new PIN whatever
 * instruction sets it (CHANGE REFERENCE DATA, RESET RETRY COUNTER). The defaults that
 * RESET and SET PIN RETRIES install are the one exception, as on Windows. The rules
 * themselves are common/pin_rules.ts, shared with tpmvscmgr and the daemon: a new PIN or
 * PUK has at most 8 bytes, also on a card whose stored policy (from before that limit)
 * allows more. The card answers a broken rule with 6A80.
 */
import type { PinPolicy } from '../common/control_protocol.js';
import { PRESENTED_SECRET_MAX_LENGTH, pinRuleViolation, pukRuleViolation } from '../common/pin_rules.js';
import { CardError, SW } from './status_words.js';

/**
 * Longest PIN or PUK the card accepts where a value is presented (VERIFY, the old value of
 * a change, the PUK of an unblock): 127 bytes, for cards created before the 8-byte limit.
 */
export const SECRET_MAX_LENGTH = PRESENTED_SECRET_MAX_LENGTH;

/** PIN bytes as the text the rules read: bytes above 0x7E stay non-printable. */
const asText = (bytes: Uint8Array): string => Buffer.from(bytes).toString('latin1');

/** Throws 6A80 when a new PIN breaks the card's policy (its lengths clamped to 8). */
export function assertNewPinAllowed(pin: Uint8Array, policy: PinPolicy): void {
  const violation = pinRuleViolation(asText(pin), policy);
  if (violation) throw new CardError(SW.WRONG_DATA, `new PIN rejected by policy: ${violation}`);
}

/** Throws 6A80 unless a new PUK is 8 printable characters. */
export function assertNewPukAllowed(puk: Uint8Array): void {
  const violation = pukRuleViolation(asText(puk));
  if (violation) throw new CardError(SW.WRONG_DATA, `new PUK rejected: ${violation}`);
}
