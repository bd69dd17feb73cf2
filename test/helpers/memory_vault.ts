/**
 * An in-memory KeyVault on node:crypto, for fast unit tests ONLY: production code
 * never imports it (keys live in process memory, counters reset with the process).
 *
 * It behaves like the TPM vault where the card application can tell: PIN and PUK
 * compared in constant time, counters decremented before the check, keys with
 * authorization 'pin' refused while locked, lockout simulated on demand.
 */
import {
  createCipheriv,
  createDecipheriv,
  createECDH,
  createHash,
  createPrivateKey,
  generateKeyPairSync,
  privateDecrypt,
  randomBytes,
  randomUUID,
  timingSafeEqual,
  constants,
  type KeyObject,
} from 'node:crypto';
import type {
  CheckResult,
  ImportedKey,
  KeyAlgorithm,
  KeyAuthorization,
  KeyRecord,
  KeyVault,
  ManagementKey,
  PublicKey,
  RetryStatus,
} from '../../applet/key_vault.js';

export interface MemoryVaultOptions {
  pin: string;
  /** undefined: a card without a PUK. */
  puk?: string;
  managementKey?: ManagementKey;
  pinTries?: number;
  pukTries?: number;
}

interface Counter {
  value: Uint8Array;
  total: number;
  remaining: number;
  isDefault: boolean;
}

const DEFAULT_PIN = '12345678';
const DEFAULT_MANAGEMENT = Uint8Array.from([1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8]);

function digest(value: Uint8Array): Buffer {
  return createHash('sha256').update(value).digest();
}

function equalSecret(a: Uint8Array, b: Uint8Array): boolean {
  // Hash first so different lengths compare in constant time too.
  return timingSafeEqual(digest(a), digest(b));
}

const b64url = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64url');
const fromB64url = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'base64url'));

// --- P-256 / P-384 arithmetic for raw ECDSA over a given hash (node:crypto always hashes) ---
interface Curve {
  p: bigint;
  n: bigint;
  a: bigint;
  gx: bigint;
  gy: bigint;
  bytes: number;
}
const CURVES: Record<'eccp256' | 'eccp384', Curve> = {
  eccp256: {
    p: 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn,
    n: 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n,
    a: -3n,
    gx: 0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n,
    gy: 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n,
    bytes: 32,
  },
  eccp384: {
    p: 0xfffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff0000000000000000ffffffffn,
    n: 0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973n,
    a: -3n,
    gx: 0xaa87ca22be8b05378eb1c71ef320ad746e1d3b628ba79b9859f741e082542a385502f25dbf55296c3a545e3872760ab7n,
    gy: 0x3617de4a96262c6f5d9e98bf9292dc29f8f41dbd289a147ce9da3113b5f0b8c00a60b1ce1d7e819d7a431d7c90ea0e5fn,
    bytes: 48,
  },
};
const mod = (value: bigint, m: bigint): bigint => ((value % m) + m) % m;
function inverse(value: bigint, m: bigint): bigint {
  let [a, b, x0, x1] = [mod(value, m), m, 1n, 0n];
  while (b !== 0n) {
    const q = a / b;
    [a, b] = [b, a - q * b];
    [x0, x1] = [x1, x0 - q * x1];
  }
  return mod(x0, m);
}
type Point = { x: bigint; y: bigint } | null;
function add(curve: Curve, P: Point, Q: Point): Point {
  if (!P) return Q;
  if (!Q) return P;
  const { p } = curve;
  let slope: bigint;
  if (P.x === Q.x) {
    if (mod(P.y + Q.y, p) === 0n) return null;
    slope = mod((3n * P.x * P.x + curve.a) * inverse(2n * P.y, p), p);
  } else {
    slope = mod((Q.y - P.y) * inverse(Q.x - P.x, p), p);
  }
  const x = mod(slope * slope - P.x - Q.x, p);
  return { x, y: mod(slope * (P.x - x) - P.y, p) };
}
function multiply(curve: Curve, k: bigint, P: Point): Point {
  let result: Point = null;
  let addend = P;
  while (k > 0n) {
    if (k & 1n) result = add(curve, result, addend);
    addend = add(curve, addend, addend);
    k >>= 1n;
  }
  return result;
}
const toBig = (bytes: Uint8Array): bigint => (bytes.length ? BigInt('0x' + Buffer.from(bytes).toString('hex')) : 0n);
function derInteger(value: bigint): Buffer {
  let hex = value.toString(16);
  if (hex.length % 2) hex = '0' + hex;
  let bytes = Buffer.from(hex, 'hex');
  if (bytes[0]! & 0x80) bytes = Buffer.concat([Buffer.of(0), bytes]);
  return Buffer.concat([Buffer.of(0x02, bytes.length), bytes]);
}
/** ECDSA with bits2int truncation of the hash (FIPS 186-4 §6.4). */
function rawEcdsa(curve: Curve, d: bigint, hash: Uint8Array): Uint8Array {
  let e = toBig(hash);
  const excess = hash.length * 8 - curve.bytes * 8;
  if (excess > 0) e >>= BigInt(excess);
  for (;;) {
    const k = mod(toBig(randomBytes(curve.bytes + 8)), curve.n - 1n) + 1n;
    const R = multiply(curve, k, { x: curve.gx, y: curve.gy })!;
    const r = mod(R.x, curve.n);
    if (r === 0n) continue;
    const s = mod(inverse(k, curve.n) * (e + r * d), curve.n);
    if (s === 0n) continue;
    const body = Buffer.concat([derInteger(r), derInteger(s)]);
    const length = body.length < 0x80 ? Buffer.of(body.length) : Buffer.of(0x81, body.length);
    return new Uint8Array(Buffer.concat([Buffer.of(0x30), length, body]));
  }
}

export class MemoryVault implements KeyVault {
  private keys = new Map<string, KeyObject>();
  private pin: Counter;
  private puk: Counter | undefined;
  private management: ManagementKey;
  private isUnlocked = false;
  /** Changes with every mutation, so state() changes as a real vault's would. */
  private generation = 0;
  /** Test knob: the "TPM" refuses every PIN/PUK check while set. */
  lockedOut = false;
  /** Test knob: count of vault calls, to see that rejected commands reach nothing. */
  calls = 0;
  /** Seals PIN-protected objects (sealObject); dies with the vault, like the TPM vault's wrap key with the card. */
  private objectKey = randomBytes(32);

  constructor(options: MemoryVaultOptions) {
    const encoder = new TextEncoder();
    this.pin = { value: encoder.encode(options.pin), total: options.pinTries ?? 5, remaining: options.pinTries ?? 5, isDefault: options.pin === DEFAULT_PIN };
    this.puk =
      options.puk === undefined
        ? undefined
        : { value: encoder.encode(options.puk), total: options.pukTries ?? 5, remaining: options.pukTries ?? 5, isDefault: options.puk === DEFAULT_PIN };
    this.management = options.managementKey
      ? { algorithm: options.managementKey.algorithm, key: options.managementKey.key.slice() }
      : { algorithm: 'tdes', key: DEFAULT_MANAGEMENT.slice() };
  }

  state(): unknown {
    return { kind: 'memory', generation: this.generation, keys: [...this.keys.keys()].sort() };
  }

  /** state() changes only with the generation (every key change bumps it too). */
  revision(): number {
    return this.generation;
  }

  get unlocked(): boolean {
    return this.isUnlocked;
  }

  private record(algorithm: KeyAlgorithm, origin: KeyRecord['origin'], authorization: KeyAuthorization, key: KeyObject): KeyRecord {
    const id = randomUUID();
    this.keys.set(id, key);
    this.generation++;
    const jwk = key.export({ format: 'jwk' });
    let publicKey: PublicKey;
    if (algorithm === 'rsa2048') {
      publicKey = { algorithm, modulus: fromB64url(jwk.n!), publicExponent: fromB64url(jwk.e!) };
    } else {
      const size = CURVES[algorithm].bytes;
      const pad = (bytes: Uint8Array): Uint8Array => {
        const out = new Uint8Array(size);
        out.set(bytes, size - bytes.length);
        return out;
      };
      publicKey = { algorithm, point: Uint8Array.of(4, ...pad(fromB64url(jwk.x!)), ...pad(fromB64url(jwk.y!))) };
    }
    return { algorithm, origin, authorization, publicKey, wrapped: Buffer.from(id).toString('base64') };
  }

  private use(record: KeyRecord): KeyObject {
    this.calls++;
    if (record.authorization === 'pin' && !this.isUnlocked) throw new Error('key needs the PIN');
    const key = this.keys.get(Buffer.from(record.wrapped, 'base64').toString());
    if (!key) throw new Error('unknown key');
    return key;
  }

  async generateKey(algorithm: KeyAlgorithm, authorization: KeyAuthorization): Promise<KeyRecord> {
    this.calls++;
    const { privateKey } =
      algorithm === 'rsa2048'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : generateKeyPairSync('ec', { namedCurve: algorithm === 'eccp256' ? 'P-256' : 'P-384' });
    return this.record(algorithm, 'generated', authorization, privateKey);
  }

  async importKey(key: ImportedKey, authorization: KeyAuthorization): Promise<KeyRecord> {
    this.calls++;
    let privateKey: KeyObject;
    if (key.algorithm === 'rsa2048') {
      const p = toBig(key.p);
      const q = toBig(key.q);
      const e = 65537n;
      const n = p * q;
      const d = inverse(e, (p - 1n) * (q - 1n));
      const enc = (value: bigint): string => {
        let hex = value.toString(16);
        if (hex.length % 2) hex = '0' + hex;
        return Buffer.from(hex, 'hex').toString('base64url');
      };
      if (n.toString(2).length !== 2048) throw new RangeError('not a 2048-bit key');
      privateKey = createPrivateKey({
        key: { kty: 'RSA', n: enc(n), e: enc(e), d: enc(d), p: enc(p), q: enc(q), dp: b64url(key.dp), dq: b64url(key.dq), qi: b64url(key.qinv) },
        format: 'jwk',
      });
    } else {
      const curve = CURVES[key.algorithm];
      const d = toBig(key.d);
      if (d === 0n || d >= curve.n) throw new RangeError('private scalar out of range');
      const ecdh = createECDH(key.algorithm === 'eccp256' ? 'prime256v1' : 'secp384r1');
      ecdh.setPrivateKey(key.d);
      const point = ecdh.getPublicKey();
      privateKey = createPrivateKey({
        key: {
          kty: 'EC',
          crv: key.algorithm === 'eccp256' ? 'P-256' : 'P-384',
          d: b64url(key.d),
          x: b64url(point.subarray(1, 1 + curve.bytes)),
          y: b64url(point.subarray(1 + curve.bytes)),
        },
        format: 'jwk',
      });
    }
    return this.record(key.algorithm, 'imported', authorization, privateKey);
  }

  async rsaPrivate(record: KeyRecord, block: Uint8Array): Promise<Uint8Array> {
    const key = this.use(record);
    return new Uint8Array(privateDecrypt({ key, padding: constants.RSA_NO_PADDING }, block));
  }

  async ecdsaSign(record: KeyRecord, hash: Uint8Array): Promise<Uint8Array> {
    const key = this.use(record);
    if (record.algorithm === 'rsa2048') throw new Error('not an EC key');
    const d = toBig(fromB64url(key.export({ format: 'jwk' }).d!));
    return rawEcdsa(CURVES[record.algorithm], d, hash);
  }

  async ecdh(record: KeyRecord, peerPoint: Uint8Array): Promise<Uint8Array> {
    const key = this.use(record);
    if (record.algorithm === 'rsa2048') throw new Error('not an EC key');
    const ecdh = createECDH(record.algorithm === 'eccp256' ? 'prime256v1' : 'secp384r1');
    ecdh.setPrivateKey(fromB64url(key.export({ format: 'jwk' }).d!));
    return new Uint8Array(ecdh.computeSecret(peerPoint));
  }

  async deleteKey(record: KeyRecord): Promise<void> {
    this.calls++;
    this.keys.delete(Buffer.from(record.wrapped, 'base64').toString());
    this.generation++;
  }

  /** Number of keys the vault holds (tests check that replaced keys are forgotten). */
  get keyCount(): number {
    return this.keys.size;
  }

  private check(counter: Counter, value: Uint8Array): CheckResult {
    this.calls++;
    if (this.lockedOut) return { ok: false, reason: 'lockout', recoverySeconds: 600 };
    if (counter.remaining === 0) return { ok: false, reason: 'blocked' };
    counter.remaining--; // durably before the check, as the TPM vault does
    if (!equalSecret(counter.value, value)) return { ok: false, reason: 'wrong', remaining: counter.remaining };
    counter.remaining = counter.total;
    return { ok: true };
  }

  async verifyPin(pin: Uint8Array): Promise<CheckResult> {
    const result = this.check(this.pin, pin);
    this.isUnlocked = result.ok;
    return result;
  }

  lock(): void {
    this.isUnlocked = false;
  }

  async pinStatus(): Promise<RetryStatus> {
    return { total: this.pin.total, remaining: this.pin.remaining, isDefault: this.pin.isDefault };
  }

  async pukStatus(): Promise<RetryStatus | undefined> {
    return this.puk && { total: this.puk.total, remaining: this.puk.remaining, isDefault: this.puk.isDefault };
  }

  async changePin(oldPin: Uint8Array, newPin: Uint8Array): Promise<CheckResult> {
    const result = this.check(this.pin, oldPin);
    if (result.ok) {
      this.pin.value = newPin.slice();
      this.pin.isDefault = false;
      this.generation++;
    }
    return result;
  }

  async changePuk(oldPuk: Uint8Array, newPuk: Uint8Array): Promise<CheckResult> {
    if (!this.puk) throw new Error('no PUK');
    const result = this.check(this.puk, oldPuk);
    if (result.ok) {
      this.puk.value = newPuk.slice();
      this.puk.isDefault = false;
      this.generation++;
    }
    return result;
  }

  async unblockPinWithPuk(puk: Uint8Array, newPin: Uint8Array): Promise<CheckResult> {
    if (!this.puk) throw new Error('no PUK');
    const result = this.check(this.puk, puk);
    if (result.ok) {
      this.pin = { value: newPin.slice(), total: this.pin.total, remaining: this.pin.total, isDefault: false };
      this.generation++;
    }
    return result;
  }

  async unblockPinWithAdmin(newPin: Uint8Array): Promise<void> {
    this.calls++;
    if (this.puk) throw new Error('a card with a PUK is unblocked with the PUK');
    this.pin = { value: newPin.slice(), total: this.pin.total, remaining: this.pin.total, isDefault: false };
    this.generation++;
  }

  async setRetries(pinTries: number, pukTries: number, pin: Uint8Array, puk: Uint8Array | undefined): Promise<void> {
    this.calls++;
    this.pin = { value: pin.slice(), total: pinTries, remaining: pinTries, isDefault: true };
    if (this.puk && puk) this.puk = { value: puk.slice(), total: pukTries, remaining: pukTries, isDefault: true };
    this.generation++;
  }

  /**
   * PIN-protected objects: AES-256-GCM under a key that lives as long as this vault, the object
   * tag as AAD (the TPM vault seals to its wrap key instead: vault/object_box.ts). Sealing works
   * while locked, opening needs the PIN, as in the TPM vault.
   */
  async sealObject(objectTag: number, value: Uint8Array): Promise<string> {
    this.calls++;
    const nonce = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', this.objectKey, nonce);
    cipher.setAAD(Buffer.from(objectTag.toString(16)));
    const ciphertext = Buffer.concat([cipher.update(value), cipher.final()]);
    return Buffer.concat([nonce, ciphertext, cipher.getAuthTag()]).toString('base64');
  }

  async openObject(objectTag: number, sealed: string): Promise<Uint8Array> {
    this.calls++;
    if (!this.isUnlocked) throw new Error('the object needs the PIN');
    const box = Buffer.from(sealed, 'base64');
    const decipher = createDecipheriv('aes-256-gcm', this.objectKey, box.subarray(0, 12));
    decipher.setAAD(Buffer.from(objectTag.toString(16)));
    decipher.setAuthTag(box.subarray(box.length - 16));
    return new Uint8Array(Buffer.concat([decipher.update(box.subarray(12, box.length - 16)), decipher.final()]));
  }

  async managementKey(): Promise<ManagementKey> {
    this.calls++;
    return { algorithm: this.management.algorithm, key: this.management.key.slice() };
  }

  async setManagementKey(key: ManagementKey): Promise<void> {
    this.calls++;
    this.management = { algorithm: key.algorithm, key: key.key.slice() };
    this.generation++;
  }

  async resetCard(pin: Uint8Array, puk: Uint8Array | undefined, managementKey: ManagementKey): Promise<void> {
    this.calls++;
    this.keys.clear();
    this.pin = { value: pin.slice(), total: this.pin.total, remaining: this.pin.total, isDefault: true };
    if (this.puk && puk) this.puk = { value: puk.slice(), total: this.puk.total, remaining: this.puk.total, isDefault: true };
    this.management = { algorithm: managementKey.algorithm, key: managementKey.key.slice() };
    this.objectKey = randomBytes(32);
    this.isUnlocked = false;
    this.generation++;
  }

  async destroy(): Promise<void> {
    this.keys.clear();
    this.objectKey = randomBytes(32);
    this.generation++;
  }
}
