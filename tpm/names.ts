/**
 * TPM entity names (TCG TPM 2.0 Part 1, 16 Names):
 *   object:    nameAlg u16 || H_nameAlg(marshalled TPMT_PUBLIC)
 *   NV index:  nameAlg u16 || H_nameAlg(marshalled TPMS_NV_PUBLIC)
 *   permanent handles, sessions, PCRs: the 4-byte handle itself
 */
import { createHash } from 'node:crypto';
import { hashName, marshalNvPublic, marshalPublic } from './structures.js';
import type { NvPublic, TpmPublic } from './types.js';

function algName(nameAlg: number, marshalled: Uint8Array): Uint8Array {
  const digest = createHash(hashName(nameAlg)).update(marshalled).digest();
  const out = Buffer.allocUnsafe(2 + digest.length);
  out.writeUInt16BE(nameAlg, 0);
  digest.copy(out, 2);
  return out;
}

export function objectName(p: TpmPublic): Uint8Array {
  return algName(p.nameAlg, marshalPublic(p));
}

export function nvName(p: NvPublic): Uint8Array {
  return algName(p.nameAlg, marshalNvPublic(p));
}

export function handleName(handle: number): Uint8Array {
  const out = Buffer.allocUnsafe(4);
  out.writeUInt32BE(handle >>> 0, 0);
  return out;
}
