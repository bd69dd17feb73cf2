/**
 * Policy digests computed in software (TPM 2.0 Part 3, the "policyDigest update" of each
 * policy command), so an object's authPolicy can be set without a trial session.
 * Every update is  digest' = H(digest || commandCode || command-specific data).
 */
import { createHash } from 'node:crypto';
import { TPM_CC } from './constants.js';

const u16 = (n: number): Buffer => Buffer.of((n >>> 8) & 0xff, n & 0xff);
const u32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
};

/** The starting digest of a SHA-256 policy session: 32 zero bytes. */
export function emptyPolicyDigest(): Uint8Array {
  return new Uint8Array(32);
}

/** PolicyNV:  H(digest || TPM_CC_PolicyNV || H(operandB || offset u16 || operation u16) || nvIndex name). */
export function policyNvDigest(digest: Uint8Array, nvName: Uint8Array, operandB: Uint8Array, offset: number, operation: number): Uint8Array {
  const args = createHash('sha256').update(operandB).update(u16(offset)).update(u16(operation)).digest();
  return new Uint8Array(createHash('sha256').update(digest).update(u32(TPM_CC.PolicyNV)).update(args).update(nvName).digest());
}

/** PolicyAuthValue:  H(digest || TPM_CC_PolicyAuthValue). */
export function policyAuthValueDigest(digest: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update(digest).update(u32(TPM_CC.PolicyAuthValue)).digest());
}

/** PolicyCommandCode:  H(digest || TPM_CC_PolicyCommandCode || code). */
export function policyCommandCodeDigest(digest: Uint8Array, commandCode: number): Uint8Array {
  return new Uint8Array(createHash('sha256').update(digest).update(u32(TPM_CC.PolicyCommandCode)).update(u32(commandCode)).digest());
}
