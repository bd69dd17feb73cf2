/**
 * The rules a PIN, a PUK and a PIN policy must follow: one table, read by tpmvscmgr (checks
 * before sending), tpmvscd (checks every request) and the card (checks every new value).
 *
 * Windows' tpmvscmgr allows PINs and PUKs of up to 127 characters; PIV clients send at most
 * 8 bytes (VERIFY, CHANGE REFERENCE DATA and RESET RETRY COUNTER carry each value padded to
 * 8 bytes: yubico-piv-tool refuses a longer PIN, OpenSC answers CKR_PIN_LEN_RANGE). So the
 * maximum is PIV's and the minimum stays Windows':
 *
 *   value           min  max  characters
 *   PIN, no policy    8    8  printable ASCII (0x20..0x7E)   Windows' minimum is PIV's maximum
 *   PIN, /pinpolicy   4    8  printable ASCII, classes ALLOWED | DISALLOWED | REQUIRED
 *   PUK               8    8  printable ASCII
 *   policy minlen 4..8, maxlen 6..8, minlen <= maxlen
 *
 * Measured with Debian 12's clients: a PIN of 4 or 5 characters logs in with OpenSC and
 * yubico-piv-tool, but neither sets one (yubico-piv-tool change-pin/unblock-pin: "Minimum 6
 * digits"; OpenSC C_SetPIN: CKR_PIN_LEN_RANGE) and ykman takes none (6..8). So a policy must
 * allow PINs of 6 characters or more (maxlen >= 6): otherwise no PIV client could ever change
 * or unblock the card's PIN.
 *
 * Cards made before this limit may hold a policy with maxlen up to 127 and a longer PIN or PUK:
 * they keep working (the card still accepts values of up to 127 bytes where a value is presented:
 * VERIFY, the old value of a change, the PUK of an unblock), and every NEW value follows the
 * table (cardPinPolicy() clamps such a policy to 8).
 *
 * Errors name the rule that failed, never the value.
 */
import { TpmvscError } from './errors.js';
import type { PinPolicy, TriState } from './control_protocol.js';

/** The longest PIN or PUK PIV clients send: each value travels padded to 8 bytes. */
export const PIV_SECRET_MAX_LENGTH = 8;
/** Windows' minimum for a PIN without /pinpolicy, and for a PUK. */
export const WINDOWS_SECRET_MIN_LENGTH = 8;
/** The lowest /pinpolicy minlen (Windows' lower bound). */
export const POLICY_MIN_LENGTH_BOUND = 4;
/** The shortest PIN PIV clients set (change-pin, unblock-pin): the lowest /pinpolicy maxlen. */
export const PIV_CLIENT_SET_MIN_LENGTH = 6;
/**
 * The longest value a card accepts where one is presented (Windows' limit): cards created
 * before the 8-byte limit may hold a PIN or PUK that long.
 */
export const PRESENTED_SECRET_MAX_LENGTH = 127;
export const DEFAULT_PIN = '12345678';
export const DEFAULT_PUK = '12345678';

/** Why the maximum is 8, appended to every message about it. */
export const PIV_LIMIT_REASON = 'PIV clients send at most 8 bytes (yubico-piv-tool refuses longer ones, OpenSC answers CKR_PIN_LEN_RANGE)';
/** Why a policy must allow 6 characters. */
export const PIV_SET_REASON =
  'PIV clients set no PIN shorter than 6 (yubico-piv-tool change-pin and unblock-pin, OpenSC), so the PIN could never be changed or unblocked with them';

const TRI_STATES: readonly TriState[] = ['ALLOWED', 'DISALLOWED', 'REQUIRED'];

export function isTriState(value: unknown): value is TriState {
  return typeof value === 'string' && (TRI_STATES as readonly string[]).includes(value);
}

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

interface CharacterClass {
  key: 'uppercase' | 'lowercase' | 'digits' | 'specialChars';
  label: string;
  test: (char: string) => boolean;
}

const CHARACTER_CLASSES: readonly CharacterClass[] = [
  { key: 'uppercase', label: 'uppercase letters', test: (c) => c >= 'A' && c <= 'Z' },
  { key: 'lowercase', label: 'lowercase letters', test: (c) => c >= 'a' && c <= 'z' },
  { key: 'digits', label: 'digits', test: (c) => c >= '0' && c <= '9' },
  { key: 'specialChars', label: 'special characters', test: (c) => !/[A-Za-z0-9]/.test(c) },
];

/** Every class allowed, 8..8 characters: a PIN without /pinpolicy, and the base of every policy. */
export const DEFAULT_PIN_POLICY: PinPolicy = {
  minLength: WINDOWS_SECRET_MIN_LENGTH,
  maxLength: PIV_SECRET_MAX_LENGTH,
  uppercase: 'ALLOWED',
  lowercase: 'ALLOWED',
  digits: 'ALLOWED',
  specialChars: 'ALLOWED',
};

/** The PUK rule: 8 printable ASCII characters (Windows' minimum, PIV's maximum). */
const PUK_POLICY: PinPolicy = { ...DEFAULT_PIN_POLICY };

/** Any PIN any card accepts as new: the widest /pinpolicy (4..8), every class allowed. */
export const WIDEST_PIN_POLICY: PinPolicy = { ...DEFAULT_PIN_POLICY, minLength: POLICY_MIN_LENGTH_BOUND };

/** Throws USAGE unless 4 <= minLength <= maxLength <= 8, maxLength >= 6 and every class is a known tri-state. */
export function checkPinPolicy(policy: PinPolicy): void {
  const { minLength, maxLength } = policy;
  if (!Number.isInteger(minLength) || minLength < POLICY_MIN_LENGTH_BOUND || minLength > PIV_SECRET_MAX_LENGTH) {
    const why = minLength > PIV_SECRET_MAX_LENGTH ? `: ${PIV_LIMIT_REASON}` : '';
    throw new TpmvscError('USAGE', `/pinpolicy minlen must be an integer from ${POLICY_MIN_LENGTH_BOUND} to ${PIV_SECRET_MAX_LENGTH}${why}`);
  }
  if (!Number.isInteger(maxLength) || maxLength < PIV_CLIENT_SET_MIN_LENGTH || maxLength > PIV_SECRET_MAX_LENGTH) {
    const why = maxLength > PIV_SECRET_MAX_LENGTH ? `: ${PIV_LIMIT_REASON}` : maxLength < PIV_CLIENT_SET_MIN_LENGTH ? `: ${PIV_SET_REASON}` : '';
    throw new TpmvscError('USAGE', `/pinpolicy maxlen must be an integer from ${PIV_CLIENT_SET_MIN_LENGTH} to ${PIV_SECRET_MAX_LENGTH}${why}`);
  }
  if (minLength > maxLength) {
    throw new TpmvscError('USAGE', `/pinpolicy minlen (${minLength}) must not exceed maxlen (${maxLength})`);
  }
  for (const characterClass of CHARACTER_CLASSES) {
    if (!isTriState(policy[characterClass.key])) {
      throw new TpmvscError('USAGE', `/pinpolicy ${characterClass.key.toLowerCase()} must be ALLOWED, DISALLOWED or REQUIRED`);
    }
  }
  if (CHARACTER_CLASSES.every((c) => policy[c.key] === 'DISALLOWED')) {
    throw new TpmvscError('USAGE', '/pinpolicy disallows every character class: no PIN could satisfy it');
  }
}

/**
 * The policy a card applies to a new PIN: its own, with both lengths clamped to 8 (a card
 * created before the 8-byte limit may hold maxlen up to 127, or even minlen above 8).
 */
export function cardPinPolicy(policy: PinPolicy): PinPolicy {
  return {
    ...policy,
    minLength: Math.min(policy.minLength, PIV_SECRET_MAX_LENGTH),
    maxLength: Math.min(policy.maxLength, PIV_SECRET_MAX_LENGTH),
  };
}

/**
 * The first rule `pin` breaks, as a sentence naming the rule (never the PIN), or undefined
 * when the policy accepts it. One implementation for tpmvscmgr, the daemon and the card.
 */
export function pinRuleViolation(pin: string, policy: PinPolicy, label = 'PIN'): string | undefined {
  if (!PRINTABLE_ASCII.test(pin)) return `the ${label} must contain only printable ASCII characters`;
  const { minLength, maxLength } = cardPinPolicy(policy);
  if (pin.length < minLength || pin.length > maxLength) {
    if (minLength === maxLength) {
      const why = maxLength === PIV_SECRET_MAX_LENGTH ? `: Windows' minimum is ${WINDOWS_SECRET_MIN_LENGTH} and ${PIV_LIMIT_REASON}` : '';
      return `the ${label} must be exactly ${minLength} characters long${why}`;
    }
    if (pin.length < minLength) return `the ${label} must be at least ${minLength} characters long`;
    const why = maxLength === PIV_SECRET_MAX_LENGTH ? `: ${PIV_LIMIT_REASON}` : '';
    return `the ${label} must be at most ${maxLength} characters long${why}`;
  }
  const characters = [...pin];
  for (const characterClass of CHARACTER_CLASSES) {
    const present = characters.some(characterClass.test);
    const rule = policy[characterClass.key];
    if (rule === 'REQUIRED' && !present) return `the ${label} must contain ${characterClass.label}`;
    if (rule === 'DISALLOWED' && present) return `the ${label} must not contain ${characterClass.label}`;
  }
  return undefined;
}

export function pukRuleViolation(puk: string, label = 'PUK'): string | undefined {
  return pinRuleViolation(puk, PUK_POLICY, label);
}

/** Throws PIN_POLICY naming the broken rule (never the PIN) unless the PIN satisfies the policy. */
export function checkPin(pin: string, policy: PinPolicy, label = 'PIN'): void {
  const violation = pinRuleViolation(pin, policy, label);
  if (violation) throw new TpmvscError('PIN_POLICY', violation);
}

/** Throws PIN_POLICY unless the PUK is 8 printable ASCII characters. */
export function checkPuk(puk: string, label = 'PUK'): void {
  const violation = pukRuleViolation(puk, label);
  if (violation) throw new TpmvscError('PIN_POLICY', violation);
}
