/**
 * ECDH with the card's user wrap key, the one secret-free way to make something only an
 * unlocked card can open. The wrap key is a P-256 ECDH key in the TPM whose auth is K_user
 * (so it answers only after a correct VERIFY); its public point W is in the vault state.
 * Sealing runs in node from W alone, while the vault may be locked:
 *
 *   e  fresh random scalar, E = e * G (65 bytes: 04 || X || Y, stored with what it seals)
 *   Z  = X coordinate of e * W
 *
 * Opening asks the TPM for the same Z = X of w * E (TPM2_ECDH_ZGen with the wrap key). Used by
 * the per-key auth boxes (key_auth_box.ts) and the sealed data objects (object_box.ts).
 */
import { createECDH } from 'node:crypto';
import { VaultError } from './vault_error.js';

/** An uncompressed P-256 point: 04 || X || Y. */
export const POINT_BYTES = 65;
const COORDINATE_BYTES = 32;

/** A fresh ephemeral key agreed with the wrap key's public point: E to store, Z to derive from (wipe it). */
export function agreeWithWrapKey(wrapKeyPoint: Uint8Array): { ephemeralPoint: Uint8Array; z: Uint8Array } {
  const ephemeral = createECDH('prime256v1');
  const ephemeralPoint = new Uint8Array(ephemeral.generateKeys());
  return { ephemeralPoint, z: new Uint8Array(ephemeral.computeSecret(wrapKeyPoint)) };
}

/** The coordinates of a stored ephemeral point, for ECDH_ZGen; `what` names the holder in the error. */
export function ephemeralCoordinates(point: Uint8Array, what: string): { x: Uint8Array; y: Uint8Array } {
  if (point.length !== POINT_BYTES || point[0] !== 0x04) throw new VaultError('BAD_STATE', `${what} is malformed`);
  return { x: point.slice(1, 1 + COORDINATE_BYTES), y: point.slice(1 + COORDINATE_BYTES) };
}
