/**
 * BER-TLV as PIV uses it (ISO/IEC 7816-4 §5.2, SP 800-73-4 Part 2 §3).
 *
 *   tag:     1 byte, or first byte with low 5 bits 11111 followed by bytes whose
 *            bit 8 says "another tag byte follows" (5F C1 02, 7F 49 ...)
 *   length:  00..7F            one byte
 *            81 xx             up to 255
 *            82 xx xx          up to 65535
 *   value:   length bytes
 *
 * Tags are handled as numbers: 0x5fc102, 0x7f49, 0x53.
 * Malformed input throws CardError(6A80).
 */
import { CardError, SW } from './status_words.js';

export interface Tlv {
  tag: number;
  value: Uint8Array;
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((sum, part) => sum + part.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

export function encodeTag(tag: number): Uint8Array {
  if (tag <= 0xff) return Uint8Array.of(tag);
  if (tag <= 0xffff) return Uint8Array.of(tag >> 8, tag & 0xff);
  return Uint8Array.of(tag >> 16, (tag >> 8) & 0xff, tag & 0xff);
}

export function encodeLength(length: number): Uint8Array {
  if (length < 0x80) return Uint8Array.of(length);
  if (length <= 0xff) return Uint8Array.of(0x81, length);
  if (length <= 0xffff) return Uint8Array.of(0x82, length >> 8, length & 0xff);
  throw new RangeError(`TLV length ${length} too large`);
}

/** One TLV; several value parts are concatenated. */
export function tlv(tag: number, ...parts: Uint8Array[]): Uint8Array {
  const value = concatBytes(...parts);
  return concatBytes(encodeTag(tag), encodeLength(value.length), value);
}

/** Reads the TLV at `offset`; returns it and the offset just past it. */
export function readTlv(bytes: Uint8Array, offset: number): Tlv & { end: number } {
  let position = offset;
  const byte = (): number => {
    if (position >= bytes.length) throw new CardError(SW.WRONG_DATA, 'truncated TLV');
    return bytes[position++]!;
  };
  let tag = byte();
  if ((tag & 0x1f) === 0x1f) {
    let next: number;
    let count = 0;
    do {
      next = byte();
      tag = (tag << 8) | next;
      if (++count > 2) throw new CardError(SW.WRONG_DATA, 'TLV tag too long');
    } while (next & 0x80);
  }
  let length = byte();
  if (length === 0x81) length = byte();
  else if (length === 0x82) length = (byte() << 8) | byte();
  else if (length >= 0x80) throw new CardError(SW.WRONG_DATA, 'unsupported TLV length form');
  if (position + length > bytes.length) throw new CardError(SW.WRONG_DATA, 'TLV value runs past the data');
  return { tag, value: bytes.subarray(position, position + length), end: position + length };
}

/** Every TLV in `bytes`, which must hold nothing else. */
export function decodeTlvs(bytes: Uint8Array): Tlv[] {
  const list: Tlv[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const { tag, value, end } = readTlv(bytes, offset);
    list.push({ tag, value });
    offset = end;
  }
  return list;
}

/** Exactly one TLV with the expected tag and nothing after it; returns its value. */
export function expectSingleTlv(bytes: Uint8Array, tag: number): Uint8Array {
  const { tag: found, value, end } = readTlv(bytes, 0);
  if (found !== tag || end !== bytes.length) throw new CardError(SW.WRONG_DATA, `expected one TLV ${tag.toString(16)}`);
  return value;
}

export function findTlv(list: Tlv[], tag: number): Uint8Array | undefined {
  return list.find((entry) => entry.tag === tag)?.value;
}
