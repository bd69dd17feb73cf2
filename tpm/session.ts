/**
 * HMAC and policy authorization sessions (TCG TPM 2.0 Part 1, 19 Authorizations and
 * 21 Session-based encryption).
 *
 *   sessionKey   = KDFa(authHash, bindAuth || salt, "ATH", nonceTPM, nonceCaller, digestBits)   (unbound: salt only)
 *   hmacKey      = sessionKey || authValue (trailing zero bytes of authValue removed)
 *   command HMAC = HMAC(hmacKey, cpHash || nonceCaller || nonceTPM || attrs)
 *   response HMAC= HMAC(hmacKey, rpHash || nonceTPM || nonceCaller || attrs)
 *   cpHash       = H(commandCode u32 || name(handle1) || ... || parameters)
 *   rpHash       = H(responseCode u32 (0) || commandCode u32 || parameters)
 *   CFB key|IV   = KDFa(authHash, hmacKey, "CFB", nonceNewer, nonceOlder, 128 + 128)
 *                  commands: (nonceCaller, nonceTPM); responses: (nonceTPM, nonceCaller)
 * Parameter encryption covers the data of the first parameter if it is a TPM2B (not its size).
 *
 * Salt for an ECC P-256 salt key: an ephemeral key pair e; Z = x(e * Q_srk);
 *   salt = KDFe(authHash, Z, "SECRET", x(e*G), x(Q_srk), digestBits); encryptedSalt = TPMS_ECC_POINT(e*G).
 */
import { createCipheriv, createDecipheriv, createECDH, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { TPM_ALG, TPMA_SESSION } from './constants.js';
import { TpmProtocolError } from './errors.js';
import { kdfa, kdfe } from './kdf.js';
import { curveInfo, leftPad } from './keys.js';
import { Writer } from './marshal.js';
import { hashName, hashSize } from './structures.js';
import type { EccPublic } from './types.js';

/** Strips trailing zero bytes of an authValue (the TPM does the same). */
export function trimAuth(auth: Uint8Array | undefined): Uint8Array {
  if (!auth) return new Uint8Array(0);
  let n = auth.length;
  while (n > 0 && auth[n - 1] === 0) n--;
  return auth.subarray(0, n);
}

/** Salt and its TPM2B_ENCRYPTED_SECRET payload for an ECC salt key. */
export function makeEccSalt(saltKey: EccPublic, hashAlg: number): { salt: Buffer; encryptedSalt: Buffer } {
  const { nodeName, size } = curveInfo(saltKey.curveId);
  const ecdh = createECDH(nodeName);
  ecdh.generateKeys();
  const qx = leftPad(saltKey.unique.x, size);
  const qy = leftPad(saltKey.unique.y, size);
  const z = ecdh.computeSecret(Buffer.concat([Buffer.from([4]), qx, qy]));
  const pub = ecdh.getPublicKey();
  const ex = pub.subarray(1, 1 + size);
  const ey = pub.subarray(1 + size);
  const salt = kdfe(hashAlg, z, 'SECRET', ex, qx, hashSize(hashAlg) * 8);
  z.fill(0);
  const w = new Writer(2 * size + 4);
  w.tpm2b(ex).tpm2b(ey);
  return { salt, encryptedSalt: w.finish() };
}

/** One started session and its rolling nonces. */
export class Session {
  readonly handle: number;
  readonly type: 'hmac' | 'policy';
  readonly hashAlg: number;
  private readonly hash: 'sha1' | 'sha256' | 'sha384' | 'sha512';
  private readonly sessionKey: Buffer;
  private nonceTPM: Buffer;
  private nonceCaller: Buffer;
  /** Policy sessions: PolicyAuthValue was run, so the HMAC includes the entity's authValue. */
  policyAuthValue = false;
  /** Policy sessions: PolicyPassword was run, so the authValue goes in the hmac field in clear. */
  policyPassword = false;

  constructor(handle: number, type: 'hmac' | 'policy', hashAlg: number, salt: Uint8Array, nonceCaller: Buffer, nonceTPM: Buffer) {
    this.handle = handle;
    this.type = type;
    this.hashAlg = hashAlg;
    this.hash = hashName(hashAlg);
    this.nonceCaller = nonceCaller;
    this.nonceTPM = nonceTPM;
    this.sessionKey = salt.length === 0 ? Buffer.alloc(0) : kdfa(hashAlg, salt, 'ATH', nonceTPM, nonceCaller, hashSize(hashAlg) * 8);
  }

  get salted(): boolean {
    return this.sessionKey.length > 0;
  }

  private hmacKey(authValue: Uint8Array): Buffer {
    const a = trimAuth(authValue);
    return a.length === 0 ? this.sessionKey : Buffer.concat([this.sessionKey, a]);
  }

  /** Whether the HMAC covers the entity's authValue for this session. */
  private includesAuth(): boolean {
    return this.type === 'hmac' || this.policyAuthValue;
  }

  /** Rolls nonceCaller for the next command (before parameter encryption and the HMAC). */
  rollNonce(): Buffer {
    this.nonceCaller = randomBytes(hashSize(this.hashAlg));
    return this.nonceCaller;
  }

  /** The auth area fields for a command (after rollNonce). */
  authorizeCommand(cpHash: Buffer, authValue: Uint8Array, attrs: number): { nonceCaller: Buffer; hmac: Buffer } {
    if (this.type === 'policy' && this.policyPassword) return { nonceCaller: this.nonceCaller, hmac: Buffer.from(trimAuth(authValue)) };
    if (this.type === 'policy' && !this.policyAuthValue && !this.salted) return { nonceCaller: this.nonceCaller, hmac: Buffer.alloc(0) };
    const key = this.hmacKey(this.includesAuth() ? authValue : new Uint8Array(0));
    const hmac = createHmac(this.hash, key).update(cpHash).update(this.nonceCaller).update(this.nonceTPM).update(Buffer.of(attrs)).digest();
    return { nonceCaller: this.nonceCaller, hmac };
  }

  /** Takes the TPM's new nonce and checks the response HMAC. */
  verifyResponse(rpHash: Buffer, nonceTPM: Uint8Array, attrs: number, hmac: Uint8Array, authValue: Uint8Array): void {
    this.nonceTPM = Buffer.from(nonceTPM);
    if (this.type === 'policy' && (this.policyPassword || (!this.policyAuthValue && !this.salted))) return;
    const key = this.hmacKey(this.includesAuth() ? authValue : new Uint8Array(0));
    const want = createHmac(this.hash, key).update(rpHash).update(this.nonceTPM).update(this.nonceCaller).update(Buffer.of(attrs)).digest();
    if (hmac.length !== want.length || !timingSafeEqual(want, hmac)) {
      throw new TpmProtocolError('RESPONSE_HMAC', `response HMAC of session 0x${this.handle.toString(16)} does not verify`);
    }
  }

  private cfb(authValue: Uint8Array, newer: Buffer, older: Buffer): { key: Buffer; iv: Buffer } {
    const km = kdfa(this.hashAlg, this.hmacKey(this.includesAuth() ? authValue : new Uint8Array(0)), 'CFB', newer, older, 256);
    return { key: km.subarray(0, 16), iv: km.subarray(16, 32) };
  }

  /** Encrypts the first command parameter's data in place (after authorizeCommand rolled the nonce). */
  encryptCommandParam(data: Buffer, authValue: Uint8Array): void {
    if (!this.salted) throw new TpmProtocolError('BAD_INPUT', 'parameter encryption needs a salted session');
    const { key, iv } = this.cfb(authValue, this.nonceCaller, this.nonceTPM);
    const c = createCipheriv('aes-128-cfb', key, iv);
    const out = c.update(data);
    out.copy(data);
    c.final();
  }

  /** Decrypts the first response parameter's data in place (after verifyResponse took the nonce). */
  decryptResponseParam(data: Buffer, authValue: Uint8Array): void {
    const { key, iv } = this.cfb(authValue, this.nonceTPM, this.nonceCaller);
    const d = createDecipheriv('aes-128-cfb', key, iv);
    const out = d.update(data);
    out.copy(data);
    d.final();
  }
}

export const SESSION_SYMMETRIC = { algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB } as const;
export const CONTINUE = TPMA_SESSION.continueSession;
