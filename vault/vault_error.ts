/**
 * Typed failures of the key vault. `reason` is what the card application switches on
 * (e.g. 'PIN_REQUIRED' becomes SW 6982); the inherited `code` places the failure in the
 * project's error table for logs and exit codes. Messages never carry a secret.
 */
import { TpmvscError, type ErrorCode } from '../common/errors.js';

export type VaultErrorReason =
  /** A key with authorization 'pin' was used while the vault is locked. */
  | 'PIN_REQUIRED'
  /** An argument has the wrong length or shape (block size, point, key parts). */
  | 'BAD_INPUT'
  /** An imported key is malformed or inconsistent. */
  | 'BAD_KEY'
  /** The persisted vault state is malformed or belongs to another TPM / card parent. */
  | 'BAD_STATE'
  /** The operation needs a PUK-less card (unblockPinWithAdmin on a card with a PUK) or the reverse. */
  | 'WRONG_CARD_KIND'
  /** The card was destroyed; the vault cannot be used any more. */
  | 'DESTROYED'
  /** The TPM is in dictionary-attack lockout. */
  | 'LOCKOUT'
  /** The TPM refused or failed a command. */
  | 'TPM';

const TABLE_CODE: Record<VaultErrorReason, ErrorCode> = {
  PIN_REQUIRED: 'AUTH_FAILED',
  BAD_INPUT: 'BAD_REQUEST',
  BAD_KEY: 'BAD_REQUEST',
  BAD_STATE: 'INTERNAL',
  WRONG_CARD_KIND: 'NOT_PERMITTED',
  DESTROYED: 'NOT_FOUND',
  LOCKOUT: 'TPM_LOCKOUT',
  TPM: 'TPM_FAILURE',
};

export class VaultError extends TpmvscError {
  readonly reason: VaultErrorReason;

  constructor(reason: VaultErrorReason, detail: string, options?: { cause?: unknown }) {
    super(TABLE_CODE[reason], detail, options);
    this.name = 'VaultError';
    this.reason = reason;
  }
}
