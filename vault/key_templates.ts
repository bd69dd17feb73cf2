/**
 * TPMT_PUBLIC templates of every object the vault creates. All use SHA-256 as nameAlg.
 *
 *   card parent      ECC P-256 storage key: restricted|decrypt, AES-128-CFB, noDA, empty auth
 *   generated keys   fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|noDA|sign|decrypt, scheme NULL,
 *                    authPolicy PolicyCommandCode(Certify) (attestation_key.ts: certify only)
 *   imported keys    the same without fixedTPM|fixedParent|sensitiveDataOrigin (TPM2_Import refuses
 *                    them); no authPolicy, so TPM2_Duplicate can never run on them: still not exportable
 *   sealed secrets   keyedHash, scheme NULL, fixedTPM|fixedParent|userWithAuth, noDA unless DA-protected
 *   PIN/PUK objects  keyedHash, scheme NULL, fixedTPM|fixedParent, DA-protected, NO userWithAuth:
 *                    only the generation policy (pin_policy.ts) opens them
 *
 * sign|decrypt with scheme NULL lets one key serve raw RSA (RSA_Decrypt with scheme NULL),
 * ECDSA (scheme given per Sign) and ECDH (ECDH_ZGen needs decrypt).
 */
import { TPM_ALG, TPM_ECC, TPMA_OBJECT, type EccPublic, type KeyedHashPublic, type RsaPublic, type TpmPublic } from '../tpm/index.js';
import type { KeyAlgorithm } from '../applet/key_vault.js';
import { CERTIFY_POLICY_DIGEST } from './attestation_key.js';

const NO_SYMMETRIC = { algorithm: TPM_ALG.NULL } as const;
const NULL_SCHEME = { scheme: TPM_ALG.NULL } as const;

const KEY_USAGE = TPMA_OBJECT.userWithAuth | TPMA_OBJECT.noDA | TPMA_OBJECT.sign | TPMA_OBJECT.decrypt;
const BOUND_TO_TPM = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin;

export interface CurveInfo {
  curveId: number;
  /** Field and scalar size in bytes. */
  size: number;
  /** The curve's own hash: the scheme hash used for ECDSA. */
  hash: typeof TPM_ALG.SHA256 | typeof TPM_ALG.SHA384;
  nodeName: 'prime256v1' | 'secp384r1';
}

export const CURVES: Record<'eccp256' | 'eccp384', CurveInfo> = {
  eccp256: { curveId: TPM_ECC.NIST_P256, size: 32, hash: TPM_ALG.SHA256, nodeName: 'prime256v1' },
  eccp384: { curveId: TPM_ECC.NIST_P384, size: 48, hash: TPM_ALG.SHA384, nodeName: 'secp384r1' },
};

export const RSA_MODULUS_BYTES = 256;

export function cardParentTemplate(): EccPublic {
  return {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes:
      BOUND_TO_TPM | TPMA_OBJECT.userWithAuth | TPMA_OBJECT.noDA | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt,
    authPolicy: new Uint8Array(0),
    symmetric: { algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB },
    scheme: NULL_SCHEME,
    curveId: TPM_ECC.NIST_P256,
    kdf: NULL_SCHEME,
    unique: { x: new Uint8Array(0), y: new Uint8Array(0) },
  };
}

/** Template of a card key; `imported` drops the attributes TPM2_Import refuses. */
export function keyTemplate(algorithm: KeyAlgorithm, imported: boolean, publicParts?: { modulus?: Uint8Array; exponent?: number; x?: Uint8Array; y?: Uint8Array }): TpmPublic {
  const objectAttributes = KEY_USAGE | (imported ? 0 : BOUND_TO_TPM);
  const authPolicy = imported ? new Uint8Array(0) : CERTIFY_POLICY_DIGEST;
  if (algorithm === 'rsa2048') {
    const rsa: RsaPublic = {
      type: TPM_ALG.RSA,
      nameAlg: TPM_ALG.SHA256,
      objectAttributes,
      authPolicy,
      symmetric: NO_SYMMETRIC,
      scheme: NULL_SCHEME,
      keyBits: 2048,
      // 65537 is written as 0 (the TPM's default) so the template matches the generated key's.
      exponent: publicParts?.exponent === undefined || publicParts.exponent === 65537 ? 0 : publicParts.exponent,
      unique: publicParts?.modulus ?? new Uint8Array(0),
    };
    return rsa;
  }
  const ecc: EccPublic = {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes,
    authPolicy,
    symmetric: NO_SYMMETRIC,
    scheme: NULL_SCHEME,
    curveId: CURVES[algorithm].curveId,
    kdf: NULL_SCHEME,
    unique: { x: publicParts?.x ?? new Uint8Array(0), y: publicParts?.y ?? new Uint8Array(0) },
  };
  return ecc;
}

/** Sealed data object. `daProtected`: wrong auths count towards the TPM's dictionary-attack lockout. */
export function sealedTemplate(daProtected: boolean): KeyedHashPublic {
  return {
    type: TPM_ALG.KEYEDHASH,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes:
      TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.userWithAuth | (daProtected ? 0 : TPMA_OBJECT.noDA),
    authPolicy: new Uint8Array(0),
    scheme: NULL_SCHEME,
    unique: new Uint8Array(0),
  };
}

/** PIN or PUK object (DA-protected), or with noDA the management-key object: sealed data usable only through `authPolicy` (pin_generation.ts). */
export function policySealedTemplate(authPolicy: Uint8Array, noDA = false): KeyedHashPublic {
  return {
    type: TPM_ALG.KEYEDHASH,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | (noDA ? TPMA_OBJECT.noDA : 0),
    authPolicy,
    scheme: NULL_SCHEME,
    unique: new Uint8Array(0),
  };
}

/** The user wrap key: an ECDH key whose auth is K_user; per-key auths of 'pin' keys are boxed to it. */
export function wrapKeyTemplate(): EccPublic {
  return {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: BOUND_TO_TPM | TPMA_OBJECT.userWithAuth | TPMA_OBJECT.noDA | TPMA_OBJECT.decrypt,
    authPolicy: new Uint8Array(0),
    symmetric: NO_SYMMETRIC,
    scheme: { scheme: TPM_ALG.ECDH, hash: TPM_ALG.SHA256 },
    curveId: TPM_ECC.NIST_P256,
    kdf: NULL_SCHEME,
    unique: { x: new Uint8Array(0), y: new Uint8Array(0) },
  };
}
