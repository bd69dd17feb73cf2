/**
 * The rules a PIN, a PUK and a PIN policy must follow (Windows tpmvscmgr semantics),
 * shared by tpmvscmgr (checks before sending) and tpmvscd (checks every request).
 *
 *   PIN   printable ASCII (0x20..0x7E), policy.minLength..policy.maxLength characters
 *   PUK   printable ASCII, 8..127 characters
 *   policy 4 <= minLength <= maxLength <= 127; each character class ALLOWED | DISALLOWED | REQUIRED
 *
 * Errors name the rule that failed, never the value.
 */
import { TpmvscError } from './errors.js';
import type { PinPolicy, TriState } from './control_protocol.js';

export const PIN_LENGTH_LOWER_BOUND = 4;
export const PIN_LENGTH_UPPER_BOUND = 127;
export const PUK_MIN_LENGTH = 8;
export const PUK_MAX_LENGTH = 127;
/** PIV middleware (OpenSC, yubico-piv-tool) pads PINs into an 8-byte field. */
export const PIV_MIDDLEWARE_PIN_LIMIT = 8;
export const DEFAULT_PIN = '12345678';
export const DEFAULT_PUK = '12345678';

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

/** Throws USAGE unless 4 <= minLength <= maxLength <= 127 and every class is a known tri-state. */
export function checkPinPolicy(policy: PinPolicy): void {
  const { minLength, maxLength } = policy;
  if (!Number.isInteger(minLength) || minLength < PIN_LENGTH_LOWER_BOUND || minLength > PIN_LENGTH_UPPER_BOUND) {
    throw new TpmvscError('USAGE', `/pinpolicy minlen must be an integer from ${PIN_LENGTH_LOWER_BOUND} to ${PIN_LENGTH_UPPER_BOUND}`);
  }
  if (!Number.isInteger(maxLength) || maxLength < PIN_LENGTH_LOWER_BOUND || maxLength > PIN_LENGTH_UPPER_BOUND) {
    throw new TpmvscError('USAGE', `/pinpolicy maxlen must be an integer from ${PIN_LENGTH_LOWER_BOUND} to ${PIN_LENGTH_UPPER_BOUND}`);
  }
  if (minLength > maxLength) {
    throw new TpmvscError('USAGE', `/pinpolicy minlen (${minLength}) must not exceed maxlen (${maxLength})`);
  }
  for (const characterClass of CHARACTER_CLASSES) {
    if (!isTriState(policy[characterClass.key])) {
      throw new TpmvscError('USAGE', `/pinpolicy ${characterClass.key.toLowerCase()} must be ALLOWED, DISALLOWED or REQUIRED`);
    }
  }
  const required = CHARACTER_CLASSES.filter((c) => policy[c.key] === 'REQUIRED').length;
  if (required > maxLength) {
    throw new TpmvscError('USAGE', `/pinpolicy requires ${required} character classes but maxlen is ${maxLength}`);
  }
  if (CHARACTER_CLASSES.every((c) => policy[c.key] === 'DISALLOWED')) {
    throw new TpmvscError('USAGE', '/pinpolicy disallows every character class: no PIN could satisfy it');
  }
}

/**
 * The first rule `pin` breaks, as a sentence naming the rule (never the PIN), or undefined
 * when the policy accepts it. One implementation for tpmvscmgr, the daemon and the card.
 */
export function pinRuleViolation(pin: string, policy: PinPolicy, label = 'PIN'): string | undefined {
  if (!PRINTABLE_ASCII.test(pin)) return `the ${label} must contain only printable ASCII characters`;
  if (pin.length < policy.minLength) return `the ${label} must be at least ${policy.minLength} characters long`;
  if (pin.length > policy.maxLength) return `the ${label} must be at most ${policy.maxLength} characters long`;
  const characters = [...pin];
  for (const characterClass of CHARACTER_CLASSES) {
    const present = characters.some(characterClass.test);
    const rule = policy[characterClass.key];
    if (rule === 'REQUIRED' && !present) return `the ${label} must contain ${characterClass.label}`;
    if (rule === 'DISALLOWED' && present) return `the ${label} must not contain ${characterClass.label}`;
  }
  return undefined;
}

/** The PUK rule of Windows virtual smart cards: 8..127 printable ASCII characters. */
const PUK_POLICY: PinPolicy = {
  minLength: PUK_MIN_LENGTH,
  maxLength: PUK_MAX_LENGTH,
  uppercase: 'ALLOWED',
  lowercase: 'ALLOWED',
  digits: 'ALLOWED',
  specialChars: 'ALLOWED',
};

export function pukRuleViolation(puk: string): string | undefined {
  return pinRuleViolation(puk, PUK_POLICY, 'PUK');
}

/** Throws PIN_POLICY naming the broken rule (never the PIN) unless the PIN satisfies the policy. */
export function checkPin(pin: string, policy: PinPolicy, label = 'PIN'): void {
  const violation = pinRuleViolation(pin, policy, label);
  if (violation) throw new TpmvscError('PIN_POLICY', violation);
}

/** Throws PIN_POLICY unless the PUK is 8..127 printable ASCII characters. */
export function checkPuk(puk: string): void {
  const violation = pukRuleViolation(puk);
  if (violation) throw new TpmvscError('PIN_POLICY', violation);
}
