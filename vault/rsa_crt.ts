/**
 * PIV IMPORT KEY hands over an RSA key as its CRT parts (p, q, dP, dQ, qInv) without
 * the modulus or the public exponent. The TPM needs n and e in the public area and
 * one prime in the sensitive area, so both are recomputed here.
 */
import { VaultError } from './vault_error.js';

export function bytesToBigInt(bytes: Uint8Array): bigint {
  let value = 0n;
  for (const byte of bytes) value = (value << 8n) | BigInt(byte);
  return value;
}

export function bigIntToBytes(value: bigint, length: number): Uint8Array {
  const out = new Uint8Array(length);
  let rest = value;
  for (let i = length - 1; i >= 0; i--) {
    out[i] = Number(rest & 0xffn);
    rest >>= 8n;
  }
  if (rest !== 0n) throw new RangeError('value does not fit');
  return out;
}

function modInverse(a: bigint, m: bigint): bigint | undefined {
  let [oldR, r] = [((a % m) + m) % m, m];
  let [oldS, s] = [1n, 0n];
  while (r !== 0n) {
    const quotient = oldR / r;
    [oldR, r] = [r, oldR - quotient * r];
    [oldS, s] = [s, oldS - quotient * s];
  }
  if (oldR !== 1n) return undefined;
  return ((oldS % m) + m) % m;
}

function gcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

export interface RsaPublicParts {
  modulus: Uint8Array;
  /** Public exponent; TPMs accept exponents that fit in 32 bits. */
  exponent: number;
}

const COMMON_EXPONENTS = [65537n, 3n, 17n];

/**
 * n = p * q; e is the exponent with e * dP = 1 mod (p-1) and e * dQ = 1 mod (q-1).
 * The usual exponents are tried first; otherwise e is rebuilt from both congruences
 * (Chinese remainder over p-1 and q-1) and must fit in 32 bits.
 */
export function rsaPublicFromCrt(parts: { p: Uint8Array; q: Uint8Array; dp: Uint8Array; dq: Uint8Array; qinv: Uint8Array }, modulusBytes: number): RsaPublicParts {
  const p = bytesToBigInt(parts.p);
  const q = bytesToBigInt(parts.q);
  const dp = bytesToBigInt(parts.dp);
  const dq = bytesToBigInt(parts.dq);
  const qinv = bytesToBigInt(parts.qinv);
  if (p < 3n || q < 3n || dp === 0n || dq === 0n) throw new VaultError('BAD_KEY', 'RSA CRT component is zero or too small');
  const n = p * q;
  if (n >> BigInt(modulusBytes * 8 - 1) !== 1n) throw new VaultError('BAD_KEY', `RSA modulus is not ${modulusBytes * 8} bits`);
  if ((qinv * q) % p !== 1n) throw new VaultError('BAD_KEY', 'RSA CRT coefficient does not match the primes');

  const consistent = (e: bigint): boolean => (e * dp) % (p - 1n) === 1n && (e * dq) % (q - 1n) === 1n;
  let exponent = COMMON_EXPONENTS.find(consistent);
  if (exponent === undefined) {
    const eModP = modInverse(dp, p - 1n);
    const eModQ = modInverse(dq, q - 1n);
    if (eModP === undefined || eModQ === undefined) throw new VaultError('BAD_KEY', 'RSA CRT exponents are not invertible');
    // Combine e = eModP (mod p-1) and e = eModQ (mod q-1); the moduli share factors (both even).
    const g = gcd(p - 1n, q - 1n);
    if ((eModQ - eModP) % g !== 0n) throw new VaultError('BAD_KEY', 'RSA CRT exponents are inconsistent');
    const m1 = (p - 1n) / g;
    const m2 = q - 1n;
    const inverse = modInverse(m1 % (m2 / g), m2 / g);
    if (inverse === undefined) throw new VaultError('BAD_KEY', 'RSA CRT exponents are inconsistent');
    const lcm = (p - 1n) * m2 / g;
    const t = ((((eModQ - eModP) / g) * inverse) % (m2 / g) + m2 / g) % (m2 / g);
    exponent = (eModP + (p - 1n) * t) % lcm;
    if (!consistent(exponent)) throw new VaultError('BAD_KEY', 'RSA CRT exponents are inconsistent');
  }
  if (exponent > 0xffffffffn || exponent < 3n) throw new VaultError('BAD_KEY', 'RSA public exponent does not fit in 32 bits');
  return { modulus: bigIntToBytes(n, modulusBytes), exponent: Number(exponent) };
}
