/**
 * Object templates (TPMT_PUBLIC with empty unique) for the keys tpmvsc creates.
 */
import { TPM_ALG, TPM_ECC, TPMA_OBJECT as A } from './constants.js';
import type { EccPublic, HashAlg, KeyedHashPublic, RsaPublic } from './types.js';

const EMPTY = new Uint8Array(0);

export interface KeyTemplateOptions {
  /** Name algorithm. Default SHA-256. */
  nameAlg?: HashAlg;
  /** Allow use with the authValue (userWithAuth). Default true. */
  userWithAuth?: boolean;
  /** Exempt from dictionary-attack counting. Default false: a wrong auth counts. */
  noDA?: boolean;
  /** Policy digest (e.g. from a trial session). Default empty. */
  authPolicy?: Uint8Array;
  /** For keys to import: fixedTPM/fixedParent and sensitiveDataOrigin must be clear. Default false. */
  imported?: boolean;
}

function attributes(o: KeyTemplateOptions, usage: number): number {
  let a = usage;
  if (!o.imported) a |= A.fixedTPM | A.fixedParent | A.sensitiveDataOrigin;
  if (o.userWithAuth ?? true) a |= A.userWithAuth;
  if (o.noDA) a |= A.noDA;
  return a >>> 0;
}

/**
 * The TCG "storage root key" template, ECC P-256 (TCG EK/SRK profile): restricted decrypt key with
 * AES-128-CFB, userWithAuth, noDA, empty auth. Deterministic from the owner seed: same key every
 * CreatePrimary until the owner hierarchy is cleared.
 */
export function srkEccTemplate(): EccPublic {
  return {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: (A.fixedTPM | A.fixedParent | A.sensitiveDataOrigin | A.userWithAuth | A.noDA | A.restricted | A.decrypt) >>> 0,
    authPolicy: EMPTY,
    symmetric: { algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB },
    scheme: { scheme: TPM_ALG.NULL },
    curveId: TPM_ECC.NIST_P256,
    kdf: { scheme: TPM_ALG.NULL },
    unique: { x: EMPTY, y: EMPTY },
  };
}

/** Storage (parent) key template, RSA-2048 variant of the SRK. */
export function srkRsaTemplate(): RsaPublic {
  return {
    type: TPM_ALG.RSA,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: (A.fixedTPM | A.fixedParent | A.sensitiveDataOrigin | A.userWithAuth | A.noDA | A.restricted | A.decrypt) >>> 0,
    authPolicy: EMPTY,
    symmetric: { algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB },
    scheme: { scheme: TPM_ALG.NULL },
    keyBits: 2048,
    exponent: 0,
    unique: EMPTY,
  };
}

/**
 * ECC key for ECDSA signing and/or ECDH (unrestricted sign|decrypt, scheme NULL so the caller picks
 * the scheme and hash per operation). curveId: TPM_ECC.NIST_P256 or NIST_P384.
 */
export function eccKeyTemplate(curveId: number, o: KeyTemplateOptions & { sign?: boolean; decrypt?: boolean } = {}): EccPublic {
  const usage = ((o.sign ?? true) ? A.sign : 0) | ((o.decrypt ?? true) ? A.decrypt : 0);
  return {
    type: TPM_ALG.ECC,
    nameAlg: o.nameAlg ?? TPM_ALG.SHA256,
    objectAttributes: attributes(o, usage),
    authPolicy: o.authPolicy ?? EMPTY,
    symmetric: { algorithm: TPM_ALG.NULL },
    scheme: { scheme: TPM_ALG.NULL },
    curveId,
    kdf: { scheme: TPM_ALG.NULL },
    unique: { x: EMPTY, y: EMPTY },
  };
}

/**
 * RSA key for signing and/or decryption (scheme NULL: RSASSA/RSAPSS/raw/OAEP chosen per operation).
 * exponent 0 = 65537.
 */
export function rsaKeyTemplate(keyBits: 2048 | 3072, o: KeyTemplateOptions & { sign?: boolean; decrypt?: boolean; exponent?: number } = {}): RsaPublic {
  const usage = ((o.sign ?? true) ? A.sign : 0) | ((o.decrypt ?? true) ? A.decrypt : 0);
  return {
    type: TPM_ALG.RSA,
    nameAlg: o.nameAlg ?? TPM_ALG.SHA256,
    objectAttributes: attributes(o, usage),
    authPolicy: o.authPolicy ?? EMPTY,
    symmetric: { algorithm: TPM_ALG.NULL },
    scheme: { scheme: TPM_ALG.NULL },
    keyBits,
    exponent: o.exponent === 65537 ? 0 : (o.exponent ?? 0),
    unique: EMPTY,
  };
}

/**
 * Sealed data object (KEYEDHASH, scheme NULL, no sign/decrypt). The data goes in
 * SensitiveCreate.data when calling create(); sensitiveDataOrigin must be clear.
 */
export function sealedDataTemplate(o: Omit<KeyTemplateOptions, 'imported'> = {}): KeyedHashPublic {
  let a = A.fixedTPM | A.fixedParent;
  if (o.userWithAuth ?? true) a |= A.userWithAuth;
  if (o.noDA) a |= A.noDA;
  return {
    type: TPM_ALG.KEYEDHASH,
    nameAlg: o.nameAlg ?? TPM_ALG.SHA256,
    objectAttributes: a >>> 0,
    authPolicy: o.authPolicy ?? EMPTY,
    scheme: { scheme: TPM_ALG.NULL },
    unique: EMPTY,
  };
}

/** Restricted signing key (attestation key, AK), ECC P-256 ECDSA-SHA256. */
export function attestationKeyTemplate(o: Omit<KeyTemplateOptions, 'imported'> = {}): EccPublic {
  return {
    ...eccKeyTemplate(TPM_ECC.NIST_P256, { ...o, sign: true, decrypt: false }),
    objectAttributes: (attributes(o, A.sign) | A.restricted) >>> 0,
    scheme: { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 },
  };
}

/**
 * Endorsement-key-style template (TCG EK profile shape): restricted decrypt, adminWithPolicy,
 * no userWithAuth, AES-128-CFB; `authPolicy` is PolicySecret(TPM_RH_ENDORSEMENT) — compute it
 * with a trial session. ECC P-256 with zero-filled 32-byte unique coordinates.
 */
export function endorsementKeyEccTemplate(authPolicy: Uint8Array): EccPublic {
  return {
    ...srkEccTemplate(),
    objectAttributes: (A.fixedTPM | A.fixedParent | A.sensitiveDataOrigin | A.adminWithPolicy | A.restricted | A.decrypt) >>> 0,
    authPolicy,
    unique: { x: new Uint8Array(32), y: new Uint8Array(32) },
  };
}
