import type { TpmTransport } from './transport.js';

/** Options of Tpm.open(). Every field has a default. */
export interface TpmOptions {
  /**
   * TCTI-style transport string: 'device:/dev/tpmrm0' (default), 'device', '/dev/tpmrmN',
   * 'swtpm:host=127.0.0.1,port=2321'. '/dev/tpm0' (no resource manager) is refused.
   */
  tcti?: string;
  /** An already-built transport (tests); overrides `tcti`. */
  transport?: TpmTransport;
  /** Per-command timeout in ms. Default 30 000 for a device, 10 000 for swtpm. RSA key generation (Create / CreatePrimary) always gets at least 120 000. After a timeout the connection is closed and reopened by the next command. */
  timeoutMs?: number;
  /** How often a command answered with RETRY/YIELDED/TESTING is resubmitted. Default 20. */
  maxRetries?: number;
  /**
   * Pinned name of the storage root key that salts sessions (from Tpm.storageRootName() at
   * enrolment). When set, a TPM presenting another SRK is refused with SALT_KEY_MISMATCH.
   */
  expectedSrkName?: Uint8Array;
  /**
   * Flush leftover transient objects and sessions at connect. Default: true on transports
   * without a resource manager (swtpm), false on /dev/tpmrm0 (nothing to flush).
   */
  flushLeftovers?: boolean;
  /**
   * The owner hierarchy's authValue (what `tpm2_changeauth -c owner` set), for the storage root
   * key's CreatePrimary. Default empty. It never goes on the wire in clear: it keys an HMAC in a
   * salted session. Callers pass it themselves to the owner-authorized commands they send
   * (EvictControl, NV_DefineSpace...).
   */
  ownerAuth?: Uint8Array;
}

/** How a command's authorization is given. */
export interface AuthOptions {
  /** The entity's authValue (PIN-derived, key auth...). Default empty. */
  auth?: Uint8Array;
  /**
   * 'salted' (default for secret-bearing commands): the shared salted HMAC session with AES-CFB
   * parameter encryption; 'password': TPM_RS_PW (auth in clear on the wire; only for empty or
   * public auth values); or a policy session started with Tpm.startPolicySession().
   */
  session?: 'salted' | 'password' | PolicySessionRef;
  /**
   * Parameter encryption through a salted session. Default: on for commands whose first
   * parameter or result is secret (sensitive data, auth values, digests to sign, decrypted or
   * unsealed data, NV data read or written with an auth); `true` also turns it on where it is
   * merely possible (e.g. NV_Read with owner auth); `false` turns it off.
   */
  encrypt?: boolean;
}

/** A policy session the caller started (Tpm.startPolicySession). Flush it when done. */
export interface PolicySessionRef {
  readonly kind: 'policy';
  readonly handle: number;
  /** The session hash algorithm. */
  readonly hashAlg: number;
}
