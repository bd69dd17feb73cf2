/**
 * ECDSA helpers around the TPM's Sign command:
 * - the hash handed to the TPM must be exactly the field size (the scheme hash of
 *   the key: SHA-256 for P-256, SHA-384 for P-384), so hashes of other lengths are
 *   brought to that size the way ECDSA's bits2int would treat them;
 * - the TPM returns r and s as fixed-size integers; PIV wants DER.
 */

/**
 * Left-pads a short hash with zeros (same integer value) and keeps the leftmost
 * `fieldBytes` bytes of a long one (bits2int truncation; both curves here have a
 * field size that is a whole number of bytes).
 */
export function normaliseHash(hash: Uint8Array, fieldBytes: number): Uint8Array {
  if (hash.length === fieldBytes) return Uint8Array.from(hash);
  if (hash.length > fieldBytes) return hash.slice(0, fieldBytes);
  const padded = new Uint8Array(fieldBytes);
  padded.set(hash, fieldBytes - hash.length);
  return padded;
}

/** DER INTEGER contents of an unsigned big-endian value: minimal, with a 00 when the top bit is set. */
function derUnsignedInteger(value: Uint8Array): Uint8Array {
  let start = 0;
  while (start < value.length - 1 && value[start] === 0) start++;
  const trimmed = value.subarray(start);
  const needsZero = trimmed.length === 0 || (trimmed[0]! & 0x80) !== 0;
  const body = new Uint8Array(trimmed.length + (needsZero ? 1 : 0));
  body.set(trimmed, needsZero ? 1 : 0);
  return concat([Uint8Array.of(0x02), derLength(body.length), body]);
}

function derLength(length: number): Uint8Array {
  if (length < 0x80) return Uint8Array.of(length);
  if (length < 0x100) return Uint8Array.of(0x81, length);
  return Uint8Array.of(0x82, length >> 8, length & 0xff);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }
 *   30 len | 02 len r | 02 len s   (each integer minimal, positive)
 */
export function ecdsaSignatureDer(r: Uint8Array, s: Uint8Array): Uint8Array {
  const body = concat([derUnsignedInteger(r), derUnsignedInteger(s)]);
  return concat([Uint8Array.of(0x30), derLength(body.length), body]);
}
