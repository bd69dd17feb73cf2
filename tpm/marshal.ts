/**
 * Big-endian marshalling for TPM 2.0 structures (TCG TPM 2.0 Part 2, clause 4-5: all integers
 * are big-endian; a TPM2B is `u16 size | size bytes`).
 */
import { TpmProtocolError } from './errors.js';

/** Growable writer. */
export class Writer {
  private buf: Buffer;
  private pos = 0;

  constructor(initial = 256) {
    this.buf = Buffer.allocUnsafe(initial);
  }

  private ensure(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.pos + n) size *= 2;
    const next = Buffer.allocUnsafe(size);
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  get length(): number {
    return this.pos;
  }

  u8(v: number): this {
    this.ensure(1);
    this.buf[this.pos++] = v & 0xff;
    return this;
  }

  u16(v: number): this {
    this.ensure(2);
    this.buf.writeUInt16BE(v & 0xffff, this.pos);
    this.pos += 2;
    return this;
  }

  u32(v: number): this {
    this.ensure(4);
    this.buf.writeUInt32BE(v >>> 0, this.pos);
    this.pos += 4;
    return this;
  }

  u64(v: bigint): this {
    this.ensure(8);
    this.buf.writeBigUInt64BE(v, this.pos);
    this.pos += 8;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** TPM2B: u16 size | bytes. */
  tpm2b(b: Uint8Array | undefined): this {
    const data = b ?? EMPTY;
    if (data.length > 0xffff) throw new TpmProtocolError('BAD_INPUT', `TPM2B too long (${data.length})`);
    this.u16(data.length);
    return this.bytes(data);
  }

  /** A sized structure: u16 size | whatever `body` writes. */
  sized(body: (w: Writer) => void): this {
    const at = this.pos;
    this.u16(0);
    body(this);
    this.buf.writeUInt16BE(this.pos - at - 2, at);
    return this;
  }

  /** Reserves a u32 to patch later (command size). */
  patchU32(at: number, v: number): void {
    this.buf.writeUInt32BE(v >>> 0, at);
  }

  /** A copy of the written bytes. */
  finish(): Buffer {
    return Buffer.from(this.buf.subarray(0, this.pos));
  }

  /** A view on the written bytes (valid until the next write). */
  view(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}

export const EMPTY = new Uint8Array(0);

/** Bounds-checked reader; every overrun throws TpmProtocolError('BAD_RESPONSE'). */
export class Reader {
  pos: number;
  readonly end: number;
  private readonly buf: Buffer;

  constructor(data: Uint8Array, start = 0, end = data.length) {
    this.buf = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    this.pos = start;
    this.end = end;
  }

  private need(n: number): void {
    if (this.pos + n > this.end) {
      throw new TpmProtocolError('BAD_RESPONSE', `structure truncated: need ${n} bytes at ${this.pos}, have ${this.end - this.pos}`);
    }
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  u8(): number {
    this.need(1);
    return this.buf[this.pos++]!;
  }

  u16(): number {
    this.need(2);
    const v = this.buf.readUInt16BE(this.pos);
    this.pos += 2;
    return v;
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  u64(): bigint {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }

  /** `n` bytes, copied (callers keep them after the response buffer is reused). */
  bytes(n: number): Uint8Array {
    this.need(n);
    const out = new Uint8Array(n);
    out.set(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return out;
  }

  tpm2b(): Uint8Array {
    return this.bytes(this.u16());
  }

  /** A sized structure: returns a sub-reader over its body and skips it here. */
  sized(): Reader {
    const n = this.u16();
    this.need(n);
    const sub = new Reader(this.buf, this.pos, this.pos + n);
    this.pos += n;
    return sub;
  }

  /** The raw bytes between two positions (copied). */
  slice(from: number, to: number): Uint8Array {
    return new Uint8Array(this.buf.subarray(from, to));
  }

  /** Throws if unread bytes remain (strict parsing of sized structures). */
  done(what: string): void {
    if (this.pos !== this.end) throw new TpmProtocolError('BAD_RESPONSE', `${this.end - this.pos} trailing bytes after ${what}`);
  }
}
