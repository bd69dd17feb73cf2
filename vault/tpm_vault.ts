/**
 * The production key vault: card keys and the secrets that guard them live in the TPM.
 * docs/ARCHITECTURE.md ("Key vault") draws the key hierarchy and what the TPM checks.
 *
 *   TpmVault.create(tpm, { pin, puk, managementKey, pinTries, pukTries })   a new card
 *   TpmVault.open(tpm, savedState)                                        an existing card
 *
 * Every method that touches the TPM runs under the connection's exclusive lock
 * (loaded_objects.ts) so that several cards can share one TPM connection.
 */
import { createECDH, randomBytes } from 'node:crypto';
import {
  TPM_ALG,
  RC,
  TpmError,
  isAuthFail,
  isLockout,
  objectName,
  parsePublic2b,
  type KeyBlob,
  type LoadedObject,
  type Tpm,
  type TpmEntity,
  type TpmPublic,
} from '../tpm/index.js';
import type {
  CheckResult,
  ImportedKey,
  KeyAlgorithm,
  KeyAuthorization,
  KeyRecord,
  KeyVault,
  ManagementKey,
  RetryStatus,
} from '../applet/key_vault.js';
import { normaliseHash, ecdsaSignatureDer } from './ecdsa_encoding.js';
import { aikTemplate, CERTIFY_POLICY_DIGEST, type AttestationKeyPublic, type EndorsementKeySource, type KeyCertification } from './attestation_key.js';
import { activateWithLoadedAik, certifyWithLoadedAik, signWithLoadedAik } from './attestation_operations.js';
import { boxEphemeralPoint, KEY_AUTH_BYTES, openKeyAuth, sealKeyAuth } from './key_auth_box.js';
import { objectBoxEphemeralPoint, openObjectBox, sealObjectBox } from './object_box.js';
import { CURVES, RSA_MODULUS_BYTES, keyTemplate } from './key_templates.js';
import {
  createCardParent,
  DEFAULT_TRIES,
  evictQuietly,
  isDefaultSecret,
  SECRET_BYTES,
  nvAuthFrom,
  provision,
  sealGenerationObject,
  sealManagementObject,
  undefineQuietly,
  unsealWith,
  type Provisioned,
} from './card_provisioning.js';
import { checkManagementKey, decodeManagementKey, encodeManagementKey } from './management_key_encoding.js';
import { leftPad, publicKeyOf } from './tpm_public_key.js';
import { LoadedObjects } from './loaded_objects.js';
import { deriveAuthValue, secretsEqual, type SecretPurpose } from './pin_auth.js';
import { CounterIndex, checkTries, type GenerationPurpose, type RetryCounters } from './retry_counters.js';
import { staleObjectError, unsealWithGeneration } from './pin_generation.js';
import { rsaPublicFromCrt } from './rsa_crt.js';
import { VaultError } from './vault_error.js';
import { RevisionedState } from './revisioned_state.js';
import { parseVaultState, type TpmVaultState } from './vault_state.js';
import { decodeWrapped, encodeWrapped, type WrappedObject } from './wrapped_blob.js';

/** What a new card starts with. */
export interface TpmVaultInit {
  pin: Uint8Array;
  /** Undefined: a card without PUK (the PIN is unblocked after management-key authentication). */
  puk: Uint8Array | undefined;
  managementKey: ManagementKey;
  /** Default 5 (Windows virtual smart cards). */
  pinTries?: number;
  /** Default 5. */
  pukTries?: number;
}

export interface TpmVaultOptions {
  /** Owner hierarchy authorization (EvictControl, NV define/undefine). Default empty. */
  ownerAuth?: Uint8Array;
  /** Key objects kept loaded between operations, shared by all cards on this connection. */
  cacheCapacity?: number;
  /** Values reported as "default" by pinStatus / pukStatus. Default: common/pin_rules.ts. */
  defaultPin?: Uint8Array;
  defaultPuk?: Uint8Array;
}

/** PIN and PUK status from one read of the counter index (TpmVault.retryStatus). */
export interface RetryStatuses {
  pin: RetryStatus;
  /** Undefined when the card has no PUK. */
  puk: RetryStatus | undefined;
}

/** Longest PIN or PUK value the vault takes. */
const MAX_SECRET_LENGTH = 255;

/** Where each generation-bound object sits in the state (live, pending) and in NV (settleGenerations). */
const GENERATION_FIELDS = {
  pin: { live: 'pin', next: 'pinNext', generation: 'pinGeneration', nv: 'pinGeneration' },
  puk: { live: 'puk', next: 'pukNext', generation: 'pukGeneration', nv: 'pukGeneration' },
  management: { live: 'managementKey', next: 'managementKeyNext', generation: 'managementKeyGeneration', nv: 'managementGeneration' },
} as const;
const GENERATION_PURPOSES: readonly GenerationPurpose[] = ['pin', 'puk', 'management'];

function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('hex');
}

function fromB64(text: string): Uint8Array {
  return new Uint8Array(Buffer.from(text, 'base64'));
}


function checkSecretValue(value: Uint8Array, what: string): void {
  if (!(value instanceof Uint8Array) || value.length === 0 || value.length > MAX_SECRET_LENGTH) {
    throw new VaultError('BAD_INPUT', `${what} must be 1 to ${MAX_SECRET_LENGTH} bytes`);
  }
}


/** Wraps TPM failures in the vault's typed error; the message names the TPM code, never a value. */
function asVaultError(e: unknown, what: string): unknown {
  if (e instanceof VaultError) return e;
  if (isLockout(e)) return new VaultError('LOCKOUT', what, { cause: e });
  if (e instanceof TpmError) return new VaultError('TPM', `${what}: ${e.rcName} in TPM2_${e.command}`, { cause: e });
  if (e instanceof Error) return new VaultError('TPM', `${what}: ${e.message}`, { cause: e });
  return new VaultError('TPM', what);
}


export class TpmVault implements KeyVault {
  private readonly objects: LoadedObjects;
  /** The persisted state (state()); only persistent.change() writes it, and that bumps revision(). */
  private readonly persistent: RevisionedState<TpmVaultState>;
  private parent: TpmEntity;
  private counters: CounterIndex;
  /** Auth of 'none' keys; also derives the counter index's auth. Not a user secret. */
  private kFree: Uint8Array;
  /** Present while unlocked (after VERIFY): the auth of the user wrap key. */
  private kUser: Uint8Array | undefined;
  /** Per-key auths of 'pin' keys opened while unlocked (wiped on lock). */
  private readonly keyAuths = new Map<string, Uint8Array>();
  /**
   * Card parents and counter indices a RESET replaced: the files on disk still name them until
   * the new state is saved, so they are removed in persisted(), not in resetCard() (a crash in
   * between would leave files whose card no longer exists). Left over after a crash, they are
   * orphans for sweepOrphans at the next start.
   */
  private readonly retiring: Array<{ parent: TpmEntity; counters: CounterIndex }> = [];
  private destroyed = false;

  private constructor(
    private readonly tpm: Tpm,
    provisioned: Provisioned,
    private readonly options: TpmVaultOptions,
  ) {
    this.objects = LoadedObjects.for(tpm, options.cacheCapacity);
    this.persistent = new RevisionedState(provisioned.state);
    this.parent = { handle: provisioned.state.parent.handle, name: new Uint8Array(Buffer.from(provisioned.state.parent.name, 'hex')) };
    this.counters = provisioned.counters;
    this.kFree = provisioned.kFree;
  }

  // --- construction ----------------------------------------------------------------------

  /** Creates a new card: its persistent card parent, sealed secrets and counter NV index. */
  static async create(tpm: Tpm, init: TpmVaultInit, options: TpmVaultOptions = {}): Promise<TpmVault> {
    checkSecretValue(init.pin, 'PIN');
    if (init.puk !== undefined) checkSecretValue(init.puk, 'PUK');
    checkManagementKey(init.managementKey);
    const pinTries = init.pinTries ?? DEFAULT_TRIES;
    const pukTries = init.pukTries ?? DEFAULT_TRIES;
    checkTries(pinTries, 'PIN');
    checkTries(pukTries, 'PUK');
    const objects = LoadedObjects.for(tpm, options.cacheCapacity);
    const provisioned = await objects.exclusive(async () => {
      try {
        const parent = await createCardParent(tpm, objects, options);
        try {
          return await provision(tpm, objects, parent, init.pin, init.puk, init.managementKey, { pinTries, pukTries }, options);
        } catch (e) {
          await evictQuietly(tpm, parent, options);
          throw e;
        }
      } catch (e) {
        throw asVaultError(e, 'cannot create the card in the TPM');
      }
    });
    return new TpmVault(tpm, provisioned, options);
  }

  /** Opens an existing card from its persisted state; checks the card parent is the one recorded. */
  static async open(tpm: Tpm, saved: unknown, options: TpmVaultOptions = {}): Promise<TpmVault> {
    const state = parseVaultState(saved);
    const objects = LoadedObjects.for(tpm, options.cacheCapacity);
    const provisioned = await objects.exclusive(async () => {
      let name: Uint8Array;
      try {
        name = (await tpm.readPublic(state.parent.handle)).name;
      } catch (e) {
        if (e instanceof TpmError && (e.base === RC.HANDLE || e.base === RC.REFERENCE_H0)) {
          throw new VaultError('DESTROYED', 'the card parent is gone from the TPM (card destroyed or TPM cleared)', { cause: e });
        }
        throw asVaultError(e, 'cannot read the card parent');
      }
      if (hex(name) !== state.parent.name) {
        throw new VaultError('BAD_STATE', 'the persistent handle holds another key than this card parent');
      }
      const parent: TpmEntity = { handle: state.parent.handle, name };
      try {
        const kFree = await unsealWith(tpm, objects, parent, state.free, new Uint8Array(0));
        const counters = new CounterIndex(tpm, state.counters, nvAuthFrom(kFree));
        await counters.read();
        return { state, kFree, counters };
      } catch (e) {
        throw asVaultError(e, 'cannot open the card');
      }
    });
    return new TpmVault(tpm, provisioned, options);
  }

  state(): TpmVaultState {
    return this.persistent.snapshot();
  }

  revision(): number {
    return this.persistent.revision;
  }

  /** The persisted state, read-only: every change goes through this.persistent.change(). */
  private get vaultState(): RevisionedState<TpmVaultState>['value'] {
    return this.persistent.value;
  }

  get unlocked(): boolean {
    return this.kUser !== undefined;
  }

  /** The card parent's persistent handle and the counter NV index (diagnostics, tests). */
  get tpmResources(): { parentHandle: number; counterIndex: number } {
    return { parentHandle: this.vaultState.parent.handle, counterIndex: this.vaultState.counters };
  }

  // --- keys ------------------------------------------------------------------------------

  async generateKey(algorithm: KeyAlgorithm, authorization: KeyAuthorization): Promise<KeyRecord> {
    checkAlgorithm(algorithm);
    checkAuthorization(authorization);
    return this.run('cannot generate the key', async () => {
      const { auth, authBox } = this.newKeyAuth(authorization);
      const blob = await this.objects.withRoom(() =>
        this.tpm.create(this.parent, keyTemplate(algorithm, false), { userAuth: auth }, { session: 'salted' }),
      );
      return this.recordOf(algorithm, 'generated', authorization, blob, authBox);
    });
  }

  async importKey(key: ImportedKey, authorization: KeyAuthorization): Promise<KeyRecord> {
    checkAuthorization(authorization);
    const algorithm = key?.algorithm;
    checkAlgorithm(algorithm);
    let template: TpmPublic;
    let external: Parameters<Tpm['importKey']>[2];
    if (key.algorithm === 'rsa2048') {
      for (const part of [key.p, key.q, key.dp, key.dq, key.qinv]) {
        if (!(part instanceof Uint8Array) || part.length === 0 || part.length > RSA_MODULUS_BYTES / 2 + 1) {
          throw new VaultError('BAD_KEY', 'RSA CRT component has the wrong length');
        }
      }
      const { modulus, exponent } = rsaPublicFromCrt(key, RSA_MODULUS_BYTES);
      template = keyTemplate('rsa2048', true, { modulus, exponent });
      external = { type: 'rsa', n: modulus, e: exponent, p: leftPad(key.p, RSA_MODULUS_BYTES / 2) };
    } else {
      const curve = CURVES[key.algorithm];
      if (!(key.d instanceof Uint8Array) || key.d.length === 0 || key.d.length > curve.size) {
        throw new VaultError('BAD_KEY', 'EC private scalar has the wrong length');
      }
      const d = leftPad(key.d, curve.size);
      let point: Uint8Array;
      try {
        const ecdh = createECDH(curve.nodeName);
        ecdh.setPrivateKey(d);
        point = new Uint8Array(ecdh.getPublicKey());
      } catch (e) {
        throw new VaultError('BAD_KEY', 'EC private scalar is out of range', { cause: e });
      }
      const x = point.slice(1, 1 + curve.size);
      const y = point.slice(1 + curve.size);
      template = keyTemplate(key.algorithm, true, { x, y });
      external = { type: 'ecc', curveId: curve.curveId, d, x, y };
    }
    return this.run('cannot import the key', async () => {
      const { auth, authBox } = this.newKeyAuth(authorization);
      const blob = await this.objects.withRoom(() => this.tpm.importKey(this.parent, template, external, auth, { session: 'salted' }));
      return this.recordOf(algorithm, 'imported', authorization, blob, authBox);
    });
  }

  async rsaPrivate(key: KeyRecord, block: Uint8Array): Promise<Uint8Array> {
    if (key?.algorithm !== 'rsa2048') throw new VaultError('BAD_INPUT', 'not an RSA key');
    if (!(block instanceof Uint8Array) || block.length !== RSA_MODULUS_BYTES) {
      throw new VaultError('BAD_INPUT', `RSA block must be ${RSA_MODULUS_BYTES} bytes`);
    }
    // libtpms answers TPM_RC_FAILURE (not VALUE) to a block >= n: refuse it here.
    if (key.publicKey.algorithm === 'rsa2048' && Buffer.compare(block, leftPad(key.publicKey.modulus, RSA_MODULUS_BYTES)) >= 0) {
      throw new VaultError('BAD_INPUT', 'RSA block is not smaller than the modulus');
    }
    return this.run('RSA private operation failed', () =>
      this.withKey(key, async (object, auth) => {
        try {
          const result = await this.tpm.rsaDecrypt(object, block, { scheme: TPM_ALG.NULL }, undefined, { auth, session: 'salted' });
          return leftPad(result, RSA_MODULUS_BYTES);
        } catch (e) {
          if (e instanceof TpmError && (e.base === RC.VALUE || e.base === RC.SIZE)) {
            throw new VaultError('BAD_INPUT', 'RSA block is not smaller than the modulus', { cause: e });
          }
          throw e;
        }
      }),
    );
  }

  async ecdsaSign(key: KeyRecord, hash: Uint8Array): Promise<Uint8Array> {
    if (key?.algorithm !== 'eccp256' && key?.algorithm !== 'eccp384') throw new VaultError('BAD_INPUT', 'not an EC key');
    if (!(hash instanceof Uint8Array) || hash.length === 0) throw new VaultError('BAD_INPUT', 'hash must not be empty');
    const curve = CURVES[key.algorithm];
    const digest = normaliseHash(hash, curve.size);
    return this.run('ECDSA signature failed', () =>
      this.withKey(key, async (object, auth) => {
        const signature = await this.tpm.sign(object, digest, { scheme: TPM_ALG.ECDSA, hash: curve.hash }, { auth, session: 'salted' });
        if (signature.sigAlg !== TPM_ALG.ECDSA) throw new VaultError('TPM', 'TPM returned a signature of another kind');
        return ecdsaSignatureDer(signature.r, signature.s);
      }),
    );
  }

  async ecdh(key: KeyRecord, peerPoint: Uint8Array): Promise<Uint8Array> {
    if (key?.algorithm !== 'eccp256' && key?.algorithm !== 'eccp384') throw new VaultError('BAD_INPUT', 'not an EC key');
    const size = CURVES[key.algorithm].size;
    if (!(peerPoint instanceof Uint8Array) || peerPoint.length !== 1 + 2 * size || peerPoint[0] !== 0x04) {
      throw new VaultError('BAD_INPUT', `peer point must be an uncompressed ${size * 8}-bit curve point`);
    }
    const point = { x: peerPoint.slice(1, 1 + size), y: peerPoint.slice(1 + size) };
    return this.run('ECDH failed', () =>
      this.withKey(key, async (object, auth) => {
        try {
          const shared = await this.tpm.ecdhZGen(object, point, { auth, session: 'salted' });
          return leftPad(shared.x, size);
        } catch (e) {
          if (e instanceof TpmError && (e.base === RC.ECC_POINT || e.base === RC.VALUE || e.base === RC.SIZE)) {
            throw new VaultError('BAD_INPUT', 'peer point is not on the curve', { cause: e });
          }
          throw e;
        }
      }),
    );
  }

  async deleteKey(key: KeyRecord): Promise<void> {
    // A key is only its blob: forgetting the loaded copy and the cached auth is all there is.
    // Destroy the card (or reset it) to make copies of the blob useless too.
    await this.objects.exclusive(() => this.objects.forget(key.wrapped));
    this.keyAuths.get(key.wrapped)?.fill(0);
    this.keyAuths.delete(key.wrapped);
  }

  // --- PIN and PUK -----------------------------------------------------------------------

  /**
   * The card's files now hold pinNext/pukNext/managementKeyNext: move the NV generation on at
   * once, so old objects (and backups holding them) die now rather than at the next use.
   */
  async persisted(): Promise<void> {
    await this.run('cannot retire the previous PIN/PUK/management key', async () => {
      await this.settleGenerations();
      await this.retireReplacedCards();
    });
  }

  /** Evicts the card parents and undefines the counter indices of the cards RESET replaced. */
  private async retireReplacedCards(): Promise<void> {
    // Off the list only once gone: a failure leaves it for the next persisted() or destroy().
    for (let old = this.retiring[0]; old; old = this.retiring[0]) {
      await this.objects.forgetParent(old.parent.handle);
      await evictQuietly(this.tpm, old.parent, this.options);
      await undefineQuietly(old.counters, this.options);
      this.retiring.shift();
    }
  }

  async verifyPin(pin: Uint8Array): Promise<CheckResult> {
    checkSecretValue(pin, 'PIN');
    return this.run('PIN check failed', async () => {
      await this.settleGenerations();
      const { result, value } = await this.attempt('pin', pin);
      if (value) this.setUnlocked(value);
      return result;
    });
  }

  lock(): void {
    this.kUser?.fill(0);
    this.kUser = undefined;
    for (const auth of this.keyAuths.values()) auth.fill(0);
    this.keyAuths.clear();
  }

  async pinStatus(): Promise<RetryStatus> {
    return pinStatusOf(await this.readCounters());
  }

  async pukStatus(): Promise<RetryStatus | undefined> {
    return pukStatusOf(await this.readCounters());
  }

  /** Both statuses from one NV read (the daemon's status report asks for both of every card). */
  async retryStatus(): Promise<RetryStatuses> {
    const c = await this.readCounters();
    return { pin: pinStatusOf(c), puk: pukStatusOf(c) };
  }

  private readCounters(): Promise<RetryCounters> {
    return this.run('cannot read the retry counters', () => this.counters.read());
  }

  async changePin(oldPin: Uint8Array, newPin: Uint8Array): Promise<CheckResult> {
    checkSecretValue(oldPin, 'PIN');
    checkSecretValue(newPin, 'new PIN');
    return this.run('PIN change failed', async () => {
      await this.settleGenerations();
      // Unseal checks the old PIN (DA-counted); the new PIN gets a new object for the next generation.
      const { result, value: kUser } = await this.attempt('pin', oldPin);
      if (kUser) {
        try {
          await this.stageSecret('pin', kUser, newPin);
        } finally {
          kUser.fill(0);
        }
        await this.updateCounters((c) => ({ ...c, pinIsDefault: this.isDefault('pin', newPin) }));
      }
      return result;
    });
  }

  async changePuk(oldPuk: Uint8Array, newPuk: Uint8Array): Promise<CheckResult> {
    checkSecretValue(oldPuk, 'PUK');
    checkSecretValue(newPuk, 'new PUK');
    return this.run('PUK change failed', async () => {
      await this.settleGenerations();
      const { result, value: kUser } = await this.attempt('puk', oldPuk);
      if (kUser) {
        try {
          await this.stageSecret('puk', kUser, newPuk);
        } finally {
          kUser.fill(0);
        }
        await this.updateCounters((c) => ({ ...c, pukIsDefault: this.isDefault('puk', newPuk) }));
      }
      return result;
    });
  }

  async unblockPinWithPuk(puk: Uint8Array, newPin: Uint8Array): Promise<CheckResult> {
    checkSecretValue(puk, 'PUK');
    checkSecretValue(newPin, 'new PIN');
    return this.run('PIN unblock failed', async () => {
      await this.settleGenerations();
      const { result, value: kUser } = await this.attempt('puk', puk);
      if (kUser) {
        try {
          await this.replacePin(kUser, newPin);
        } finally {
          kUser.fill(0);
        }
      }
      return result;
    });
  }

  async unblockPinWithAdmin(newPin: Uint8Array): Promise<void> {
    checkSecretValue(newPin, 'new PIN');
    await this.run('PIN unblock failed', async () => {
      if (this.vaultState.admin === undefined) {
        throw new VaultError('WRONG_CARD_KIND', 'this card has a PUK: only the PUK can unblock its PIN');
      }
      await this.settleGenerations();
      const kUser = await unsealWith(this.tpm, this.objects, this.parent, this.vaultState.admin, new Uint8Array(0));
      try {
        await this.replacePin(kUser, newPin);
      } finally {
        kUser.fill(0);
      }
    });
  }

  async setRetries(pinTries: number, pukTries: number, pin: Uint8Array, puk: Uint8Array | undefined): Promise<void> {
    checkTries(pinTries, 'PIN');
    checkTries(pukTries, 'PUK');
    checkSecretValue(pin, 'PIN');
    const hasPuk = this.vaultState.puk !== undefined;
    if (hasPuk !== (puk !== undefined)) {
      throw new VaultError('BAD_INPUT', hasPuk ? 'this card has a PUK: a new PUK is required' : 'this card has no PUK');
    }
    if (puk !== undefined) checkSecretValue(puk, 'PUK');
    await this.run('cannot set the retry counters', async () => {
      await this.settleGenerations();
      const kUser = await this.userSecretForAdministration();
      try {
        await this.stageSecret('pin', kUser, pin);
        if (puk) await this.stageSecret('puk', kUser, puk);
        await this.updateCounters((c) => ({
          ...c,
          pinTotal: pinTries,
          pinRemaining: pinTries,
          pinIsDefault: this.isDefault('pin', pin),
          pukTotal: pukTries,
          pukRemaining: pukTries,
          pukIsDefault: puk ? this.isDefault('puk', puk) : false,
        }));
      } finally {
        kUser.fill(0);
      }
    });
  }

  // --- PIN-protected data objects (object_box.ts) ------------------------------------------

  async sealObject(objectTag: number, value: Uint8Array): Promise<string> {
    if (!(value instanceof Uint8Array)) throw new VaultError('BAD_INPUT', 'a data object is bytes');
    if (this.destroyed) throw new VaultError('DESTROYED', 'the card was destroyed');
    // The wrap key's public point is enough: no TPM command, no PIN.
    return Buffer.from(sealObjectBox(fromB64(this.vaultState.wrapKey.point), objectTag, value)).toString('base64');
  }

  async openObject(objectTag: number, sealed: string): Promise<Uint8Array> {
    return this.run('cannot open the PIN-protected data object', async () => {
      const box = fromB64(sealed);
      const z = await this.wrapKeyAgreement(objectBoxEphemeralPoint(box));
      try {
        return openObjectBox(box, objectTag, z);
      } finally {
        z.fill(0);
      }
    });
  }

  // --- management key --------------------------------------------------------------------

  async managementKey(): Promise<ManagementKey> {
    return this.run('cannot unseal the management key', async () => {
      await this.settleGenerations();
      const sealed = await this.unsealManagementObject();
      try {
        return decodeManagementKey(sealed);
      } finally {
        sealed.fill(0);
      }
    });
  }

  /**
   * Stages the new key for the next management-key generation, like a PIN change (settleGenerations):
   * NV moves once the card files holding it are saved, then the old object, also in backups, is dead.
   */
  async setManagementKey(key: ManagementKey): Promise<void> {
    checkManagementKey(key);
    await this.run('cannot seal the management key', async () => {
      const plain = encodeManagementKey(key);
      try {
        if (await this.cancelsPendingManagementKey(plain)) return;
        await this.settleGenerations();
        const generation = this.vaultState.managementKeyGeneration + 1;
        if (generation >= 0xffffffff) throw new VaultError('BAD_STATE', 'the management-key generation is exhausted');
        const next = await sealManagementObject(this.tpm, this.objects, this.parent, this.counters, generation, plain);
        this.persistent.change((state) => {
          state.managementKeyNext = next;
        });
      } finally {
        plain.fill(0);
      }
    });
  }

  /**
   * SET MANAGEMENT KEY back to the live key while a change is pending and NV has not moved:
   * the card application's rollback after a failed save. The pending object is dropped instead
   * of settled, because settling would kill the live object of the files still on disk.
   */
  private async cancelsPendingManagementKey(plain: Uint8Array): Promise<boolean> {
    const state = this.vaultState;
    if (state.managementKeyNext === undefined) return false;
    if ((await this.counters.read()).managementGeneration !== state.managementKeyGeneration) return false;
    const live = await this.unsealManagementObject();
    try {
      if (!secretsEqual(live, plain)) return false;
    } finally {
      live.fill(0);
    }
    this.persistent.change((draft) => {
      delete draft.managementKeyNext;
    });
    return true;
  }

  /** Unseals the live management-key object through its generation policy (salted session, response encrypted). */
  private async unsealManagementObject(): Promise<Uint8Array> {
    const { managementKey: blob, managementKeyGeneration: generation } = this.vaultState;
    return this.objects.with(this.parent, decodeWrapped(blob), undefined, (object) =>
      unsealWithGeneration(this.tpm, this.counters, 'management', generation, object, new Uint8Array(0)),
    );
  }

  // --- attestation (attestation_key.ts) -----------------------------------------------------

  /** Creates the card's attestation identity key (AIK) under the card parent, once per card. */
  async createAttestationKey(): Promise<AttestationKeyPublic> {
    return this.run('cannot create the attestation key', async () => {
      if (this.vaultState.aik !== undefined) throw new VaultError('BAD_STATE', 'the card already has an attestation key');
      const blob = await this.objects.withRoom(() => this.tpm.create(this.parent, aikTemplate(), {}, { session: 'salted' }));
      this.persistent.change((state) => {
        state.aik = encodeWrapped(blob);
      });
      return { public: blob.public, publicArea: blob.publicArea, name: blob.name };
    });
  }

  /** The AIK's public part; undefined for a card created without /attestation. */
  attestationKey(): AttestationKeyPublic | undefined {
    if (this.vaultState.aik === undefined) return undefined;
    const wrapped = decodeWrapped(this.vaultState.aik);
    const publicArea = parsePublic2b(wrapped.public);
    return { public: wrapped.public, publicArea, name: objectName(publicArea) };
  }

  /**
   * Signs `data` with the restricted AIK: TPM2_Hash (which refuses data starting with
   * TPM_GENERATED_VALUE, so nothing can pass for a TPM-made structure) gives the ticket
   * that TPM2_Sign demands. Returns a DER ECDSA-SHA256 signature. At most 1024 bytes
   * (the TPM's MAX_DIGEST_BUFFER).
   */
  async signWithAttestationKey(data: Uint8Array): Promise<Uint8Array> {
    if (!(data instanceof Uint8Array) || data.length === 0 || data.length > 1024) {
      throw new VaultError('BAD_INPUT', 'data to sign with the attestation key must be 1 to 1024 bytes');
    }
    return this.run('attestation key signature failed', () =>
      this.withAttestationKey((aik) => signWithLoadedAik(this.tpm, aik, data)),
    );
  }

  /**
   * TPM2_Certify of a generated card key by the AIK, through the key's certify-only policy
   * (no PIN needed). `qualifyingData` becomes the attestation's extraData.
   */
  async certifyKey(key: KeyRecord, qualifyingData: Uint8Array): Promise<KeyCertification> {
    if (key?.origin !== 'generated') throw new VaultError('BAD_INPUT', 'only keys generated in the TPM can be certified');
    const wrapped = decodeWrapped(key.wrapped);
    const keyPublic = parsePublic2b(wrapped.public);
    if (Buffer.compare(keyPublic.authPolicy, CERTIFY_POLICY_DIGEST) !== 0) {
      throw new VaultError('BAD_STATE', 'the key was generated without the certify policy (regenerate it to attest it)');
    }
    return this.run('key certification failed', async () => {
      // swtpm has 3 object slots: SRK + AIK + key, so the key is loaded first, saved, and
      // brought back with ContextLoad (which, unlike Load, needs no slot for the parent).
      const context = await this.objects.with(this.parent, wrapped, undefined, (object) => this.tpm.contextSave(object.handle));
      return this.withAttestationKey((aik) => certifyWithLoadedAik(this.tpm, this.objects, aik, context, keyPublic, qualifyingData));
    });
  }

  /**
   * TPM2_ActivateCredential: releases a CA's credential if the CA encrypted it to this
   * TPM's endorsement key for this card's AIK. The EK is used through a
   * PolicySecret(TPM_RH_ENDORSEMENT) session (TCG EK profile), with PolicyOR for a
   * high-range EK (endorsement.policy).
   */
  async activateCredential(endorsement: EndorsementKeySource, credentialBlob: Uint8Array, secret: Uint8Array): Promise<Uint8Array> {
    return this.run('credential activation failed', () =>
      this.withAttestationKey((aik) => activateWithLoadedAik(this.tpm, this.objects, aik, endorsement, credentialBlob, secret)),
    );
  }

  /** Loads the AIK (not cached), runs `use`, flushes it. Call inside run(). */
  private async withAttestationKey<T>(use: (aik: LoadedObject) => Promise<T>): Promise<T> {
    if (this.vaultState.aik === undefined) throw new VaultError('BAD_STATE', 'the card has no attestation key');
    return this.objects.with(this.parent, decodeWrapped(this.vaultState.aik), undefined, use);
  }

  // --- whole card ------------------------------------------------------------------------

  async resetCard(pin: Uint8Array, puk: Uint8Array | undefined, managementKey: ManagementKey): Promise<void> {
    checkSecretValue(pin, 'PIN');
    if (puk !== undefined) checkSecretValue(puk, 'PUK');
    checkManagementKey(managementKey);
    await this.run('cannot reset the card', async () => {
      const oldParent = this.parent;
      const oldCounters = this.counters;
      await this.objects.forgetParent(oldParent.handle);
      // The new card is complete before the old one dies: a failure leaves the old card intact.
      const parent = await createCardParent(this.tpm, this.objects, this.options);
      let provisioned: Provisioned;
      try {
        provisioned = await provision(this.tpm, this.objects, parent, pin, puk, managementKey, { pinTries: DEFAULT_TRIES, pukTries: DEFAULT_TRIES }, this.options, new Set([oldCounters.nvIndex]));
      } catch (e) {
        await evictQuietly(this.tpm, parent, this.options);
        throw e;
      }
      this.lock();
      this.kFree.fill(0);
      this.persistent.change(() => provisioned.state);
      this.parent = parent;
      this.counters = provisioned.counters;
      this.kFree = provisioned.kFree;
      await this.objects.forgetParent(oldParent.handle);
      // The old card dies in persisted(), once the files name the new one.
      this.retiring.push({ parent: oldParent, counters: oldCounters });
    });
  }

  async destroy(): Promise<void> {
    await this.run('cannot destroy the card', async () => {
      this.lock();
      await this.retireReplacedCards();
      await this.objects.forgetParent(this.parent.handle);
      await evictQuietly(this.tpm, this.parent, this.options);
      await undefineQuietly(this.counters, this.options);
      this.kFree.fill(0);
      this.destroyed = true;
    });
  }

  // --- internals -------------------------------------------------------------------------

  /** Runs a TPM sequence under the connection lock, with typed errors. */
  private run<T>(what: string, task: () => Promise<T>): Promise<T> {
    return this.objects.exclusive(async () => {
      if (this.destroyed) throw new VaultError('DESTROYED', 'the card was destroyed');
      try {
        return await task();
      } catch (e) {
        throw asVaultError(e, what);
      }
    });
  }

  private saltBytes(): Uint8Array {
    return fromB64(this.vaultState.salt);
  }

  private isDefault(purpose: SecretPurpose, value: Uint8Array): boolean {
    return isDefaultSecret(this.options, purpose, value);
  }

  private setUnlocked(kUser: Uint8Array): void {
    if (kUser.length !== SECRET_BYTES) throw new VaultError('BAD_STATE', 'the PIN object holds a malformed secret');
    this.kUser?.fill(0);
    this.kUser = kUser;
  }

  private async updateCounters(change: (c: RetryCounters) => RetryCounters): Promise<void> {
    await this.counters.write(change(await this.counters.read()));
  }

  /**
   * One PIN or PUK try, in the order that makes the counter trustworthy:
   * load the object and satisfy its generation policy (no check yet), write remaining-1 to NV
   * (durable), let the TPM check the derived auth (pin_generation.ts: Unseal gives K_user), then
   * write the total back on success. A TPM lockout means nothing was checked: the counter is
   * restored. A failure before the Unseal (e.g. TPM_RC_SESSION_MEMORY) checked nothing and
   * costs no try. An object of another generation than NV's is refused (BAD_STATE) without costing a try.
   */
  private async attempt(purpose: SecretPurpose, value: Uint8Array): Promise<{ result: CheckResult; value?: Uint8Array }> {
    const blob = purpose === 'pin' ? this.vaultState.pin : this.vaultState.puk;
    if (blob === undefined) throw new VaultError('WRONG_CARD_KIND', 'this card has no PUK');
    const generation = purpose === 'pin' ? this.vaultState.pinGeneration : this.vaultState.pukGeneration;
    const before = await this.counters.read();
    // An object of another generation can't open: say so without costing a try (pin_generation.ts).
    if ((purpose === 'pin' ? before.pinGeneration : before.pukGeneration) !== generation) throw staleObjectError(purpose);
    const remaining = purpose === 'pin' ? before.pinRemaining : before.pukRemaining;
    if (remaining === 0) return { result: { ok: false, reason: 'blocked' } };
    const withRemaining = (n: number): RetryCounters => (purpose === 'pin' ? { ...before, pinRemaining: n } : { ...before, pukRemaining: n });
    const auth = deriveAuthValue(this.saltBytes(), purpose, value);
    try {
      return await this.objects.with(this.parent, decodeWrapped(blob), undefined, async (object) => {
        let decremented = false;
        const countTry = async (): Promise<void> => {
          await this.counters.write(withRemaining(remaining - 1));
          decremented = true;
        };
        let checked: Uint8Array;
        try {
          checked = await unsealWithGeneration(this.tpm, this.counters, purpose, generation, object, auth, countTry);
        } catch (e) {
          // Not counted: the TPM failed before it could check anything (the write itself may have failed too).
          if (!decremented) throw e;
          if (e instanceof VaultError && e.reason === 'BAD_STATE') {
            // The TPM refused the generation policy before checking any auth: give the try back.
            await this.counters.write(withRemaining(remaining));
            throw e;
          }
          if (isLockout(e)) {
            await this.counters.write(withRemaining(remaining));
            const info = await this.tpm.dictionaryAttackInfo();
            return { result: { ok: false, reason: 'lockout', recoverySeconds: Math.max(1, info.recoverySeconds || info.lockoutInterval) } };
          }
          if (isAuthFail(e)) return { result: { ok: false, reason: 'wrong', remaining: remaining - 1 } };
          throw e;
        }
        const total = purpose === 'pin' ? before.pinTotal : before.pukTotal;
        await this.counters.write(withRemaining(total));
        return { result: { ok: true }, value: checked };
      });
    } finally {
      auth.fill(0);
    }
  }

  /** New PIN object sealing the same K_user under the new PIN's auth; PIN counter full. */
  private async replacePin(kUser: Uint8Array, newPin: Uint8Array): Promise<void> {
    await this.stageSecret('pin', kUser, newPin);
    await this.updateCounters((c) => ({ ...c, pinRemaining: c.pinTotal, pinIsDefault: this.isDefault('pin', newPin) }));
  }

  /**
   * Generations (pin_generation.ts). A change of the PIN (or PUK) never touches NV itself: it seals
   * a new object for generation g+1 and keeps it beside the live one ("pinNext" in the state)
   * when the call returns; the card application then saves the state. The NV generation is
   * bumped here, at the start of the next PIN/PUK operation, and pinNext becomes the live object.
   * Every crash point leaves the card as before or after the change:
   *
   *   a. during the change call (new object made, state not saved): files hold {pin@g}, NV g:
   *      as before; the unsaved object is lost with the process.
   *   b. state saved, NV not bumped yet: files hold {pin@g, pinNext@g+1}, NV g: the next
   *      operation writes g+1 and promotes pinNext: after. (Until then the old object, and old
   *      backups, still open with the old PIN: the bump is lazy because NV must not move
   *      before the files that hold pinNext are on disk.)
   *   c. NV bumped, promoted state not saved yet: files hold {pin@g, pinNext@g+1}, NV g+1:
   *      promotion again (idempotent): after. The object for g is dead.
   *   d. promoted state saved: files hold {pin@g+1}, NV g+1: after.
   *
   * Any NV value other than g or g+1 means the files are older than the TPM: stale, refused.
   * Every change first settles a pending one, so a new pinNext is always for a fresh generation.
   */
  private async settleGenerations(): Promise<void> {
    const state = this.vaultState;
    const pending = GENERATION_PURPOSES.filter((purpose) => state[GENERATION_FIELDS[purpose].next] !== undefined);
    if (pending.length === 0) return;
    const counters = await this.counters.read();
    const next = { ...counters };
    for (const purpose of pending) {
      const fields = GENERATION_FIELDS[purpose];
      const live = state[fields.generation];
      const inNv = counters[fields.nv];
      if (inNv !== live && inNv !== live + 1) throw staleObjectError(purpose);
      next[fields.nv] = live + 1;
    }
    if (pending.some((purpose) => next[GENERATION_FIELDS[purpose].nv] !== counters[GENERATION_FIELDS[purpose].nv])) await this.counters.write(next);
    this.persistent.change((draft) => {
      for (const purpose of pending) {
        const fields = GENERATION_FIELDS[purpose];
        draft[fields.live] = draft[fields.next]!;
        draft[fields.generation] += 1;
        delete draft[fields.next];
      }
    });
  }

  /** Seals K_user under the new value for the next generation and keeps it pending (settleGenerations). */
  private async stageSecret(purpose: SecretPurpose, kUser: Uint8Array, value: Uint8Array): Promise<void> {
    const generation = (purpose === 'pin' ? this.vaultState.pinGeneration : this.vaultState.pukGeneration) + 1;
    if (generation >= 0xffffffff) throw new VaultError('BAD_STATE', `the ${purpose.toUpperCase()} generation is exhausted`);
    const blob = await sealGenerationObject(this.tpm, this.objects, this.parent, this.counters, purpose, generation, kUser, deriveAuthValue(this.saltBytes(), purpose, value));
    this.persistent.change((state) => {
      if (purpose === 'pin') state.pinNext = blob;
      else state.pukNext = blob;
    });
  }

  /** K_user for an administrative change: from the unlocked session, or the admin object (card without PUK). */
  private async userSecretForAdministration(): Promise<Uint8Array> {
    if (this.kUser) return Uint8Array.from(this.kUser);
    if (this.vaultState.admin !== undefined) {
      return unsealWith(this.tpm, this.objects, this.parent, this.vaultState.admin, new Uint8Array(0));
    }
    throw new VaultError('PIN_REQUIRED', 'verify the PIN first');
  }

  /** A fresh auth for a new key: K_free for 'none'; a random A_k boxed to the user wrap key for 'pin'. */
  private newKeyAuth(authorization: KeyAuthorization): { auth: Uint8Array; authBox?: Uint8Array } {
    if (authorization === 'none') return { auth: this.kFree };
    const auth = new Uint8Array(randomBytes(KEY_AUTH_BYTES));
    return { auth, authBox: sealKeyAuth(fromB64(this.vaultState.wrapKey.point), auth) };
  }

  private recordOf(algorithm: KeyAlgorithm, origin: KeyRecord['origin'], authorization: KeyAuthorization, blob: KeyBlob, authBox: Uint8Array | undefined): KeyRecord {
    const wrapped: WrappedObject = { public: blob.public, private: blob.private };
    if (authBox) wrapped.authBox = authBox;
    const record: KeyRecord = { algorithm, origin, authorization, publicKey: publicKeyOf(algorithm, blob.publicArea), wrapped: encodeWrapped(wrapped) };
    return record;
  }

  /** Loads (or reuses) a key and runs `use` with its auth; 'pin' keys need the vault unlocked. */
  private async withKey<T>(key: KeyRecord, use: (object: LoadedObject, auth: Uint8Array) => Promise<T>): Promise<T> {
    const wrapped = decodeWrapped(key.wrapped);
    let auth: Uint8Array;
    if (key.authorization === 'pin') {
      if (!this.kUser) throw new VaultError('PIN_REQUIRED', 'the key needs the PIN: verify it first');
      if (!wrapped.authBox) throw new VaultError('BAD_STATE', 'PIN-protected key has no auth box');
      auth = this.keyAuths.get(key.wrapped) ?? (await this.openKeyAuth(wrapped.authBox));
      this.keyAuths.set(key.wrapped, auth);
    } else if (key.authorization === 'none') {
      auth = this.kFree;
    } else {
      throw new VaultError('BAD_INPUT', 'unknown key authorization');
    }
    return this.objects.with(this.parent, wrapped, key.wrapped, (object) => use(object, auth));
  }

  /** Asks the TPM for w * E with K_user (the user wrap key's auth) and opens the key's auth box. */
  private async openKeyAuth(box: Uint8Array): Promise<Uint8Array> {
    const z = await this.wrapKeyAgreement(boxEphemeralPoint(box));
    try {
      return openKeyAuth(box, z);
    } finally {
      z.fill(0);
    }
  }

  /**
   * Z = X coordinate of w * E from the TPM (ECDH_ZGen with the user wrap key, whose auth is
   * K_user): what opens the boxes sealed to the wrap key while locked. Needs the vault unlocked.
   * The caller wipes Z. Call inside run().
   */
  private async wrapKeyAgreement(point: { x: Uint8Array; y: Uint8Array }): Promise<Uint8Array> {
    const kUser = this.kUser;
    if (!kUser) throw new VaultError('PIN_REQUIRED', 'verify the PIN first');
    const wrapBlob = decodeWrapped(this.vaultState.wrapKey.blob);
    const shared = await this.objects.with(this.parent, wrapBlob, `wrap:${this.vaultState.wrapKey.blob}`, (object) =>
      this.tpm.ecdhZGen(object, point, { auth: kUser, session: 'salted' }),
    );
    return leftPad(shared.x, 32);
  }
}

function pinStatusOf(c: RetryCounters): RetryStatus {
  return { total: c.pinTotal, remaining: c.pinRemaining, isDefault: c.pinIsDefault };
}

function pukStatusOf(c: RetryCounters): RetryStatus | undefined {
  return c.hasPuk ? { total: c.pukTotal, remaining: c.pukRemaining, isDefault: c.pukIsDefault } : undefined;
}

function checkAlgorithm(algorithm: unknown): asserts algorithm is KeyAlgorithm {
  if (algorithm !== 'rsa2048' && algorithm !== 'eccp256' && algorithm !== 'eccp384') {
    throw new VaultError('BAD_INPUT', 'unsupported key algorithm');
  }
}

function checkAuthorization(authorization: unknown): asserts authorization is KeyAuthorization {
  if (authorization !== 'pin' && authorization !== 'none') throw new VaultError('BAD_INPUT', 'unknown key authorization');
}

