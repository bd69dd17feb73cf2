/** The card's view (applet PublicKey) of a TPM object's public area. */
import type { KeyAlgorithm, PublicKey } from '../applet/key_vault.js';
import { TPM_ALG, type EccPublic, type RsaPublic, type TpmPublic } from '../tpm/index.js';
import { CURVES, RSA_MODULUS_BYTES } from './key_templates.js';
import { VaultError } from './vault_error.js';

/** The last `length` bytes of `bytes`, or `bytes` with leading zeros up to `length`. */
export function leftPad(bytes: Uint8Array, length: number): Uint8Array {
  if (bytes.length >= length) return bytes.slice(bytes.length - length);
  const out = new Uint8Array(length);
  out.set(bytes, length - bytes.length);
  return out;
}

/** Big-endian public exponent without leading zeros. */
function exponentBytes(exponent: number): Uint8Array {
  const value = exponent === 0 ? 65537 : exponent;
  const bytes = [(value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
  while (bytes.length > 1 && bytes[0] === 0) bytes.shift();
  return Uint8Array.from(bytes);
}

export function publicKeyOf(algorithm: KeyAlgorithm, area: TpmPublic): PublicKey {
  if (algorithm === 'rsa2048') {
    if (area.type !== TPM_ALG.RSA) throw new VaultError('BAD_STATE', 'TPM object is not an RSA key');
    const rsa = area as RsaPublic;
    return { algorithm, modulus: leftPad(rsa.unique, RSA_MODULUS_BYTES), publicExponent: exponentBytes(rsa.exponent) };
  }
  if (area.type !== TPM_ALG.ECC) throw new VaultError('BAD_STATE', 'TPM object is not an ECC key');
  const ecc = area as EccPublic;
  const size = CURVES[algorithm].size;
  const point = new Uint8Array(1 + 2 * size);
  point[0] = 0x04;
  point.set(leftPad(ecc.unique.x, size), 1);
  point.set(leftPad(ecc.unique.y, size), 1 + size);
  return { algorithm, point };
}
