/**
 * The one error table of tpmvsc. Every failure that crosses a boundary (control API,
 * CLI exit code, log line) has a stable code here, with the exit code tpmvscmgr uses
 * for it and the one-line message people read. Card-level errors (ISO 7816 status
 * words) live in applet/status_words.ts; the TPM's own response codes in tpm/errors.ts.
 *
 * Exit codes (documented in the README and in `tpmvscmgr /?`):
 *   0 ok · 1 other failure · 2 usage · 3 not permitted · 4 daemon not running
 *   5 TPM missing, failing or locked out · 6 reader limit reached · 7 not found
 *   8 not supported yet · 9 PIN/PUK/admin key rejected by policy or card
 *   10 /machine: the computer cannot be reached or logged in to over SSH
 *   11 /machine: tpmvsc (tpmvscmgr) is not installed on that computer
 *   12 tpmvscd: the vpcd reader ports are not guarded against other local users (daemon/vpcd_guard.ts)
 */

export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  notPermitted: 3,
  daemonNotRunning: 4,
  tpm: 5,
  readerLimit: 6,
  notFound: 7,
  notSupported: 8,
  rejected: 9,
  remoteUnreachable: 10,
  remoteNotInstalled: 11,
  vpcdUnguarded: 12,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

interface ErrorRow {
  exit: ExitCode;
  /** The message people read; a caller may append a detail after ': '. */
  message: string;
}

export const ERROR_TABLE = {
  USAGE: { exit: EXIT.usage, message: 'Invalid command line' },
  NOT_PERMITTED: {
    exit: EXIT.notPermitted,
    message: 'Access denied: run as root or as a member of the tpmvsc group',
  },
  DAEMON_NOT_RUNNING: {
    exit: EXIT.daemonNotRunning,
    message: 'The tpmvscd daemon is not running',
  },
  TPM_UNAVAILABLE: { exit: EXIT.tpm, message: 'The TPM is not available' },
  TPM_LOCKOUT: { exit: EXIT.tpm, message: 'The TPM is in dictionary-attack lockout' },
  TPM_FAILURE: { exit: EXIT.tpm, message: 'The TPM failed the operation' },
  TPM_OWNER_AUTH: { exit: EXIT.tpm, message: "The TPM refused the owner hierarchy's authorization" },
  TPM_ENDORSEMENT_AUTH: { exit: EXIT.tpm, message: "The TPM refused the endorsement hierarchy's authorization" },
  TPM_PASSWORD_FILE: { exit: EXIT.usage, message: 'A TPM password file cannot be used' },
  READER_LIMIT: {
    exit: EXIT.readerLimit,
    message: 'The limit on the number of Smart Card Readers has been reached.',
  },
  NOT_FOUND: { exit: EXIT.notFound, message: 'No virtual smart card has that instance ID' },
  NOT_SUPPORTED: { exit: EXIT.notSupported, message: 'Not supported yet' },
  PIN_POLICY: {
    exit: EXIT.rejected,
    message: 'Ensure that your PIN/PUK meets the length or complexity requirements of your organization.',
  },
  AUTH_FAILED: { exit: EXIT.rejected, message: 'The card rejected the PIN, PUK or admin key' },
  BAD_REQUEST: { exit: EXIT.usage, message: 'Invalid request' },
  TOO_MANY_CONNECTIONS: {
    exit: EXIT.failure,
    message: 'tpmvscd has too many open control connections',
  },
  CREATE_FAILED: { exit: EXIT.failure, message: 'Unable to create TPM Smart Card.' },
  READER_NOT_SERVED: { exit: EXIT.failure, message: 'The new card did not appear in its reader; nothing was kept' },
  ATTESTATION_INVALID: { exit: EXIT.failure, message: 'The attestation does not verify' },
  INTERNAL: { exit: EXIT.failure, message: 'Internal error' },
  REMOTE_UNREACHABLE: { exit: EXIT.remoteUnreachable, message: 'Cannot reach the computer over SSH' },
  REMOTE_NOT_INSTALLED: { exit: EXIT.remoteNotInstalled, message: 'tpmvsc is not installed on the computer' },
  VPCD_UNGUARDED: { exit: EXIT.vpcdUnguarded, message: 'The vpcd reader ports are not guarded against other local users' },
} as const satisfies Record<string, ErrorRow>;

export type ErrorCode = keyof typeof ERROR_TABLE;

/** An error with a stable code from ERROR_TABLE; `detail` is safe to show (never a secret). */
export class TpmvscError extends Error {
  readonly code: ErrorCode;
  readonly detail: string | undefined;

  constructor(code: ErrorCode, detail?: string, options?: { cause?: unknown }) {
    // Windows' own messages end with a full stop: drop it before the detail ("...Card: detail").
    super(detail ? `${ERROR_TABLE[code].message.replace(/\.$/, '')}: ${detail}` : ERROR_TABLE[code].message, options);
    this.name = 'TpmvscError';
    this.code = code;
    this.detail = detail;
  }

  get exitCode(): ExitCode {
    return ERROR_TABLE[this.code].exit;
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERROR_TABLE, value);
}
