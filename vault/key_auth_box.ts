/**
 * Each key with authorization 'pin' has its own random authValue A_k. It is created by
 * GENERATE / IMPORT, which the card application allows after management-key
 * authentication alone, i.e. while the PIN may not be verified: so A_k is boxed to the
 * public half of the card's *user wrap key* (wrap_key_agreement.ts), and only the TPM can
 * open the box, and only with K_user (i.e. after VERIFY):
 *
 *   box    = E (65 bytes: 04 || X || Y, ephemeral P-256 point) || A_k XOR pad (32 bytes)
 *   pad    = SHA-256( "tpmvsc/key-auth" 00 || Z || E ),  Z = X coordinate of e * W = w * E
 *
 * A tampered box only yields a wrong A_k, which the TPM rejects (keys are noDA).
 */
import { createHash } from 'node:crypto';
import { agreeWithWrapKey, ephemeralCoordinates, POINT_BYTES } from './wrap_key_agreement.js';
import { VaultError } from './vault_error.js';

export const KEY_AUTH_BYTES = 32;

function pad(z: Uint8Array, ephemeral: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update('tpmvsc/key-auth\0').update(z).update(ephemeral).digest());
}

function xor(a: Uint8Array, b: Uint8Array): Uint8Array {
  return a.map((byte, i) => byte ^ b[i]!);
}

/** Boxes `keyAuth` to the wrap key's public point (uncompressed). */
export function sealKeyAuth(wrapKeyPoint: Uint8Array, keyAuth: Uint8Array): Uint8Array {
  const { ephemeralPoint, z } = agreeWithWrapKey(wrapKeyPoint);
  const box = new Uint8Array(POINT_BYTES + KEY_AUTH_BYTES);
  box.set(ephemeralPoint, 0);
  box.set(xor(keyAuth, pad(z, ephemeralPoint)), POINT_BYTES);
  z.fill(0);
  return box;
}

/** The ephemeral point the TPM must multiply by the wrap key's private scalar. */
export function boxEphemeralPoint(box: Uint8Array): { x: Uint8Array; y: Uint8Array } {
  if (box.length !== POINT_BYTES + KEY_AUTH_BYTES) throw new VaultError('BAD_STATE', 'key auth box is malformed');
  return ephemeralCoordinates(box.subarray(0, POINT_BYTES), 'key auth box');
}

/** Opens the box with Z = X coordinate the TPM returned. */
export function openKeyAuth(box: Uint8Array, z: Uint8Array): Uint8Array {
  const ephemeralPoint = box.subarray(0, POINT_BYTES);
  return xor(box.subarray(POINT_BYTES), pad(z, ephemeralPoint));
}
