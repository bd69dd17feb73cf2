/**
 * The one table of ISO 7816-4 status words the PIV card application answers with
 * (ISO/IEC 7816-4 §5.6, NIST SP 800-73-4 Part 2 §3 and the Yubico extensions).
 * Parametrised words (61xx, 63Cx, 6Cxx) are built by the helpers below.
 */
export const SW = {
  SUCCESS: 0x9000,
  /** 6581: the card state could not be saved; the command had no effect. */
  MEMORY_FAILURE: 0x6581,
  WRONG_LENGTH: 0x6700,
  /** 6882: secure messaging is not supported. */
  SECURE_MESSAGING_NOT_SUPPORTED: 0x6882,
  /** 6883: the last command of a chain was expected. */
  LAST_COMMAND_EXPECTED: 0x6883,
  /** 6884: this instruction cannot be chained. */
  CHAINING_NOT_SUPPORTED: 0x6884,
  SECURITY_STATUS_NOT_SATISFIED: 0x6982,
  AUTH_METHOD_BLOCKED: 0x6983,
  CONDITIONS_NOT_SATISFIED: 0x6985,
  WRONG_DATA: 0x6a80,
  FUNCTION_NOT_SUPPORTED: 0x6a81,
  FILE_NOT_FOUND: 0x6a82,
  NOT_ENOUGH_MEMORY: 0x6a84,
  INCORRECT_P1P2: 0x6a86,
  REFERENCE_NOT_FOUND: 0x6a88,
  INS_NOT_SUPPORTED: 0x6d00,
  CLA_NOT_SUPPORTED: 0x6e00,
  NO_PRECISE_DIAGNOSIS: 0x6f00,
} as const;

export type StatusWordName = keyof typeof SW;
export type StatusWord = number;

/** 61xx: xx more bytes wait for GET RESPONSE (00 = 256 or more). */
export function moreData(remaining: number): StatusWord {
  return 0x6100 | Math.min(remaining, 256) % 256;
}

/** 63Cx: wrong PIN or PUK, x tries left (capped at 15, the nibble's range). */
export function triesLeft(remaining: number): StatusWord {
  return 0x63c0 | Math.min(Math.max(remaining, 0), 15);
}

/** 6Cxx: wrong Le, xx is the exact length to ask for (00 = 256). */
export function wrongLe(exact: number): StatusWord {
  return 0x6c00 | exact % 256;
}

/** The name of a status word, for test messages and diagnostics. */
export function statusWordName(sw: StatusWord): string {
  for (const [name, value] of Object.entries(SW)) if (value === sw) return name;
  const high = sw >> 8;
  if (high === 0x61) return `MORE_DATA(${sw & 0xff})`;
  if (high === 0x6c) return `WRONG_LE(${sw & 0xff})`;
  if ((sw & 0xfff0) === 0x63c0) return `TRIES_LEFT(${sw & 0x0f})`;
  return `SW_${sw.toString(16).padStart(4, '0').toUpperCase()}`;
}

export interface CardErrorOptions {
  /**
   * A refusal an administrator should hear of (e.g. RESET without the management key): the
   * card application reports it with `detail` as the reason. Not for what clients do all day
   * (an absent object, a wrong PIN, which has its own counter).
   */
  audit?: boolean;
}

/** A failure that ends a command with a status word; handlers throw it. */
export class CardError extends Error {
  readonly sw: StatusWord;
  /** Why, safe to show (never a secret). */
  readonly detail: string | undefined;
  readonly audit: boolean;

  constructor(sw: StatusWord, detail?: string, options: CardErrorOptions = {}) {
    super(detail ? `${statusWordName(sw)}: ${detail}` : statusWordName(sw));
    this.name = 'CardError';
    this.sw = sw;
    this.detail = detail;
    this.audit = options.audit ?? false;
  }
}
