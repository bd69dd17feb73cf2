/**
 * A TPM hierarchy password (`tpm2_changeauth -c owner|endorsement PASSWORD`), read from a file
 * the admin names with --owner-auth-file / --endorsement-auth-file (or their environment
 * variables), or from systemd's credential tpm-owner-auth / tpm-endorsement-auth
 * (LoadCredential=tpm-owner-auth:/etc/tpmvsc/owner-auth).
 *
 * The file holds the password as tpm2-tools take it on their command line: the text itself,
 * or `str:TEXT`, or `hex:HEXBYTES`; one trailing newline (echo adds one) is not part of it.
 * Like ssh with private keys, a file that others could read or that another user owns is
 * refused: whoever reads the owner password can evict every card's key from the TPM. Messages name the file,
 * never its content.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { TpmvscError } from '../common/errors.js';
import type { TpmPasswordSource } from './config.js';

/** TPM2B_AUTH holds at most a digest of the TPM's largest hash (SHA-512: 64 bytes). */
export const MAX_TPM_PASSWORD_BYTES = 64;
/** Read no more than this: the file is a password, not a document. */
const MAX_FILE_BYTES = 4096;

function refuse(source: TpmPasswordSource, problem: string): TpmvscError {
  return new TpmvscError('TPM_PASSWORD_FILE', `${source.path} (${source.source}) ${problem}`);
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, '0');
}

/**
 * Reads and checks a hierarchy password. Undefined: no password to use (an absent systemd
 * credential). Throws TpmvscError('TPM_PASSWORD_FILE') naming the fix.
 */
export async function readTpmPassword(source: TpmPasswordSource, uid: number = process.geteuid?.() ?? 0): Promise<Uint8Array | undefined> {
  let handle;
  try {
    handle = await open(source.path, constants.O_RDONLY | constants.O_NOCTTY | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && source.kind === 'credential') return undefined;
    if (code === 'ENOENT') throw refuse(source, 'does not exist');
    if (code === 'EACCES') throw refuse(source, "cannot be read by the daemon's user");
    throw refuse(source, `cannot be opened (${code ?? 'error'})`);
  }
  try {
    // Checked on the open descriptor, so the file read is the file checked.
    const stat = await handle.stat();
    if (!stat.isFile()) throw refuse(source, 'is not a regular file');
    checkOwnership(source, stat.uid, stat.mode, uid);
    if (stat.size > MAX_FILE_BYTES) throw refuse(source, `is larger than ${MAX_FILE_BYTES} bytes: it must hold the password only`);
    const buffer = Buffer.alloc(MAX_FILE_BYTES + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length, null);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > MAX_FILE_BYTES) break;
    }
    if (length > MAX_FILE_BYTES) {
      buffer.fill(0);
      throw refuse(source, `is larger than ${MAX_FILE_BYTES} bytes: it must hold the password only`);
    }
    try {
      return parseTpmPassword(buffer.subarray(0, length), source);
    } finally {
      buffer.fill(0);
    }
  } finally {
    await handle.close();
  }
}

/**
 * An option's file: owned by the daemon's user, no group or other bits (ssh's rule for keys).
 * systemd's credential: systemd makes it readable by the service user only, through ownership
 * or an ACL entry whose mask shows in the group bits, in a directory private to the service,
 * so there the owner may also be root and only the "other" bits are refused.
 */
function checkOwnership(source: TpmPasswordSource, fileUid: number, mode: number, uid: number): void {
  const ownerOk = fileUid === uid || (source.kind === 'credential' && fileUid === 0);
  if (!ownerOk) throw refuse(source, `is owned by uid ${fileUid}, not by the daemon's user (uid ${uid}): chown it to that user`);
  const tooOpen = source.kind === 'credential' ? mode & 0o007 : mode & 0o077;
  if (tooOpen) throw refuse(source, `is accessible by ${source.kind === 'credential' ? 'others' : 'group or others'} (mode ${octal(mode)}): chmod 600 ${source.path}`);
}

function isHexDigit(byte: number): boolean {
  return (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x46) || (byte >= 0x61 && byte <= 0x66);
}

function hexValue(byte: number): number {
  return byte <= 0x39 ? byte - 0x30 : (byte | 0x20) - 0x61 + 10;
}

/** The text as tpm2-tools read a password argument: TEXT, str:TEXT or hex:HEX; one trailing newline dropped. */
export function parseTpmPassword(content: Uint8Array, source: TpmPasswordSource): Uint8Array {
  let end = content.length;
  if (end > 0 && content[end - 1] === 0x0a) end -= 1;
  const text = content.subarray(0, end);
  const prefix = Buffer.from(text.subarray(0, 4)).toString('latin1');
  let password: Uint8Array;
  if (prefix === 'hex:') {
    // Decoded byte by byte into the result: no pooled Buffer or string keeps a copy of the password.
    const digits = text.subarray(4);
    if (digits.length === 0 || digits.length % 2 !== 0 || !digits.every(isHexDigit)) throw refuse(source, 'starts with hex: but the rest is not an even number of hex digits');
    password = new Uint8Array(digits.length / 2);
    for (let i = 0; i < password.length; i++) password[i] = (hexValue(digits[2 * i]!) << 4) | hexValue(digits[2 * i + 1]!);
  } else {
    password = Uint8Array.from(prefix === 'str:' ? text.subarray(4) : text);
  }
  if (password.length === 0) throw refuse(source, 'is empty: put the password in it, or remove the setting for an empty one');
  if (password.length > MAX_TPM_PASSWORD_BYTES) {
    password.fill(0);
    throw refuse(source, `holds more than ${MAX_TPM_PASSWORD_BYTES} bytes, longer than a TPM authorization value`);
  }
  return password;
}
