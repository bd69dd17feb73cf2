/**
 * The card administrator key (/AdminKey): a 24-byte three-key 3DES key, written as 48 hex characters.
 */
import { randomBytes } from 'node:crypto';
import { TpmvscError } from '../common/errors.js';

export const ADMIN_KEY_BYTES = 24;
/** Windows' DEFAULT admin key (and the PIV default management key). */
export const DEFAULT_ADMIN_KEY_HEX = '010203040506070801020304050607080102030405060708';

const ADMIN_KEY_HEX = /^[0-9a-fA-F]{48}$/;

export function isAdminKeyHex(text: string): boolean {
  return ADMIN_KEY_HEX.test(text);
}

/** Checks a typed admin key; spaces and colons between bytes are tolerated. Never echoes the value. */
export function normaliseAdminKeyHex(typed: string): string {
  const compact = typed.replace(/[\s:]/g, '');
  if (!isAdminKeyHex(compact)) {
    throw new TpmvscError('USAGE', '/AdminKey PROMPT needs 48 hexadecimal characters (24 bytes)');
  }
  return compact.toUpperCase();
}

/** /AdminKey RANDOM: sent to the daemon and then forgotten; never printed or returned. */
export function randomAdminKeyHex(): string {
  return randomBytes(ADMIN_KEY_BYTES).toString('hex').toUpperCase();
}
