/**
 * The card's attestation identity key (AIK) and the policy that lets it certify card keys.
 *
 *   AIK            ECC P-256 restricted signing key (ECDSA-SHA256) under the card parent:
 *                  fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|noDA|restricted|sign,
 *                  empty auth. One per card (a shared AIK would link the cards); it dies with the
 *                  card parent on destroy.
 *   certify policy authPolicy of generated card keys = PolicyCommandCode(TPM_CC_Certify):
 *                  TPM2_Certify may name the key in a policy session without the key's auth
 *                  (so ATTEST works before VERIFY, as on a YubiKey); the policy allows no other
 *                  command, so it signs, decrypts or duplicates nothing.
 *
 *   policyDigest = SHA-256( 0^32 || u32 TPM_CC_PolicyCommandCode || u32 TPM_CC_Certify )
 */
import { createHash } from 'node:crypto';
import { TPM_CC, TPMA_OBJECT, attestationKeyTemplate, type EccPublic, type HashAlg, type TpmPublic } from '../tpm/index.js';

export function aikTemplate(): EccPublic {
  return attestationKeyTemplate({ noDA: true });
}

function u32(value: number): Buffer {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(value >>> 0, 0);
  return out;
}

/** authPolicy of keys that the card's AIK may certify without the key's auth. */
export const CERTIFY_POLICY_DIGEST: Uint8Array = new Uint8Array(
  createHash('sha256').update(Buffer.alloc(32)).update(u32(TPM_CC.PolicyCommandCode)).update(u32(TPM_CC.Certify)).digest(),
);

/** Attributes every AIK must have (checked by the CA and the verifier too). */
export const AIK_REQUIRED_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.restricted | TPMA_OBJECT.sign;

/** The AIK's public part. */
export interface AttestationKeyPublic {
  /** TPM2B_PUBLIC (u16 size | TPMT_PUBLIC). */
  public: Uint8Array;
  publicArea: EccPublic | TpmPublic;
  /** nameAlg || H(TPMT_PUBLIC). */
  name: Uint8Array;
}

/** TPM2_Certify's evidence over one card key. */
export interface KeyCertification {
  /** The certified key's public area (its name is the attested name). */
  keyPublic: TpmPublic;
  /** The TPMS_ATTEST bytes the AIK signed. */
  attest: Uint8Array;
  /** DER ECDSA-SHA256 signature by the AIK over `attest`. */
  signature: Uint8Array;
}

/**
 * How the EK's admin policy is satisfied. Low-range EKs (L-1, L-2): PolicySecret(TPM_RH_ENDORSEMENT)
 * in a SHA-256 session (the default when absent). High-range EKs (H-x, TCG EK profile 2.x):
 * the session hash is the EK's nameAlg and PolicySecret is followed by PolicyOR(orBranches)
 * (PolicyA = PolicySecret digest, PolicyC = PolicyAuthorizeNV digest).
 */
export interface EndorsementPolicy {
  hashAlg: HashAlg;
  orBranches?: readonly Uint8Array[];
}

/** Where the endorsement key is: a persistent handle, or a template to re-create it as a primary. */
export type EndorsementKeySource =
  | { handle: number; endorsementAuth?: Uint8Array; policy?: EndorsementPolicy }
  | { template: TpmPublic; endorsementAuth?: Uint8Array; policy?: EndorsementPolicy };
