/**
 * Conversions between TPM public keys / signatures and node:crypto objects and DER.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import { TPM_ALG, TPM_ECC } from './constants.js';
import { TpmProtocolError } from './errors.js';
import type { EccPoint, Signature, TpmPublic } from './types.js';

const b64u = (b: Uint8Array): string => Buffer.from(b).toString('base64url');

/** JWK curve name and coordinate size of a TPM curve. */
export function curveInfo(curveId: number): { crv: 'P-256' | 'P-384'; size: number; nodeName: 'prime256v1' | 'secp384r1' } {
  if (curveId === TPM_ECC.NIST_P256) return { crv: 'P-256', size: 32, nodeName: 'prime256v1' };
  if (curveId === TPM_ECC.NIST_P384) return { crv: 'P-384', size: 48, nodeName: 'secp384r1' };
  throw new TpmProtocolError('UNSUPPORTED', `curve 0x${curveId.toString(16)}`);
}

/** Left-pads a big-endian integer to `size` bytes (the TPM may strip leading zeros). */
export function leftPad(b: Uint8Array, size: number): Uint8Array {
  if (b.length === size) return b;
  if (b.length > size) {
    let i = 0;
    while (i < b.length - size && b[i] === 0) i++;
    if (b.length - i > size) throw new TpmProtocolError('BAD_INPUT', `integer longer than ${size} bytes`);
    return b.subarray(i);
  }
  const out = new Uint8Array(size);
  out.set(b, size - b.length);
  return out;
}

/** 04 || X || Y. */
export function eccPointToUncompressed(p: EccPoint, curveId: number): Uint8Array {
  const { size } = curveInfo(curveId);
  return Buffer.concat([Buffer.from([4]), leftPad(p.x, size), leftPad(p.y, size)]);
}

export function rsaPublicKeyToNode(modulus: Uint8Array, exponent: number): KeyObject {
  const e = exponent === 0 ? 65537 : exponent;
  const eb = Buffer.alloc(4);
  eb.writeUInt32BE(e, 0);
  let i = 0;
  while (i < 3 && eb[i] === 0) i++;
  return createPublicKey({ key: { kty: 'RSA', n: b64u(modulus), e: b64u(eb.subarray(i)) }, format: 'jwk' });
}

export function eccPublicKeyToNode(p: EccPoint, curveId: number): KeyObject {
  const { crv, size } = curveInfo(curveId);
  return createPublicKey({ key: { kty: 'EC', crv, x: b64u(leftPad(p.x, size)), y: b64u(leftPad(p.y, size)) }, format: 'jwk' });
}

/** node:crypto public key of a TPM RSA or ECC public area. */
export function publicKeyToNode(p: TpmPublic): KeyObject {
  if (p.type === TPM_ALG.RSA) return rsaPublicKeyToNode(p.unique, p.exponent);
  if (p.type === TPM_ALG.ECC) return eccPublicKeyToNode(p.unique, p.curveId);
  throw new TpmProtocolError('BAD_INPUT', 'not an asymmetric key');
}

function derInteger(v: Uint8Array): Buffer {
  let i = 0;
  while (i < v.length - 1 && v[i] === 0) i++;
  let body = Buffer.from(v.subarray(i));
  if (body.length === 0) body = Buffer.from([0]);
  if (body[0]! & 0x80) body = Buffer.concat([Buffer.from([0]), body]);
  return Buffer.concat([Buffer.from([0x02, body.length]), body]);
}

/** ECDSA signature as DER SEQUENCE { r INTEGER, s INTEGER } (what X.509, PIV hosts and node expect). */
export function ecdsaSignatureToDer(sig: Signature): Uint8Array {
  if (sig.sigAlg !== TPM_ALG.ECDSA) throw new TpmProtocolError('BAD_INPUT', 'not an ECDSA signature');
  const body = Buffer.concat([derInteger(sig.r), derInteger(sig.s)]);
  const len = body.length < 0x80 ? Buffer.from([body.length]) : Buffer.from([0x81, body.length]);
  return Buffer.concat([Buffer.from([0x30]), len, body]);
}
