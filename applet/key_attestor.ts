/**
 * Optional key attestation (Yubico ATTEST, INS F9): proves that a key was generated
 * inside the card. Without an attestor the card answers ATTEST with 6A81.
 */
import type { KeyRecord } from './key_vault.js';
import type { SlotPinPolicy } from './key_slots.js';

export interface AttestationSubject {
  /** Key reference, e.g. 0x9a. */
  slot: number;
  key: KeyRecord;
  pinPolicy: SlotPinPolicy;
  touchPolicy: number;
  /** GET SERIAL of the card. */
  serial: number;
}

export interface KeyAttestor {
  /**
   * False when the card cannot attest right now (e.g. its attestation key went with a
   * RESET): ATTEST then answers 6A81 like a card without attestation.
   */
  available?(): boolean;
  /** Returns a DER X.509 certificate (starts with 30) for the subject's public key. */
  attest(subject: AttestationSubject): Promise<Uint8Array>;
}
