/**
 * Turns a PIN or PUK into the authValue of the TPM object that seals K_user.
 *
 *   authValue = SHA-256( "tpmvsc/" || purpose || 0x00 || cardSalt || value )
 *
 * No slow KDF is needed: the derived value is only ever checked by the TPM (its
 * dictionary-attack logic limits the guesses) and nothing on disk can be tested
 * offline against it (the sealed blobs are encrypted by the TPM). The salt makes the
 * value differ between cards and the purpose keeps a PIN from working as a PUK.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

export type SecretPurpose = 'pin' | 'puk';

export function deriveAuthValue(cardSalt: Uint8Array, purpose: SecretPurpose, value: Uint8Array): Uint8Array {
  const hash = createHash('sha256');
  hash.update(`tpmvsc/${purpose}\0`);
  hash.update(cardSalt);
  hash.update(value);
  return new Uint8Array(hash.digest());
}

/** Constant-time equality; the length is not secret (callers compare to public defaults). */
export function secretsEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  return timingSafeEqual(a, b);
}
