/**
 * Plain TypeScript shapes of the TPM 2.0 structures tpmvsc uses. Marshalling lives in
 * structures.ts; the byte layouts are drawn there.
 */

/** Hash algorithms the library supports (TPM_ALG_ID values). */
export type HashAlg = 0x0004 | 0x000b | 0x000c | 0x000d; // SHA1, SHA256, SHA384, SHA512

/** A TPM entity a command refers to by handle, with the name used in cpHash. */
export interface TpmEntity {
  handle: number;
  /** TPM2B name contents: nameAlg || digest for objects and NV indices; the 4-byte handle for permanent handles. */
  name: Uint8Array;
}

/** TPMT_SYM_DEF_OBJECT: AES-128/192/256-CFB for storage keys, or NULL. */
export type SymDef = { algorithm: 0x0010 } | { algorithm: 0x0006; keyBits: 128 | 192 | 256; mode: 0x0043 };

/** Signing / encryption scheme of a key or an operation (TPMT_*_SCHEME). NULL, RSAES carry no hash. */
export type Scheme =
  | { scheme: 0x0010 } // NULL
  | { scheme: 0x0015 } // RSAES (PKCS#1 v1.5 encryption)
  | { scheme: 0x0014 | 0x0016 | 0x0017 | 0x0018 | 0x0019 | 0x0005; hash: HashAlg }; // RSASSA, RSAPSS, OAEP, ECDSA, ECDH, HMAC

export interface PublicCommon {
  nameAlg: HashAlg;
  /** TPMA_OBJECT bits (see TPMA_OBJECT in constants.ts). */
  objectAttributes: number;
  /** Policy digest; empty when none. */
  authPolicy: Uint8Array;
}

/** TPMT_PUBLIC of an RSA key. */
export interface RsaPublic extends PublicCommon {
  type: 0x0001;
  symmetric: SymDef;
  scheme: Scheme;
  keyBits: 1024 | 2048 | 3072 | 4096;
  /** 0 means the default 65537. */
  exponent: number;
  /** The modulus (empty in a template). */
  unique: Uint8Array;
}

/** TPMT_PUBLIC of an ECC key. */
export interface EccPublic extends PublicCommon {
  type: 0x0023;
  symmetric: SymDef;
  scheme: Scheme;
  curveId: number;
  /** KDF scheme: NULL in practice. */
  kdf: Scheme;
  /** The public point (empty coordinates in a template). */
  unique: { x: Uint8Array; y: Uint8Array };
}

/** TPMT_PUBLIC of a keyed-hash object: a sealed data blob (scheme NULL) or an HMAC key. */
export interface KeyedHashPublic extends PublicCommon {
  type: 0x0008;
  scheme: Scheme;
  /** H(seedValue || data) once created; empty in a template. */
  unique: Uint8Array;
}

export type TpmPublic = RsaPublic | EccPublic | KeyedHashPublic;

/** TPMS_SENSITIVE_CREATE: the auth of a new object and, for sealed objects, its data. */
export interface SensitiveCreate {
  userAuth?: Uint8Array;
  data?: Uint8Array;
}

/** TPMT_SIGNATURE. */
export type Signature =
  | { sigAlg: 0x0018; hash: HashAlg; r: Uint8Array; s: Uint8Array } // ECDSA
  | { sigAlg: 0x0014 | 0x0016; hash: HashAlg; sig: Uint8Array } // RSASSA, RSAPSS
  | { sigAlg: 0x0005; hash: HashAlg; digest: Uint8Array } // HMAC
  | { sigAlg: 0x0010 };

/** TPMS_ECC_POINT. */
export interface EccPoint {
  x: Uint8Array;
  y: Uint8Array;
}

/** TPMS_NV_PUBLIC. */
export interface NvPublic {
  nvIndex: number;
  nameAlg: HashAlg;
  /** TPMA_NV bits. */
  attributes: number;
  authPolicy: Uint8Array;
  dataSize: number;
}

/** TPMT_TK_*: tickets (creation, verified, auth, hashcheck). */
export interface Ticket {
  tag: number;
  hierarchy: number;
  digest: Uint8Array;
}

/** TPMS_CONTEXT: a saved object or session context. */
export interface SavedContext {
  sequence: bigint;
  savedHandle: number;
  hierarchy: number;
  contextBlob: Uint8Array;
}

/** TPMS_ATTEST (parsed), with the raw bytes that were signed. */
export interface Attest {
  magic: number;
  type: number;
  qualifiedSigner: Uint8Array;
  extraData: Uint8Array;
  clock: bigint;
  resetCount: number;
  restartCount: number;
  safe: boolean;
  firmwareVersion: bigint;
  /** For ATTEST_CERTIFY: the certified object's name and qualified name. */
  certified?: { name: Uint8Array; qualifiedName: Uint8Array };
  /** The raw TPMS_ATTEST bytes (what the signature covers). */
  raw: Uint8Array;
}

/** A key pair or sealed object as the TPM returns it from Create: keep both to Load later. */
export interface KeyBlob {
  /** TPM2B_PUBLIC including its u16 size prefix (the tpm2-tools `-u` file format). */
  public: Uint8Array;
  /** TPM2B_PRIVATE including its u16 size prefix (the tpm2-tools `-r` file format). */
  private: Uint8Array;
  /** The parsed public area. */
  publicArea: TpmPublic;
  /** The object's name (nameAlg || H(TPMT_PUBLIC)). */
  name: Uint8Array;
}

/** A loaded object: its transient handle, name and public area. Flush it with Tpm.flushContext. */
export interface LoadedObject extends TpmEntity {
  publicArea: TpmPublic;
}

/** TPMA_PERMANENT (GetCapability TPM_PT_PERMANENT): which hierarchy passwords are set, lockout state. */
export interface PermanentAttributes {
  ownerAuthSet: boolean;
  endorsementAuthSet: boolean;
  lockoutAuthSet: boolean;
  disableClear: boolean;
  inLockout: boolean;
}

/** Dictionary-attack state read from TPM_PT_* properties. Times are in seconds. */
export interface DictionaryAttackInfo {
  inLockout: boolean;
  lockoutCounter: number;
  maxAuthFail: number;
  lockoutInterval: number;
  lockoutRecovery: number;
  /**
   * Best estimate of seconds until an authorization can be tried again: 0 when not locked out;
   * else lockoutInterval (one failure is forgiven per interval).
   */
  recoverySeconds: number;
}

/** An external private key to import (PIV IMPORT KEY). */
export type ExternalPrivateKey =
  | { type: 'rsa'; /** big-endian modulus */ n: Uint8Array; /** public exponent as a number */ e: number; /** one prime */ p: Uint8Array }
  | { type: 'ecc'; curveId: number; /** big-endian private scalar */ d: Uint8Array; x: Uint8Array; y: Uint8Array };
