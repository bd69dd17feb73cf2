/**
 * Marshalling of the TPM 2.0 structures tpmvsc uses (TCG TPM 2.0 Part 2). Each layout is drawn
 * above its functions; `|` separates fields, TPM2B = u16 size | bytes.
 */
import { TPM_ALG, TPM_ST } from './constants.js';
import { TpmProtocolError } from './errors.js';
import { Reader, Writer } from './marshal.js';
import type {
  Attest, EccPoint, HashAlg, NvPublic, SavedContext, Scheme, SensitiveCreate, Signature, SymDef, Ticket, TpmPublic,
} from './types.js';

const bad = (msg: string): never => {
  throw new TpmProtocolError('BAD_RESPONSE', msg);
};

/** Digest size of a TPM hash algorithm. */
export function hashSize(alg: number): number {
  switch (alg) {
    case TPM_ALG.SHA1: return 20;
    case TPM_ALG.SHA256: return 32;
    case TPM_ALG.SHA384: return 48;
    case TPM_ALG.SHA512: return 64;
    default: throw new TpmProtocolError('BAD_INPUT', `unsupported hash algorithm 0x${alg.toString(16)}`);
  }
}

/** node:crypto name of a TPM hash algorithm. */
export function hashName(alg: number): 'sha1' | 'sha256' | 'sha384' | 'sha512' {
  switch (alg) {
    case TPM_ALG.SHA1: return 'sha1';
    case TPM_ALG.SHA256: return 'sha256';
    case TPM_ALG.SHA384: return 'sha384';
    case TPM_ALG.SHA512: return 'sha512';
    default: throw new TpmProtocolError('BAD_INPUT', `unsupported hash algorithm 0x${alg.toString(16)}`);
  }
}

function asHashAlg(v: number): HashAlg {
  if (v === 0x0004 || v === 0x000b || v === 0x000c || v === 0x000d) return v;
  return bad(`unknown hash algorithm 0x${v.toString(16)}`);
}

/*
 * TPMT_SYM_DEF_OBJECT:  algorithm u16 | [keyBits u16 | mode u16]   (nothing more when algorithm = NULL)
 */
export function writeSymDef(w: Writer, s: SymDef): void {
  w.u16(s.algorithm);
  if (s.algorithm !== TPM_ALG.NULL) w.u16(s.keyBits).u16(s.mode);
}

export function readSymDef(r: Reader): SymDef {
  const algorithm = r.u16();
  if (algorithm === TPM_ALG.NULL) return { algorithm };
  if (algorithm !== TPM_ALG.AES) return bad(`unsupported symmetric algorithm 0x${algorithm.toString(16)}`);
  const keyBits = r.u16();
  const mode = r.u16();
  if ((keyBits !== 128 && keyBits !== 192 && keyBits !== 256) || mode !== TPM_ALG.CFB) return bad('unsupported AES parameters');
  return { algorithm, keyBits, mode };
}

/*
 * TPMT_*_SCHEME (RSA, ECC, KEYEDHASH, SIG, KDF, RSA_DECRYPT):  scheme u16 | [hashAlg u16]
 * The union member is EMPTY for NULL and RSAES (writing a hash there gives TPM_RC_SIZE).
 */
export function writeScheme(w: Writer, s: Scheme): void {
  w.u16(s.scheme);
  if ('hash' in s) w.u16(s.hash);
}

export function readScheme(r: Reader): Scheme {
  const scheme = r.u16();
  if (scheme === TPM_ALG.NULL || scheme === TPM_ALG.RSAES) return { scheme };
  switch (scheme) {
    case TPM_ALG.RSASSA: case TPM_ALG.RSAPSS: case TPM_ALG.OAEP: case TPM_ALG.ECDSA: case TPM_ALG.ECDH: case TPM_ALG.HMAC:
      return { scheme, hash: asHashAlg(r.u16()) };
    default:
      return bad(`unsupported scheme 0x${scheme.toString(16)}`);
  }
}

/*
 * TPMT_PUBLIC:
 *   type u16 | nameAlg u16 | objectAttributes u32 | authPolicy TPM2B_DIGEST | parameters | unique
 * parameters by type:
 *   RSA:       TPMS_RSA_PARMS       = symmetric TPMT_SYM_DEF_OBJECT | scheme TPMT_RSA_SCHEME | keyBits u16 | exponent u32
 *   ECC:       TPMS_ECC_PARMS       = symmetric TPMT_SYM_DEF_OBJECT | scheme TPMT_ECC_SCHEME | curveID u16 | kdf TPMT_KDF_SCHEME
 *   KEYEDHASH: TPMS_KEYEDHASH_PARMS = scheme TPMT_KEYEDHASH_SCHEME
 * unique by type:
 *   RSA: TPM2B_PUBLIC_KEY_RSA (modulus) · ECC: TPMS_ECC_POINT (TPM2B x | TPM2B y) · KEYEDHASH: TPM2B_DIGEST
 */
export function writePublic(w: Writer, p: TpmPublic): void {
  w.u16(p.type).u16(p.nameAlg).u32(p.objectAttributes).tpm2b(p.authPolicy);
  switch (p.type) {
    case TPM_ALG.RSA:
      writeSymDef(w, p.symmetric);
      writeScheme(w, p.scheme);
      w.u16(p.keyBits).u32(p.exponent).tpm2b(p.unique);
      break;
    case TPM_ALG.ECC:
      writeSymDef(w, p.symmetric);
      writeScheme(w, p.scheme);
      w.u16(p.curveId);
      writeScheme(w, p.kdf);
      w.tpm2b(p.unique.x).tpm2b(p.unique.y);
      break;
    case TPM_ALG.KEYEDHASH:
      writeScheme(w, p.scheme);
      w.tpm2b(p.unique);
      break;
  }
}

export function readPublic(r: Reader): TpmPublic {
  const type = r.u16();
  const nameAlg = asHashAlg(r.u16());
  const objectAttributes = r.u32();
  const authPolicy = r.tpm2b();
  switch (type) {
    case TPM_ALG.RSA: {
      const symmetric = readSymDef(r);
      const scheme = readScheme(r);
      const keyBits = r.u16();
      if (keyBits !== 1024 && keyBits !== 2048 && keyBits !== 3072 && keyBits !== 4096) return bad(`RSA key size ${keyBits}`);
      const exponent = r.u32();
      return { type, nameAlg, objectAttributes, authPolicy, symmetric, scheme, keyBits, exponent, unique: r.tpm2b() };
    }
    case TPM_ALG.ECC: {
      const symmetric = readSymDef(r);
      const scheme = readScheme(r);
      const curveId = r.u16();
      const kdf = readScheme(r);
      const x = r.tpm2b();
      const y = r.tpm2b();
      return { type, nameAlg, objectAttributes, authPolicy, symmetric, scheme, curveId, kdf, unique: { x, y } };
    }
    case TPM_ALG.KEYEDHASH: {
      const scheme = readScheme(r);
      return { type, nameAlg, objectAttributes, authPolicy, scheme, unique: r.tpm2b() };
    }
    default:
      return bad(`unsupported object type 0x${type.toString(16)}`);
  }
}

/** Marshalled TPMT_PUBLIC (no size prefix): what an object's name hashes. */
export function marshalPublic(p: TpmPublic): Buffer {
  const w = new Writer(512);
  writePublic(w, p);
  return w.finish();
}

/** TPM2B_PUBLIC = u16 size | TPMT_PUBLIC (the tpm2-tools `-u` file format). */
export function marshalPublic2b(p: TpmPublic): Buffer {
  const w = new Writer(512);
  w.sized((x) => writePublic(x, p));
  return w.finish();
}

/** Parses a TPM2B_PUBLIC (with its size prefix). */
export function parsePublic2b(bytes: Uint8Array): TpmPublic {
  const r = new Reader(bytes);
  const inner = r.sized();
  const p = readPublic(inner);
  inner.done('TPMT_PUBLIC');
  r.done('TPM2B_PUBLIC');
  return p;
}

/*
 * TPM2B_SENSITIVE_CREATE = u16 size | TPMS_SENSITIVE_CREATE
 * TPMS_SENSITIVE_CREATE  = userAuth TPM2B_AUTH | data TPM2B_SENSITIVE_DATA
 */
export function writeSensitiveCreate(w: Writer, s: SensitiveCreate | undefined): void {
  w.sized((x) => x.tpm2b(s?.userAuth).tpm2b(s?.data));
}

/*
 * TPMT_SENSITIVE = sensitiveType u16 | authValue TPM2B_AUTH | seedValue TPM2B_DIGEST | sensitive
 *   sensitive: RSA: TPM2B prime (one prime factor) · ECC: TPM2B private scalar · KEYEDHASH: TPM2B data
 * TPM2B_SENSITIVE = u16 size | TPMT_SENSITIVE
 */
export function marshalSensitive2b(type: number, authValue: Uint8Array, seedValue: Uint8Array, sensitive: Uint8Array): Buffer {
  const w = new Writer(512);
  w.sized((x) => x.u16(type).tpm2b(authValue).tpm2b(seedValue).tpm2b(sensitive));
  return w.finish();
}

/*
 * TPMT_SIGNATURE = sigAlg u16 | signature
 *   RSASSA / RSAPSS: hash u16 | TPM2B sig
 *   ECDSA:           hash u16 | TPM2B r | TPM2B s
 *   HMAC:            TPMT_HA = hashAlg u16 | digest (hash size bytes)
 *   NULL:            (empty)
 */
export function readSignature(r: Reader): Signature {
  const sigAlg = r.u16();
  switch (sigAlg) {
    case TPM_ALG.RSASSA: case TPM_ALG.RSAPSS:
      return { sigAlg, hash: asHashAlg(r.u16()), sig: r.tpm2b() };
    case TPM_ALG.ECDSA: {
      const hash = asHashAlg(r.u16());
      return { sigAlg, hash, r: r.tpm2b(), s: r.tpm2b() };
    }
    case TPM_ALG.HMAC: {
      const hash = asHashAlg(r.u16());
      return { sigAlg, hash, digest: r.bytes(hashSize(hash)) };
    }
    case TPM_ALG.NULL:
      return { sigAlg };
    default:
      return bad(`unsupported signature algorithm 0x${sigAlg.toString(16)}`);
  }
}

export function writeSignature(w: Writer, s: Signature): void {
  w.u16(s.sigAlg);
  switch (s.sigAlg) {
    case TPM_ALG.RSASSA: case TPM_ALG.RSAPSS: w.u16(s.hash).tpm2b(s.sig); break;
    case TPM_ALG.ECDSA: w.u16(s.hash).tpm2b(s.r).tpm2b(s.s); break;
    case TPM_ALG.HMAC: w.u16(s.hash).bytes(s.digest); break;
    case TPM_ALG.NULL: break;
  }
}

/* TPMS_ECC_POINT = TPM2B x | TPM2B y ; TPM2B_ECC_POINT = u16 size | TPMS_ECC_POINT */
export function writeEccPoint2b(w: Writer, p: EccPoint): void {
  w.sized((x) => x.tpm2b(p.x).tpm2b(p.y));
}

export function readEccPoint2b(r: Reader): EccPoint {
  const inner = r.sized();
  const p = { x: inner.tpm2b(), y: inner.tpm2b() };
  inner.done('TPMS_ECC_POINT');
  return p;
}

/* TPMS_NV_PUBLIC = nvIndex u32 | nameAlg u16 | attributes u32 | authPolicy TPM2B_DIGEST | dataSize u16 */
export function writeNvPublic(w: Writer, p: NvPublic): void {
  w.u32(p.nvIndex).u16(p.nameAlg).u32(p.attributes).tpm2b(p.authPolicy).u16(p.dataSize);
}

export function readNvPublic(r: Reader): NvPublic {
  const nvIndex = r.u32();
  const nameAlg = asHashAlg(r.u16());
  const attributes = r.u32();
  const authPolicy = r.tpm2b();
  const dataSize = r.u16();
  return { nvIndex, nameAlg, attributes, authPolicy, dataSize };
}

export function marshalNvPublic(p: NvPublic): Buffer {
  const w = new Writer(64);
  writeNvPublic(w, p);
  return w.finish();
}

/* TPMT_TK_CREATION / VERIFIED / AUTH / HASHCHECK = tag u16 | hierarchy u32 | digest TPM2B_DIGEST */
export function readTicket(r: Reader): Ticket {
  return { tag: r.u16(), hierarchy: r.u32(), digest: r.tpm2b() };
}

export function writeTicket(w: Writer, t: Ticket): void {
  w.u16(t.tag).u32(t.hierarchy).tpm2b(t.digest);
}

/** The NULL hashcheck ticket Sign accepts for an unrestricted key. */
export function nullHashcheckTicket(): Ticket {
  return { tag: TPM_ST.HASHCHECK, hierarchy: 0x40000007, digest: new Uint8Array(0) };
}

/* TPMS_CONTEXT = sequence u64 | savedHandle u32 | hierarchy u32 | contextBlob TPM2B_CONTEXT_DATA */
export function readContext(r: Reader): SavedContext {
  return { sequence: r.u64(), savedHandle: r.u32(), hierarchy: r.u32(), contextBlob: r.tpm2b() };
}

export function writeContext(w: Writer, c: SavedContext): void {
  w.u64(c.sequence).u32(c.savedHandle).u32(c.hierarchy).tpm2b(c.contextBlob);
}

/*
 * TPMS_ATTEST = magic u32 (0xFF544347) | type u16 | qualifiedSigner TPM2B_NAME | extraData TPM2B_DATA
 *             | clockInfo (clock u64 | resetCount u32 | restartCount u32 | safe u8) | firmwareVersion u64 | attested
 *   attested for ATTEST_CERTIFY: TPMS_CERTIFY_INFO = name TPM2B_NAME | qualifiedName TPM2B_NAME
 */
export function parseAttest(raw: Uint8Array): Attest {
  const r = new Reader(raw);
  const magic = r.u32();
  const type = r.u16();
  const qualifiedSigner = r.tpm2b();
  const extraData = r.tpm2b();
  const clock = r.u64();
  const resetCount = r.u32();
  const restartCount = r.u32();
  const safe = r.u8() !== 0;
  const firmwareVersion = r.u64();
  const a: Attest = { magic, type, qualifiedSigner, extraData, clock, resetCount, restartCount, safe, firmwareVersion, raw: new Uint8Array(raw) };
  if (type === TPM_ST.ATTEST_CERTIFY) a.certified = { name: r.tpm2b(), qualifiedName: r.tpm2b() };
  return a;
}
