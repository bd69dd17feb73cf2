/**
 * PIN-protected data objects at rest. The objects whose read rule is 'pin'
 * (applet/data_objects.ts: 5FC109, where ykman's `--protect` keeps the management key,
 * fingerprints, facial image, iris, pairing code) are written by PUT DATA, which needs the
 * management key but not the PIN: the vault must seal while locked. So they are sealed to the
 * user wrap key's public point (wrap_key_agreement.ts), like the per-key auths
 * (key_auth_box.ts), and only the TPM can open them, with K_user, i.e. after a correct VERIFY.
 * Each write gets a fresh ephemeral key and nonce; AES-256-GCM authenticates the whole box.
 *
 *   box   = 01 (format) || E (65: 04 || X || Y) || nonce (12) || ciphertext (= object length) || GCM tag (16)
 *   Z     = X coordinate of e * W = w * E            (the TPM: ECDH_ZGen with the wrap key)
 *   key   = HKDF-SHA256(ikm Z, salt E, info "tpmvsc/object" 00 || object tag (3 bytes, big-endian))
 *   AAD   = 01 || object tag (3 bytes)
 *
 * The tag in the key and in the AAD binds a box to its object: a box copied under another
 * object's tag in the card file does not open. Nothing in the box helps anyone without the TPM
 * and K_user: Z never leaves this process, and the ephemeral scalar e is dropped at once.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { agreeWithWrapKey, ephemeralCoordinates, POINT_BYTES } from './wrap_key_agreement.js';
import { VaultError } from './vault_error.js';

const FORMAT = 0x01;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const HEADER_BYTES = 1 + POINT_BYTES + NONCE_BYTES;
/** The largest object tag (SP 800-73-4 tags are at most 3 bytes). */
const MAX_OBJECT_TAG = 0xffffff;

function tagBytes(objectTag: number): Uint8Array {
  if (!Number.isInteger(objectTag) || objectTag <= 0 || objectTag > MAX_OBJECT_TAG) {
    throw new VaultError('BAD_INPUT', 'a data object tag is 1 to 3 bytes');
  }
  return Uint8Array.of(objectTag >>> 16, (objectTag >>> 8) & 0xff, objectTag & 0xff);
}

function boxKey(z: Uint8Array, ephemeralPoint: Uint8Array, tag: Uint8Array): Buffer {
  const info = Buffer.concat([Buffer.from('tpmvsc/object\0'), tag]);
  return Buffer.from(hkdfSync('sha256', z, ephemeralPoint, info, 32));
}

/** Seals `value` (the object as GET DATA answers it, inside 53) for object `objectTag`. */
export function sealObjectBox(wrapKeyPoint: Uint8Array, objectTag: number, value: Uint8Array): Uint8Array {
  const tag = tagBytes(objectTag);
  const { ephemeralPoint, z } = agreeWithWrapKey(wrapKeyPoint);
  const key = boxKey(z, ephemeralPoint, tag);
  z.fill(0);
  const nonce = randomBytes(NONCE_BYTES);
  try {
    const cipher = createCipheriv('aes-256-gcm', key, nonce);
    cipher.setAAD(Uint8Array.of(FORMAT, ...tag));
    const ciphertext = Buffer.concat([cipher.update(value), cipher.final()]);
    return new Uint8Array(Buffer.concat([Uint8Array.of(FORMAT), ephemeralPoint, nonce, ciphertext, cipher.getAuthTag()]));
  } finally {
    key.fill(0);
  }
}

/** The ephemeral point E of a box, for the TPM's ECDH_ZGen. */
export function objectBoxEphemeralPoint(box: Uint8Array): { x: Uint8Array; y: Uint8Array } {
  if (box.length < HEADER_BYTES + TAG_BYTES || box[0] !== FORMAT) throw new VaultError('BAD_STATE', 'sealed data object is malformed');
  return ephemeralCoordinates(box.subarray(1, 1 + POINT_BYTES), 'sealed data object');
}

/** Opens a box with Z, the X coordinate the TPM returned; a box altered in any byte (or another object's) does not open. */
export function openObjectBox(box: Uint8Array, objectTag: number, z: Uint8Array): Uint8Array {
  objectBoxEphemeralPoint(box);
  const tag = tagBytes(objectTag);
  const ephemeralPoint = box.subarray(1, 1 + POINT_BYTES);
  const nonce = box.subarray(1 + POINT_BYTES, HEADER_BYTES);
  const ciphertext = box.subarray(HEADER_BYTES, box.length - TAG_BYTES);
  const key = boxKey(z, ephemeralPoint, tag);
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, nonce);
    decipher.setAAD(Uint8Array.of(FORMAT, ...tag));
    decipher.setAuthTag(box.subarray(box.length - TAG_BYTES));
    return new Uint8Array(Buffer.concat([decipher.update(ciphertext), decipher.final()]));
  } catch (e) {
    throw new VaultError('BAD_STATE', 'sealed data object does not open (altered, or sealed for another object or card)', { cause: e });
  } finally {
    key.fill(0);
  }
}
