/**
 * How PIN and PUK values arrive in VERIFY, CHANGE REFERENCE DATA and RESET RETRY
 * COUNTER, and how vault check results become status words.
 *
 * A value is padded at its end with 0xFF (PIV pads to 8 bytes); the padding is
 * stripped. New values have at most 8 bytes (common/pin_rules.ts), but cards created
 * before that limit may hold a PIN or PUK of up to 127 bytes (Windows' limit), which
 * must still be presentable:
 *   VERIFY                    data = PIN, 1..127 bytes
 *   CHANGE REFERENCE DATA     data = old || new, both padded with FF to the same
 *   RESET RETRY COUNTER       length n (8..127): Lc = 2n. The PIV form (8 + 8) is n = 8;
 *                             a longer n only carries an old PIN or a PUK of such a card.
 */
import type { CheckResult } from './key_vault.js';
import { POLICY_MIN_LENGTH_BOUND } from '../common/pin_rules.js';
import { SECRET_MAX_LENGTH } from './pin_policy.js';
import { CardError, SW, triesLeft } from './status_words.js';

/** The shortest PIN any policy allows (Windows /pinpolicy minlen lower bound). */
export const PIN_MIN_LENGTH = POLICY_MIN_LENGTH_BOUND;
export const PIV_PADDED_LENGTH = 8;

export function stripPadding(value: Uint8Array): Uint8Array {
  let end = value.length;
  while (end > 0 && value[end - 1] === 0xff) end--;
  return value.slice(0, end);
}

/** Splits old || new (each padded to half of the data); 6A80 for any other shape. */
export function splitPaddedPair(data: Uint8Array): [Uint8Array, Uint8Array] {
  const half = data.length / 2;
  if (!Number.isInteger(half) || half < PIV_PADDED_LENGTH || half > SECRET_MAX_LENGTH) {
    throw new CardError(SW.WRONG_DATA, 'expected two values padded to the same length (8..127)');
  }
  const first = stripPadding(data.subarray(0, half));
  const second = stripPadding(data.subarray(half));
  if (first.length === 0 || second.length === 0) throw new CardError(SW.WRONG_DATA, 'empty value');
  return [first, second];
}

/**
 * Maps a failed check to its status word: wrong -> 63Cx (6983 once none are left),
 * blocked -> 6983, TPM dictionary-attack lockout -> 6983 (the card looks blocked
 * while the TPM refuses every try, as Windows cards do).
 */
export function checkFailure(result: Exclude<CheckResult, { ok: true }>): CardError {
  if (result.reason === 'wrong') {
    return new CardError(result.remaining > 0 ? triesLeft(result.remaining) : SW.AUTH_METHOD_BLOCKED);
  }
  if (result.reason === 'lockout') return new CardError(SW.AUTH_METHOD_BLOCKED, 'TPM lockout');
  return new CardError(SW.AUTH_METHOD_BLOCKED);
}
