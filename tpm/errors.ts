/**
 * TPM response codes (TCG TPM 2.0 Part 2, 6.6 TPM_RC) and the library's typed errors.
 *
 * Response code layout:
 *   format 0 (bit 7 = 0):  bits 0..6 error number, bit 8 VER1 (0x100), bit 10 vendor,
 *                          bit 11 warning (S = 1 -> TPM_RC_WARN 0x900 family)
 *   format 1 (bit 7 = 1):  bits 0..5 error number (+ 0x080 base), bit 6 P (parameter),
 *                          bits 8..10 N (handle 1..7 or session 1..7 when P = 0 and bit 11 = 0/1),
 *                          bits 8..11 N (parameter 1..15 when P = 1)
 */

/** Names of format-0 (VER1 and WARN) and format-1 (FMT1, after masking) response codes. */
const RC_NAMES: Record<number, string> = {
  0x000: 'TPM_RC_SUCCESS',
  0x01e: 'TPM_RC_BAD_TAG',
  // format 0, TPM_RC_VER1 = 0x100
  0x100: 'TPM_RC_INITIALIZE',
  0x101: 'TPM_RC_FAILURE',
  0x103: 'TPM_RC_SEQUENCE',
  0x10b: 'TPM_RC_PRIVATE',
  0x119: 'TPM_RC_HMAC',
  0x120: 'TPM_RC_DISABLED',
  0x121: 'TPM_RC_EXCLUSIVE',
  0x124: 'TPM_RC_AUTH_TYPE',
  0x125: 'TPM_RC_AUTH_MISSING',
  0x126: 'TPM_RC_POLICY',
  0x127: 'TPM_RC_PCR',
  0x128: 'TPM_RC_PCR_CHANGED',
  0x12d: 'TPM_RC_UPGRADE',
  0x12e: 'TPM_RC_TOO_MANY_CONTEXTS',
  0x12f: 'TPM_RC_AUTH_UNAVAILABLE',
  0x130: 'TPM_RC_REBOOT',
  0x131: 'TPM_RC_UNBALANCED',
  0x142: 'TPM_RC_COMMAND_SIZE',
  0x143: 'TPM_RC_COMMAND_CODE',
  0x144: 'TPM_RC_AUTHSIZE',
  0x145: 'TPM_RC_AUTH_CONTEXT',
  0x146: 'TPM_RC_NV_RANGE',
  0x147: 'TPM_RC_NV_SIZE',
  0x148: 'TPM_RC_NV_LOCKED',
  0x149: 'TPM_RC_NV_AUTHORIZATION',
  0x14a: 'TPM_RC_NV_UNINITIALIZED',
  0x14b: 'TPM_RC_NV_SPACE',
  0x14c: 'TPM_RC_NV_DEFINED',
  0x150: 'TPM_RC_BAD_CONTEXT',
  0x151: 'TPM_RC_CPHASH',
  0x152: 'TPM_RC_PARENT',
  0x153: 'TPM_RC_NEEDS_TEST',
  0x154: 'TPM_RC_NO_RESULT',
  0x155: 'TPM_RC_SENSITIVE',
  // format 1 (RC_FMT1 = 0x080)
  0x081: 'TPM_RC_ASYMMETRIC',
  0x082: 'TPM_RC_ATTRIBUTES',
  0x083: 'TPM_RC_HASH',
  0x084: 'TPM_RC_VALUE',
  0x085: 'TPM_RC_HIERARCHY',
  0x087: 'TPM_RC_KEY_SIZE',
  0x088: 'TPM_RC_MGF',
  0x089: 'TPM_RC_MODE',
  0x08a: 'TPM_RC_TYPE',
  0x08b: 'TPM_RC_HANDLE',
  0x08c: 'TPM_RC_KDF',
  0x08d: 'TPM_RC_RANGE',
  0x08e: 'TPM_RC_AUTH_FAIL',
  0x08f: 'TPM_RC_NONCE',
  0x090: 'TPM_RC_PP',
  0x092: 'TPM_RC_SCHEME',
  0x095: 'TPM_RC_SIZE',
  0x096: 'TPM_RC_SYMMETRIC',
  0x097: 'TPM_RC_TAG',
  0x098: 'TPM_RC_SELECTOR',
  0x09a: 'TPM_RC_INSUFFICIENT',
  0x09b: 'TPM_RC_SIGNATURE',
  0x09c: 'TPM_RC_KEY',
  0x09d: 'TPM_RC_POLICY_FAIL',
  0x09f: 'TPM_RC_INTEGRITY',
  0x0a0: 'TPM_RC_TICKET',
  0x0a1: 'TPM_RC_RESERVED_BITS',
  0x0a2: 'TPM_RC_BAD_AUTH',
  0x0a3: 'TPM_RC_EXPIRED',
  0x0a4: 'TPM_RC_POLICY_CC',
  0x0a5: 'TPM_RC_BINDING',
  0x0a6: 'TPM_RC_CURVE',
  0x0a7: 'TPM_RC_ECC_POINT',
  // warnings (RC_WARN = 0x900)
  0x901: 'TPM_RC_CONTEXT_GAP',
  0x902: 'TPM_RC_OBJECT_MEMORY',
  0x903: 'TPM_RC_SESSION_MEMORY',
  0x904: 'TPM_RC_MEMORY',
  0x905: 'TPM_RC_SESSION_HANDLES',
  0x906: 'TPM_RC_OBJECT_HANDLES',
  0x907: 'TPM_RC_LOCALITY',
  0x908: 'TPM_RC_YIELDED',
  0x909: 'TPM_RC_CANCELED',
  0x90a: 'TPM_RC_TESTING',
  0x910: 'TPM_RC_REFERENCE_H0',
  0x918: 'TPM_RC_REFERENCE_S0',
  0x920: 'TPM_RC_NV_RATE',
  0x921: 'TPM_RC_LOCKOUT',
  0x922: 'TPM_RC_RETRY',
  0x923: 'TPM_RC_NV_UNAVAILABLE',
};

/** Where a format-1 error points. */
export type RcLocation =
  | { kind: 'handle'; index: number }
  | { kind: 'parameter'; index: number }
  | { kind: 'session'; index: number }
  | { kind: 'none' };

export interface DecodedRc {
  /** The code with location bits removed (e.g. 0x08E for TPM_RC_AUTH_FAIL). */
  base: number;
  name: string;
  format: 0 | 1;
  warning: boolean;
  location: RcLocation;
}

/** Splits a response code into its base code, name and location (handle/parameter/session number). */
export function decodeRc(rc: number): DecodedRc {
  if (rc & 0x080) {
    const base = 0x080 | (rc & 0x03f);
    let location: RcLocation;
    if (rc & 0x040) location = { kind: 'parameter', index: (rc >> 8) & 0xf };
    else if (rc & 0x800) location = { kind: 'session', index: (rc >> 8) & 0x7 };
    else location = (rc >> 8) & 0x7 ? { kind: 'handle', index: (rc >> 8) & 0x7 } : { kind: 'none' };
    return { base, name: RC_NAMES[base] ?? `TPM_RC_FMT1_0x${base.toString(16)}`, format: 1, warning: false, location };
  }
  if (rc & 0x400) {
    // vendor-defined (bit 10, TCG-defined bit clear)
    return { base: rc, name: `TPM_RC_VENDOR_0x${rc.toString(16)}`, format: 0, warning: false, location: { kind: 'none' } };
  }
  const warning = (rc & 0x900) === 0x900;
  const name = RC_NAMES[rc] ?? `TPM_RC_0x${rc.toString(16).padStart(3, '0')}`;
  return { base: rc, name, format: 0, warning, location: { kind: 'none' } };
}

/** The TPM answered a command with a non-zero response code. */
export class TpmError extends Error {
  /** The raw response code. */
  readonly rc: number;
  /** The base code without location bits (compare against RC constants). */
  readonly base: number;
  /** e.g. 'TPM_RC_AUTH_FAIL'. */
  readonly rcName: string;
  readonly warning: boolean;
  readonly location: RcLocation;
  /** The command that failed, e.g. 'Sign'. */
  readonly command: string;

  constructor(rc: number, command: string) {
    const d = decodeRc(rc);
    const where = d.location.kind === 'none' ? '' : ` (${d.location.kind} ${d.location.index})`;
    super(`TPM2_${command} failed: ${d.name} 0x${rc.toString(16)}${where}`);
    this.name = 'TpmError';
    this.rc = rc;
    this.base = d.base;
    this.rcName = d.name;
    this.warning = d.warning;
    this.location = d.location;
    this.command = command;
  }
}

/** Base codes callers compare against (TpmError.base). */
export const RC = {
  INITIALIZE: 0x100,
  FAILURE: 0x101,
  AUTH_MISSING: 0x125,
  NV_LOCKED: 0x148,
  NV_AUTHORIZATION: 0x149,
  NV_UNINITIALIZED: 0x14a,
  NV_SPACE: 0x14b,
  NV_DEFINED: 0x14c,
  NV_RANGE: 0x146,
  POLICY: 0x126,
  ATTRIBUTES: 0x082,
  HASH: 0x083,
  VALUE: 0x084,
  KEY_SIZE: 0x087,
  TYPE: 0x08a,
  HANDLE: 0x08b,
  AUTH_FAIL: 0x08e,
  SCHEME: 0x092,
  SIZE: 0x095,
  SYMMETRIC: 0x096,
  KEY: 0x09c,
  POLICY_FAIL: 0x09d,
  INTEGRITY: 0x09f,
  BAD_AUTH: 0x0a2,
  CURVE: 0x0a6,
  ECC_POINT: 0x0a7,
  OBJECT_MEMORY: 0x902,
  SESSION_MEMORY: 0x903,
  YIELDED: 0x908,
  TESTING: 0x90a,
  REFERENCE_H0: 0x910,
  REFERENCE_S0: 0x918,
  NV_RATE: 0x920,
  LOCKOUT: 0x921,
  RETRY: 0x922,
} as const;

/** Wrong authorization on a DA-protected entity (TPM_RC_AUTH_FAIL) or on a noDA one (TPM_RC_BAD_AUTH). */
export function isAuthFail(e: unknown): e is TpmError {
  return e instanceof TpmError && (e.base === RC.AUTH_FAIL || e.base === RC.BAD_AUTH);
}

/** The TPM is in dictionary-attack lockout; use Tpm.dictionaryAttackInfo() for the recovery time. */
export function isLockout(e: unknown): e is TpmError {
  return e instanceof TpmError && e.base === RC.LOCKOUT;
}

/** Codes after which the same command should simply be sent again. */
export function isRetryable(rc: number): boolean {
  return rc === RC.RETRY || rc === RC.YIELDED || rc === RC.TESTING;
}

export type TpmTransportErrorCode =
  | 'TCTI_SYNTAX' // the TCTI string cannot be parsed
  | 'NO_RESOURCE_MANAGER' // /dev/tpm0 refused
  | 'OPEN_FAILED' // device or socket cannot be opened
  | 'TIMEOUT' // no complete response within the timeout
  | 'CLOSED' // the peer closed the connection or the transport was closed
  | 'IO' // read/write error
  | 'MALFORMED' // truncated, oversized, or inconsistent response framing
  | 'TOO_LARGE'; // command larger than the transport accepts

/** The bytes could not be exchanged with the TPM (not a TPM response code). */
export class TpmTransportError extends Error {
  readonly code: TpmTransportErrorCode;
  constructor(code: TpmTransportErrorCode, message: string, options?: { cause?: unknown }) {
    super(`TPM transport ${code}: ${message}`, options);
    this.name = 'TpmTransportError';
    this.code = code;
  }
}

export type TpmProtocolErrorCode =
  | 'BAD_RESPONSE' // the response body does not parse
  | 'RESPONSE_HMAC' // the response HMAC does not verify
  | 'SALT_KEY_MISMATCH' // the TPM's storage root key is not the pinned one
  | 'OWNER_AUTH_REQUIRED' // the owner hierarchy has a password and TpmOptions.ownerAuth is empty
  | 'OWNER_AUTH_REFUSED' // the owner hierarchy has a password and TpmOptions.ownerAuth is not it
  | 'OWNER_AUTH_NOT_SET' // TpmOptions.ownerAuth is given but the owner hierarchy has no password
  | 'BAD_INPUT' // the caller passed an unusable value
  | 'UNSUPPORTED'; // not implemented by this library

/** The library refused an exchange: a response that does not parse or verify, a pinning mismatch, bad input. */
export class TpmProtocolError extends Error {
  readonly code: TpmProtocolErrorCode;
  constructor(code: TpmProtocolErrorCode, message: string, options?: { cause?: unknown }) {
    super(`TPM ${code}: ${message}`, options);
    this.name = 'TpmProtocolError';
    this.code = code;
  }
}
