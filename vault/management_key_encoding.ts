/**
 * The sealed form of the card's management key (9B): one byte naming the algorithm (the
 * PIV algorithm identifier) followed by the key.
 *
 *   03 || 24-byte key   3DES          08 || 16 bytes   AES-128
 *   0A || 24 bytes      AES-192       0C || 32 bytes   AES-256
 */
import type { ManagementKey, ManagementKeyAlgorithm } from '../applet/key_vault.js';
import { VaultError } from './vault_error.js';

export const MANAGEMENT_KEY_TAGS: Record<ManagementKeyAlgorithm, { tag: number; length: number }> = {
  tdes: { tag: 0x03, length: 24 },
  aes128: { tag: 0x08, length: 16 },
  aes192: { tag: 0x0a, length: 24 },
  aes256: { tag: 0x0c, length: 32 },
};

export function checkManagementKey(key: ManagementKey): void {
  const spec = MANAGEMENT_KEY_TAGS[key?.algorithm];
  if (!spec || !(key.key instanceof Uint8Array) || key.key.length !== spec.length) {
    throw new VaultError('BAD_INPUT', 'management key has an unknown algorithm or the wrong length');
  }
}

/** Sealed form of the management key: algorithm tag || key. */
export function encodeManagementKey(key: ManagementKey): Uint8Array {
  const out = new Uint8Array(1 + key.key.length);
  out[0] = MANAGEMENT_KEY_TAGS[key.algorithm].tag;
  out.set(key.key, 1);
  return out;
}

export function decodeManagementKey(bytes: Uint8Array): ManagementKey {
  const entry = Object.entries(MANAGEMENT_KEY_TAGS).find(([, spec]) => spec.tag === bytes[0] && spec.length === bytes.length - 1);
  if (!entry) throw new VaultError('BAD_STATE', 'sealed management key is malformed');
  return { algorithm: entry[0] as ManagementKeyAlgorithm, key: bytes.slice(1) };
}
