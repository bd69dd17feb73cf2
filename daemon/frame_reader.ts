/**
 * vpcd framing: every message in both directions is a 2-byte big-endian length
 * followed by that many payload bytes (vsmartcard's vpcd protocol).
 *
 *   +--------+--------+---------------------------+
 *   | len_hi | len_lo | payload (len bytes)       |
 *   +--------+--------+---------------------------+
 *
 * TCP delivers a byte stream: a frame's length and payload may arrive in separate
 * chunks (the stock driver even sends them with two send() calls), and several
 * frames may arrive in one chunk. FrameReader reassembles them.
 */

/** Largest payload the 2-byte length can announce; vpcd advertises 65536-byte APDUs. */
export const MAX_FRAME_PAYLOAD = 0xffff;
const HEADER_LENGTH = 2;

/** The peer sent bytes that are not a valid vpcd frame. */
export class VpcdFrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'VpcdFrameError';
  }
}

/** Encodes one frame as ONE buffer so it can go out in one write (see tcp_quickack.ts). */
export function encodeFrame(payload: Uint8Array): Buffer {
  if (payload.length > MAX_FRAME_PAYLOAD) {
    throw new VpcdFrameError(`frame payload of ${payload.length} bytes exceeds ${MAX_FRAME_PAYLOAD}`);
  }
  const frame = Buffer.allocUnsafe(HEADER_LENGTH + payload.length);
  frame.writeUInt16BE(payload.length, 0);
  frame.set(payload, HEADER_LENGTH);
  return frame;
}

/**
 * Incremental decoder: push() every chunk read from the socket, then take complete frames
 * one at a time with next(), so that a caller can stop at the first frame it refuses
 * without decoding (or keeping) the rest of a flood. It holds only the bytes pushed and
 * not yet taken. A zero-length frame is malformed for a card (vpcd never sends one) and
 * throws VpcdFrameError; after an error the reader must be discarded.
 */
export class FrameReader {
  private pending: Buffer[] = [];
  private pendingLength = 0;

  /** Bytes received but not yet taken as a frame. */
  get buffered(): number {
    return this.pendingLength;
  }

  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    this.pending.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
    this.pendingLength += chunk.length;
  }

  /** The payload of the next complete frame, or undefined until one is complete. */
  next(): Buffer | undefined {
    if (this.pendingLength < HEADER_LENGTH) return undefined;
    const head = this.peekHeader();
    if (head === 0) throw new VpcdFrameError('zero-length frame');
    if (this.pendingLength < HEADER_LENGTH + head) return undefined;
    const whole = this.take(HEADER_LENGTH + head);
    // Copy: the payload outlives the socket's chunk and may be kept by the card.
    return Buffer.from(whole.subarray(HEADER_LENGTH));
  }

  private peekHeader(): number {
    const first = this.pending[0]!;
    if (first.length >= HEADER_LENGTH) return first.readUInt16BE(0);
    // The two length bytes straddle chunks (a 1-byte chunk first).
    return (first[0]! << 8) | this.pending[1]![0]!;
  }

  /** Removes and returns the first `count` buffered bytes (count <= pendingLength). */
  private take(count: number): Buffer {
    const first = this.pending[0]!;
    if (first.length >= count) {
      // Fast path: the whole frame sits in one chunk.
      if (first.length === count) this.pending.shift();
      else this.pending[0] = first.subarray(count);
      this.pendingLength -= count;
      return first.subarray(0, count);
    }
    const joined = Buffer.concat(this.pending, this.pendingLength);
    const rest = joined.subarray(count);
    this.pending = rest.length > 0 ? [rest] : [];
    this.pendingLength = rest.length;
    return joined.subarray(0, count);
  }
}
