/**
 * Key derivation functions of TPM 2.0 (TCG TPM 2.0 Part 1, 11.4.10):
 *   KDFa (SP 800-108 counter mode, HMAC):  K_i = HMAC(key, u32 i || label || 00 || contextU || contextV || u32 bits)
 *   KDFe (SP 800-56A concatenation):      K_i = H(u32 i || Z || label || 00 || partyUInfo || partyVInfo)
 * The result is the first `bits` bits of K_1 || K_2 || ...
 */
import { createHash, createHmac } from 'node:crypto';
import { hashName } from './structures.js';

function labelBytes(label: string): Buffer {
  return Buffer.from(label.endsWith('\0') ? label : `${label}\0`, 'latin1');
}

export function kdfa(hashAlg: number, key: Uint8Array, label: string, contextU: Uint8Array, contextV: Uint8Array, bits: number): Buffer {
  const name = hashName(hashAlg);
  const bytes = Math.ceil(bits / 8);
  const lab = labelBytes(label);
  const bitsBuf = Buffer.allocUnsafe(4);
  bitsBuf.writeUInt32BE(bits, 0);
  const out: Buffer[] = [];
  let have = 0;
  for (let i = 1; have < bytes; i++) {
    const counter = Buffer.allocUnsafe(4);
    counter.writeUInt32BE(i, 0);
    const k = createHmac(name, key).update(counter).update(lab).update(contextU).update(contextV).update(bitsBuf).digest();
    out.push(k);
    have += k.length;
  }
  return Buffer.concat(out).subarray(0, bytes);
}

export function kdfe(hashAlg: number, z: Uint8Array, label: string, partyU: Uint8Array, partyV: Uint8Array, bits: number): Buffer {
  const name = hashName(hashAlg);
  const bytes = Math.ceil(bits / 8);
  const lab = labelBytes(label);
  const out: Buffer[] = [];
  let have = 0;
  for (let i = 1; have < bytes; i++) {
    const counter = Buffer.allocUnsafe(4);
    counter.writeUInt32BE(i, 0);
    const k = createHash(name).update(counter).update(z).update(lab).update(partyU).update(partyV).digest();
    out.push(k);
    have += k.length;
  }
  return Buffer.concat(out).subarray(0, bytes);
}
