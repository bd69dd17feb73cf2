/**
 * The card's PIN policy (Windows /pinpolicy), enforced on every new PIN whatever
 * instruction sets it (CHANGE REFERENCE DATA, RESET RETRY COUNTER). The defaults that
 * RESET and SET PIN RETRIES install are the one exception, as on Windows.
 *
 * Characters: printable ASCII 0x20..0x7E only. Categories: uppercase A-Z,
 * lowercase a-z, digits 0-9, special = every other printable character.
 * Each category is ALLOWED, DISALLOWED (none may appear) or REQUIRED (one at least).
 */
import type { PinPolicy, TriState } from '../common/control_protocol.js';
import { CardError, SW } from './status_words.js';

export type PinPolicyViolation =
  | 'too-short'
  | 'too-long'
  | 'not-printable-ascii'
  | 'uppercase'
  | 'lowercase'
  | 'digits'
  | 'special-chars';

type Category = 'uppercase' | 'lowercase' | 'digits' | 'specialChars';

function categoryOf(byte: number): Category {
  if (byte >= 0x41 && byte <= 0x5a) return 'uppercase';
  if (byte >= 0x61 && byte <= 0x7a) return 'lowercase';
  if (byte >= 0x30 && byte <= 0x39) return 'digits';
  return 'specialChars';
}

const VIOLATION: Record<Category, PinPolicyViolation> = {
  uppercase: 'uppercase',
  lowercase: 'lowercase',
  digits: 'digits',
  specialChars: 'special-chars',
};

/** The first rule `pin` breaks, or undefined when the policy accepts it. */
export function pinPolicyViolation(pin: Uint8Array, policy: PinPolicy): PinPolicyViolation | undefined {
  if (pin.length < policy.minLength) return 'too-short';
  if (pin.length > policy.maxLength) return 'too-long';
  const seen = new Set<Category>();
  for (const byte of pin) {
    if (byte < 0x20 || byte > 0x7e) return 'not-printable-ascii';
    seen.add(categoryOf(byte));
  }
  for (const category of Object.keys(VIOLATION) as Category[]) {
    const rule: TriState = policy[category];
    if (rule === 'DISALLOWED' && seen.has(category)) return VIOLATION[category];
    if (rule === 'REQUIRED' && !seen.has(category)) return VIOLATION[category];
  }
  return undefined;
}

/** Throws 6A80 when a new PIN breaks the card's policy. */
export function assertNewPinAllowed(pin: Uint8Array, policy: PinPolicy): void {
  const violation = pinPolicyViolation(pin, policy);
  if (violation) throw new CardError(SW.WRONG_DATA, `new PIN rejected by policy: ${violation}`);
}

/** PUK rule of Windows virtual smart cards: 8..127 printable ASCII characters. */
export const PUK_MIN_LENGTH = 8;
export const SECRET_MAX_LENGTH = 127;

export function assertNewPukAllowed(puk: Uint8Array): void {
  const printable = puk.every((byte) => byte >= 0x20 && byte <= 0x7e);
  if (puk.length < PUK_MIN_LENGTH || puk.length > SECRET_MAX_LENGTH || !printable) {
    throw new CardError(SW.WRONG_DATA, 'new PUK must be 8..127 printable characters');
  }
}
