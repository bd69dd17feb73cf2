/**
 * Policy digests computed in software (TPM 2.0 Part 3, the "policyDigest update" of each
 * policy command), so an object's authPolicy can be set without a trial session.
 * Every update is  digest' = H(digest || commandCode || command-specific data).
 */
import { createHash } from 'node:crypto';
import { TPM_CC } from './constants.js';
import { TpmProtocolError } from './errors.js';
import { hashName, hashSize } from './structures.js';
import type { HashAlg } from './types.js';

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

/** The starting digest of a policy session with hash `hashAlg`: all zero bytes. */
export function emptyPolicyDigestFor(hashAlg: HashAlg): Uint8Array {
  return new Uint8Array(hashSize(hashAlg));
}

/**
 * PolicySecret (no expiration, policyRef empty by default), two updates:
 *   d1 = H(digest || TPM_CC_PolicySecret || authName);  d' = H(d1 || policyRef)
 * A hierarchy's name is its handle (4 bytes).
 */
export function policySecretDigest(hashAlg: HashAlg, digest: Uint8Array, authName: Uint8Array, policyRef: Uint8Array = new Uint8Array(0)): Uint8Array {
  const name = hashName(hashAlg);
  const d1 = createHash(name).update(digest).update(u32(TPM_CC.PolicySecret)).update(authName).digest();
  return new Uint8Array(createHash(name).update(d1).update(policyRef).digest());
}

/** PolicyOR:  H(0...0 || TPM_CC_PolicyOR || branch1 || ... || branchN), 2..8 branches of the hash's size. */
export function policyOrDigest(hashAlg: HashAlg, branches: readonly Uint8Array[]): Uint8Array {
  const size = hashSize(hashAlg);
  if (branches.length < 2 || branches.length > 8 || branches.some((b) => b.length !== size)) {
    throw new TpmProtocolError('BAD_INPUT', `PolicyOR needs 2 to 8 digests of ${size} bytes`);
  }
  const h = createHash(hashName(hashAlg)).update(Buffer.alloc(size)).update(u32(TPM_CC.PolicyOR));
  for (const branch of branches) h.update(branch);
  return new Uint8Array(h.digest());
}
