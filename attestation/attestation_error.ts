/**
 * Typed failures of attestation (enrolment with the CA, certificate issuance, verification).
 * `reason` says what went wrong in a word; the message says it for a person. Never a secret.
 */
import { TpmvscError, type ErrorCode } from '../common/errors.js';

export type AttestationErrorReason =
  /** No EK certificate in the TPM's NV (or none this project can use). */
  | 'NO_EK_CERTIFICATE'
  /** The attestation CA cannot be reached or answered nonsense. */
  | 'CA_UNREACHABLE'
  /** The CA refused the request (its message is kept). */
  | 'CA_REFUSED'
  /** A certificate or evidence does not verify. */
  | 'VERIFY_FAILED'
  /** Malformed input (certificate, extension, request). */
  | 'BAD_INPUT';

const TABLE_CODE: Record<AttestationErrorReason, ErrorCode> = {
  NO_EK_CERTIFICATE: 'CREATE_FAILED',
  CA_UNREACHABLE: 'CREATE_FAILED',
  CA_REFUSED: 'CREATE_FAILED',
  VERIFY_FAILED: 'ATTESTATION_INVALID',
  BAD_INPUT: 'BAD_REQUEST',
};

export class AttestationError extends TpmvscError {
  readonly reason: AttestationErrorReason;

  constructor(reason: AttestationErrorReason, detail: string, options?: { cause?: unknown }) {
    super(TABLE_CODE[reason], detail, options);
    this.name = 'AttestationError';
    this.reason = reason;
  }
}
