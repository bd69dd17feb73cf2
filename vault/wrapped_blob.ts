/**
 * The vault's wrapped form of a TPM object (KeyRecord.wrapped and the sealed blobs in the
 * state), base64 of:
 *
 *   TPM2B_PUBLIC  u16 size | TPMT_PUBLIC
 *   TPM2B_PRIVATE u16 size | encrypted sensitive (the TPM's own encryption under the card parent)
 *   [auth box]    u16 size | box          only for keys with authorization 'pin' (key_auth_box.ts)
 */
import { VaultError } from './vault_error.js';

export interface WrappedObject {
  public: Uint8Array;
  private: Uint8Array;
  authBox?: Uint8Array;
}

function sized(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + bytes.length);
  out[0] = bytes.length >> 8;
  out[1] = bytes.length & 0xff;
  out.set(bytes, 2);
  return out;
}

/** `pub` and `priv` already carry their u16 size prefix (as tpm/ returns them). */
export function encodeWrapped(object: WrappedObject): string {
  const parts = [object.public, object.private];
  if (object.authBox) parts.push(sized(object.authBox));
  return Buffer.concat(parts).toString('base64');
}

export function decodeWrapped(wrapped: string): WrappedObject {
  if (typeof wrapped !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(wrapped)) {
    throw new VaultError('BAD_STATE', 'wrapped object is not base64');
  }
  const bytes = new Uint8Array(Buffer.from(wrapped, 'base64'));
  const parts: Uint8Array[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    if (offset + 2 > bytes.length) throw new VaultError('BAD_STATE', 'wrapped object is truncated');
    const size = (bytes[offset]! << 8) | bytes[offset + 1]!;
    if (offset + 2 + size > bytes.length) throw new VaultError('BAD_STATE', 'wrapped object is truncated');
    parts.push(bytes.slice(offset, offset + 2 + size));
    offset += 2 + size;
  }
  if (parts.length < 2 || parts.length > 3) throw new VaultError('BAD_STATE', 'wrapped object has the wrong number of parts');
  const result: WrappedObject = { public: parts[0]!, private: parts[1]! };
  if (parts[2]) result.authBox = parts[2].subarray(2);
  return result;
}
