/**
 * Public keys as GENERATE ASYMMETRIC KEY PAIR and GET METADATA return them
 * (SP 800-73-4 Part 2 Table 11):
 *   RSA:  81 L modulus   82 L public exponent
 *   EC:   86 L 04 || X || Y
 * GENERATE wraps them in 7F49; libykpiv reads EC at fixed offsets (7F 49 43 86 41 04 ...),
 * so each TLV uses the shortest length form.
 */
import type { PublicKey } from './key_vault.js';
import { concatBytes, tlv } from './tlv.js';

export function publicKeyTlvs(key: PublicKey): Uint8Array {
  return key.algorithm === 'rsa2048'
    ? concatBytes(tlv(0x81, key.modulus), tlv(0x82, key.publicExponent))
    : tlv(0x86, key.point);
}

export function publicKeyTemplate(key: PublicKey): Uint8Array {
  return tlv(0x7f49, publicKeyTlvs(key));
}
