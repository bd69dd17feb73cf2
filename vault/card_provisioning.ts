/**
 * A card's TPM objects as they are made: the persistent card parent under the SRK, and under
 * it every secret of a new card (salt, K_free, K_user, the user wrap key, the PIN, PUK or
 * admin and management-key objects, the counter NV index). docs/ARCHITECTURE.md draws the
 * hierarchy. Used by TpmVault.create and by RESET, which makes a whole new card.
 */
import { createHash, randomBytes } from 'node:crypto';
import { RC, TPM_RH, TpmError, type Tpm, type TpmEntity } from '../tpm/index.js';
import type { ManagementKey } from '../applet/key_vault.js';
import { DEFAULT_PIN, DEFAULT_PUK } from '../common/pin_rules.js';
import { cardParentTemplate, policySealedTemplate, sealedTemplate, wrapKeyTemplate } from './key_templates.js';
import type { LoadedObjects } from './loaded_objects.js';
import { encodeManagementKey } from './management_key_encoding.js';
import { deriveAuthValue, secretsEqual, type SecretPurpose } from './pin_auth.js';
import { generationPolicyDigest, managementPolicyDigest } from './pin_generation.js';
import { CounterIndex, type RetryCounters } from './retry_counters.js';
import { CARD_PARENT_BASE, COUNTER_INDEX_BASE, findFreeHandle } from './tpm_handles.js';
import { publicKeyOf } from './tpm_public_key.js';
import type { TpmVaultOptions } from './tpm_vault.js';
import { VaultError } from './vault_error.js';
import { STATE_FORMAT, type TpmVaultState } from './vault_state.js';
import { decodeWrapped, encodeWrapped } from './wrapped_blob.js';

/** Tries of a new card and after RESET (Windows virtual smart cards: 5 PIN, 5 PUK). */
export const DEFAULT_TRIES = 5;
export const SECRET_BYTES = 32;
const SALT_BYTES = 16;
/** Generation of a new card's PIN, PUK and management-key objects. */
const FIRST_GENERATION = 1;

const encoder = new TextEncoder();
const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');

/** Everything a card needs, created under a card parent. */
export interface Provisioned {
  state: TpmVaultState;
  kFree: Uint8Array;
  counters: CounterIndex;
}

/** The counter index's auth: derived from K_free so that only holders of the card's files can write it. */
export function nvAuthFrom(kFree: Uint8Array): Uint8Array {
  return new Uint8Array(createHash('sha256').update('tpmvsc/nv\0').update(kFree).digest());
}

/** Creates the card parent under the SRK and makes it persistent; its private blob is dropped. */
/** Whether `value` is the card's default PIN or PUK (the vault options', else 12345678). */
export function isDefaultSecret(options: Pick<TpmVaultOptions, 'defaultPin' | 'defaultPuk'>, purpose: SecretPurpose, value: Uint8Array): boolean {
  const reference = purpose === 'pin' ? options.defaultPin ?? encoder.encode(DEFAULT_PIN) : options.defaultPuk ?? encoder.encode(DEFAULT_PUK);
  return secretsEqual(value, reference);
}

export async function createCardParent(tpm: Tpm, objects: LoadedObjects, options: TpmVaultOptions): Promise<TpmEntity> {
  const srk = await tpm.storageRoot();
  const blob = await objects.withRoom(() => tpm.create(srk, cardParentTemplate(), {}, { session: 'salted' }));
  const loaded = await objects.withRoom(() => tpm.load(srk, blob, { session: 'password' }));
  try {
    for (let tries = 0; ; tries++) {
      const handle = await findFreeHandle(tpm, CARD_PARENT_BASE);
      try {
        await tpm.evictControl(loaded, handle, { hierarchy: TPM_RH.OWNER, auth: options.ownerAuth ?? new Uint8Array(0) });
        return { handle, name: blob.name };
      } catch (e) {
        // Another process took the handle between the look-up and EvictControl.
        if (!(e instanceof TpmError && e.base === RC.NV_DEFINED) || tries >= 3) throw e;
      }
    }
  } finally {
    await tpm.flushContext(loaded.handle);
  }
}

/** Creates every secret of a card under `parent`: salt, K_free, K_user, sealed objects, counters. */
export async function provision(
  tpm: Tpm,
  objects: LoadedObjects,
  parent: TpmEntity,
  pin: Uint8Array,
  puk: Uint8Array | undefined,
  managementKey: ManagementKey,
  tries: { pinTries: number; pukTries: number },
  options: TpmVaultOptions,
  avoidIndices: ReadonlySet<number> = new Set(),
): Promise<Provisioned> {
  const salt = new Uint8Array(randomBytes(SALT_BYTES));
  const kFree = new Uint8Array(randomBytes(SECRET_BYTES));
  const kUser = new Uint8Array(randomBytes(SECRET_BYTES));
  const management = encodeManagementKey(managementKey);
  const seal = async (data: Uint8Array, auth: Uint8Array, daProtected: boolean): Promise<string> =>
    encodeWrapped(await objects.withRoom(() => tpm.create(parent, sealedTemplate(daProtected), { userAuth: auth, data }, { session: 'salted' })));
  try {
    const free = await seal(kFree, new Uint8Array(0), false);
    const wrapKey = await objects.withRoom(() => tpm.create(parent, wrapKeyTemplate(), { userAuth: kUser }, { session: 'salted' }));
    const wrapPoint = publicKeyOf('eccp256', wrapKey.publicArea);
    if (!('point' in wrapPoint)) throw new VaultError('TPM', 'wrap key is not an EC key');
    const adminBlob = puk ? undefined : await seal(kUser, new Uint8Array(0), false);
    const initial: RetryCounters = {
      pinTotal: tries.pinTries,
      pinRemaining: tries.pinTries,
      pinIsDefault: isDefaultSecret(options, 'pin', pin),
      hasPuk: puk !== undefined,
      pukTotal: tries.pukTries,
      pukRemaining: tries.pukTries,
      pukIsDefault: puk !== undefined && isDefaultSecret(options, 'puk', puk),
      pinGeneration: FIRST_GENERATION,
      pukGeneration: FIRST_GENERATION,
      managementGeneration: FIRST_GENERATION,
    };
    let counters: CounterIndex | undefined;
    for (let attempt = 0; !counters; attempt++) {
      const nvIndex = await findFreeHandle(tpm, COUNTER_INDEX_BASE, avoidIndices);
      try {
        counters = await CounterIndex.define(tpm, nvIndex, nvAuthFrom(kFree), initial, options.ownerAuth);
      } catch (e) {
        if (!(e instanceof TpmError && e.base === RC.NV_DEFINED) || attempt >= 3) throw e;
      }
    }
    // The PIN/PUK/management-key objects' policy names the counter index: they are sealed after it exists.
    let pinBlob: string;
    let pukBlob: string | undefined;
    let managementBlob: string;
    try {
      managementBlob = await sealManagementObject(tpm, objects, parent, counters, FIRST_GENERATION, management);
      pinBlob = await sealGenerationObject(tpm, objects, parent, counters, 'pin', FIRST_GENERATION, kUser, deriveAuthValue(salt, 'pin', pin));
      pukBlob = puk ? await sealGenerationObject(tpm, objects, parent, counters, 'puk', FIRST_GENERATION, kUser, deriveAuthValue(salt, 'puk', puk)) : undefined;
    } catch (e) {
      await undefineQuietly(counters, options).catch(() => undefined);
      throw e;
    }
    const state: TpmVaultState = {
      format: STATE_FORMAT,
      parent: { handle: parent.handle, name: hex(parent.name) },
      counters: counters.nvIndex,
      salt: b64(salt),
      free,
      wrapKey: { blob: encodeWrapped(wrapKey), point: b64(wrapPoint.point) },
      pin: pinBlob,
      pinGeneration: FIRST_GENERATION,
      pukGeneration: FIRST_GENERATION,
      managementKey: managementBlob,
      managementKeyGeneration: FIRST_GENERATION,
    };
    if (pukBlob) state.puk = pukBlob;
    if (adminBlob) state.admin = adminBlob;
    return { state, kFree, counters };
  } finally {
    kUser.fill(0);
    management.fill(0);
  }
}

/** A PIN or PUK object: K_user sealed under `auth`, usable only while NV holds `generation` (pin_generation.ts). */
export async function sealGenerationObject(
  tpm: Tpm,
  objects: LoadedObjects,
  parent: TpmEntity,
  counters: CounterIndex,
  purpose: SecretPurpose,
  generation: number,
  kUser: Uint8Array,
  auth: Uint8Array,
): Promise<string> {
  try {
    const policy = generationPolicyDigest(await counters.name(), purpose, generation);
    const blob = await objects.withRoom(() => tpm.create(parent, policySealedTemplate(policy), { userAuth: auth, data: kUser }, { session: 'salted' }));
    return encodeWrapped(blob);
  } finally {
    auth.fill(0);
  }
}

/** The management-key object: (algorithm || key) usable only while NV holds `generation` (pin_generation.ts). */
export async function sealManagementObject(
  tpm: Tpm,
  objects: LoadedObjects,
  parent: TpmEntity,
  counters: CounterIndex,
  generation: number,
  plain: Uint8Array,
): Promise<string> {
  const policy = managementPolicyDigest(await counters.name(), generation);
  const blob = await objects.withRoom(() => tpm.create(parent, policySealedTemplate(policy, true), { userAuth: new Uint8Array(0), data: plain }, { session: 'salted' }));
  return encodeWrapped(blob);
}

/** Loads a sealed blob, unseals it through a salted session with response encryption, flushes it. */
export async function unsealWith(tpm: Tpm, objects: LoadedObjects, parent: TpmEntity, wrapped: string, auth: Uint8Array): Promise<Uint8Array> {
  return objects.with(parent, decodeWrapped(wrapped), undefined, (object) => tpm.unseal(object, { auth, session: 'salted' }));
}

export async function evictQuietly(tpm: Tpm, parent: TpmEntity, options: TpmVaultOptions): Promise<void> {
  try {
    await tpm.evictControl(parent, parent.handle, { hierarchy: TPM_RH.OWNER, auth: options.ownerAuth ?? new Uint8Array(0) });
  } catch (e) {
    // Already gone: the goal (no card parent) is reached.
    if (!(e instanceof TpmError && (e.base === RC.HANDLE || e.base === RC.REFERENCE_H0))) throw e;
  }
}

export async function undefineQuietly(counters: CounterIndex, options: TpmVaultOptions): Promise<void> {
  try {
    await counters.undefine(options.ownerAuth);
  } catch (e) {
    if (!(e instanceof TpmError && (e.base === RC.HANDLE || e.base === RC.REFERENCE_H0))) throw e;
  }
}
