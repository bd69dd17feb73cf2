/**
 * Block encryption for management-key (9B) authentication: one ECB block with 3DES
 * (8 bytes) or AES (16 bytes), and the constant-time check of a host's answer. The card
 * and tpmvscmgr (the host side of the same exchange) both use these.
 */
import { createCipheriv, createDecipheriv, timingSafeEqual } from 'node:crypto';
import type { ManagementKey } from './key_vault.js';

const CIPHERS = { tdes: 'des-ede3', aes128: 'aes-128-ecb', aes192: 'aes-192-ecb', aes256: 'aes-256-ecb' } as const;

export function encryptBlock(key: ManagementKey, block: Uint8Array): Uint8Array {
  const cipher = createCipheriv(CIPHERS[key.algorithm], key.key, null);
  cipher.setAutoPadding(false);
  return new Uint8Array(Buffer.concat([cipher.update(block), cipher.final()]));
}

/** The inverse of encryptBlock: the host side decrypts the card's witness with it. */
export function decryptBlock(key: ManagementKey, block: Uint8Array): Uint8Array {
  const decipher = createDecipheriv(CIPHERS[key.algorithm], key.key, null);
  decipher.setAutoPadding(false);
  return new Uint8Array(Buffer.concat([decipher.update(block), decipher.final()]));
}

/** Constant-time equality; different lengths are simply unequal (lengths are public). */
export function secretEquals(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
