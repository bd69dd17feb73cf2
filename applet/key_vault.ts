/**
 * The key vault: the only thing the card application talks to for private-key work
 * and for the secrets that guard keys (PIN, PUK, management key).
 *
 * Production uses the TPM vault (vault/tpm_vault.ts): private keys are TPM objects
 * that never leave the TPM, the PIN and PUK are checked by the TPM (its
 * dictionary-attack protection counts the guesses) and the retry counters live in TPM
 * NV so that restoring old files cannot roll them back. Unit tests may use an
 * in-memory vault; it must never be selectable in production.
 *
 * Persistence: a vault mutates its own state (sealed blobs, handles) and reports it
 * through `state()`. The card application stores that JSON value inside its own card
 * state and saves both atomically before it reports success. Retry counters are NOT
 * part of that state: they live in the vault's tamper-resistant storage.
 */

/** Key algorithms the card supports (PIV algorithm identifiers in comments). */
export type KeyAlgorithm =
  | 'rsa2048' // 0x07
  | 'eccp256' // 0x11
  | 'eccp384'; // 0x14

export type PublicKey =
  | { algorithm: 'rsa2048'; modulus: Uint8Array; publicExponent: Uint8Array }
  | { algorithm: 'eccp256' | 'eccp384'; /** uncompressed point 04 || X || Y */ point: Uint8Array };

/**
 * Who may use a key. 'pin': only after the PIN has unlocked the vault (VERIFY);
 * 'none': usable without PIN (slot 9E by default, or PIN policy "never").
 * The card application enforces the finer per-slot policy (once / always) itself.
 */
export type KeyAuthorization = 'pin' | 'none';

/** A private key held by the vault, as the card application persists it. */
export interface KeyRecord {
  algorithm: KeyAlgorithm;
  origin: 'generated' | 'imported';
  authorization: KeyAuthorization;
  publicKey: PublicKey;
  /** Vault-specific wrapped form (for the TPM: TPM2B_PUBLIC || TPM2B_PRIVATE), base64. */
  wrapped: string;
}

/** A private key that arrives from outside (PIV IMPORT KEY) to be moved into the vault. */
export type ImportedKey =
  | {
      algorithm: 'rsa2048';
      /** CRT components as big-endian unsigned integers. */
      p: Uint8Array;
      q: Uint8Array;
      dp: Uint8Array;
      dq: Uint8Array;
      qinv: Uint8Array;
    }
  | { algorithm: 'eccp256' | 'eccp384'; /** private scalar, big-endian */ d: Uint8Array };

/** Management-key (9B) algorithms: PIV identifiers 03 (3DES), 08, 0A, 0C (AES). */
export type ManagementKeyAlgorithm = 'tdes' | 'aes128' | 'aes192' | 'aes256';

export interface ManagementKey {
  algorithm: ManagementKeyAlgorithm;
  /** The key itself. The caller overwrites it with zeros as soon as it is done. */
  key: Uint8Array;
}

export interface RetryStatus {
  /** Tries configured (reported by GET METADATA). */
  total: number;
  /** Tries left before the reference is blocked; 0 = blocked. */
  remaining: number;
  /** The value is still the card's default (reported by GET METADATA). */
  isDefault: boolean;
}

/** Result of a PIN or PUK check. */
export type CheckResult =
  | { ok: true }
  /** Wrong value: `remaining` tries are left (0 means it is now blocked). */
  | { ok: false; reason: 'wrong'; remaining: number }
  /** Blocked before this try: nothing was checked. */
  | { ok: false; reason: 'blocked' }
  /** The TPM is in dictionary-attack lockout: nothing was checked; retry after `recoverySeconds`. */
  | { ok: false; reason: 'lockout'; recoverySeconds: number };

export interface KeyVault {
  /** The vault's persistent state (JSON), to be stored with the card state. */
  state(): unknown;
  /**
   * A number that changes whenever state() would return something different, so the card
   * application can skip state() (a deep copy) on every signature. Equal numbers mean equal
   * states; a new number may still come with an equal state. Not persisted: it starts at any
   * value when a vault is opened, so compare it only with values read from the same object.
   */
  revision(): number;
  /**
   * Optional: the card application calls this once the state last returned by state() is
   * durable. The vault may then finish what had to wait for the files (the TPM vault retires
   * superseded PIN/PUK objects here); if state() changes again, the caller saves it again.
   */
  persisted?(): Promise<void>;

  // --- keys -----------------------------------------------------------------
  /** Creates a new key in the vault; the private part never leaves it. */
  generateKey(algorithm: KeyAlgorithm, authorization: KeyAuthorization): Promise<KeyRecord>;
  /** Moves an external private key into the vault; the caller then wipes its copy. */
  importKey(key: ImportedKey, authorization: KeyAuthorization): Promise<KeyRecord>;
  /** Raw RSA private operation on a block of exactly the modulus length (the host pads). */
  rsaPrivate(key: KeyRecord, block: Uint8Array): Promise<Uint8Array>;
  /**
   * ECDSA over a hash of any length (truncated or left-padded to the field size as
   * ECDSA's bits2int does). Returns DER SEQUENCE { r INTEGER, s INTEGER }.
   */
  ecdsaSign(key: KeyRecord, hash: Uint8Array): Promise<Uint8Array>;
  /** ECDH: the X coordinate of d * peerPoint (peerPoint uncompressed 04||X||Y). */
  ecdh(key: KeyRecord, peerPoint: Uint8Array): Promise<Uint8Array>;
  /** Forgets a key (slot overwritten or deleted). */
  deleteKey(key: KeyRecord): Promise<void>;

  // --- PIN, PUK and the unlocked session -----------------------------------
  /** True once verifyPin succeeded and until lock(). Keys with authorization 'pin' need it. */
  readonly unlocked: boolean;
  /**
   * Checks the PIN. The retry counter is decremented durably BEFORE the check and
   * restored on success. On success the vault is unlocked.
   */
  verifyPin(pin: Uint8Array): Promise<CheckResult>;
  /** Forgets the unlocked state (logout, power off, reset). */
  lock(): void;
  pinStatus(): Promise<RetryStatus>;
  /** Undefined when the card has no PUK. */
  pukStatus(): Promise<RetryStatus | undefined>;
  /** CHANGE REFERENCE DATA for the PIN: checks `oldPin` (counts as a try), then sets `newPin`. */
  changePin(oldPin: Uint8Array, newPin: Uint8Array): Promise<CheckResult>;
  /** CHANGE REFERENCE DATA for the PUK. */
  changePuk(oldPuk: Uint8Array, newPuk: Uint8Array): Promise<CheckResult>;
  /** RESET RETRY COUNTER with the PUK: checks the PUK (counts as a try), sets `newPin`, PIN tries to total. */
  unblockPinWithPuk(puk: Uint8Array, newPin: Uint8Array): Promise<CheckResult>;
  /**
   * RESET RETRY COUNTER after management-key authentication, only for a card without
   * a PUK (Windows virtual smart card semantics). Throws on a card with a PUK.
   */
  unblockPinWithAdmin(newPin: Uint8Array): Promise<void>;
  /** SET PIN RETRIES: new totals, PIN and PUK reset to the given values, counters full. */
  setRetries(pinTries: number, pukTries: number, pin: Uint8Array, puk: Uint8Array | undefined): Promise<void>;

  // --- PIN-protected data objects -------------------------------------------
  /**
   * Seals the value of a data object whose read rule is 'pin' (data_objects.ts) for storage in
   * the card state; works while locked (PUT DATA needs the management key, not the PIN). Every
   * call gives a new sealed form, even for the same value. `objectTag` binds it to its object.
   */
  sealObject(objectTag: number, value: Uint8Array): Promise<string>;
  /**
   * Opens what sealObject made for the same object; needs the vault unlocked (VERIFY), throws
   * otherwise. The caller wipes the value once it has answered with it.
   */
  openObject(objectTag: number, sealed: string): Promise<Uint8Array>;

  // --- management key (9B) ---------------------------------------------------
  /** Unseals the management key for one authentication; the caller wipes it after use. */
  managementKey(): Promise<ManagementKey>;
  /** Seals a new management key (SET MANAGEMENT KEY). */
  setManagementKey(key: ManagementKey): Promise<void>;

  // --- whole card ------------------------------------------------------------
  /**
   * RESET (token extension): every key in the vault becomes unusable for good, PIN,
   * PUK and management key get the given values, counters full, vault locked.
   */
  resetCard(pin: Uint8Array, puk: Uint8Array | undefined, managementKey: ManagementKey): Promise<void>;
  /** Destroys the card for good: keys, sealed secrets and counters are gone, even from backups. */
  destroy(): Promise<void>;
}
