/**
 * Management-key generations (vault/pin_generation.ts, managementPolicyDigest) on a real swtpm:
 * after SET MANAGEMENT KEY, copies of older card files can no longer unseal the old key; every
 * crash point of a change leaves the card as before or after; the applet's rollback (the old
 * key set again before the new state was saved) leaves the files on disk working; the key
 * never crosses the bus in clear. "Files" are vault.state() snapshots.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { TPMA_OBJECT, Tpm, parsePublic2b, type TpmError } from '../../tpm/index.js';
import type { ManagementKey } from '../../applet/key_vault.js';
import { TpmVault } from '../../vault/tpm_vault.js';
import { VaultError } from '../../vault/vault_error.js';
import { decodeWrapped } from '../../vault/wrapped_blob.js';
import type { TpmVaultState } from '../../vault/vault_state.js';
import { startRecordedTpm } from '../helpers/swtpm.js';
import { encode, relaxDictionaryAttack, useTpmFixture } from './vault_fixture.js';

const fixture = useTpmFixture(test);

const PIN = encode('13572468');
const PUK = encode('86420135');
const tdes = (): ManagementKey => ({ algorithm: 'tdes', key: new Uint8Array(randomBytes(24)) });
const aes = (): ManagementKey => ({ algorithm: 'aes256', key: new Uint8Array(randomBytes(32)) });
const copy = (key: ManagementKey): ManagementKey => ({ algorithm: key.algorithm, key: Uint8Array.from(key.key) });

function newCard(key: ManagementKey, tpm: Tpm = fixture.tpm): Promise<TpmVault> {
  return TpmVault.create(tpm, { pin: PIN, puk: PUK, managementKey: copy(key), pinTries: 3, pukTries: 3 });
}

const reopen = (state: TpmVaultState): Promise<TpmVault> => TpmVault.open(fixture.tpm, state);

async function assertKey(t: import('ava').ExecutionContext, vault: TpmVault, expected: ManagementKey): Promise<void> {
  const key = await vault.managementKey();
  t.is(key.algorithm, expected.algorithm);
  t.deepEqual(Buffer.from(key.key), Buffer.from(expected.key));
}

/** A stale management-key object is refused with BAD_STATE and costs no DA failure. */
async function assertStale(t: import('ava').ExecutionContext, vault: TpmVault): Promise<VaultError | undefined> {
  const daBefore = (await fixture.tpm.dictionaryAttackInfo()).lockoutCounter;
  const error = await t.throwsAsync(vault.managementKey(), { instanceOf: VaultError });
  t.is(error?.reason, 'BAD_STATE');
  t.regex(error?.message ?? '', /older management-key generation/);
  t.is((await fixture.tpm.dictionaryAttackInfo()).lockoutCounter, daBefore, 'no DA failure counted');
  return error;
}

test.serial('the management-key object is policy-only and noDA', async (t) => {
  const vault = await newCard(tdes());
  const area = parsePublic2b(decodeWrapped(vault.state().managementKey).public);
  t.is(area.objectAttributes & TPMA_OBJECT.userWithAuth, 0, 'no plain-auth use');
  t.not(area.objectAttributes & TPMA_OBJECT.noDA, 0);
  t.is(area.authPolicy.length, 32);
  t.is(vault.state().managementKeyGeneration, 1);
  await vault.destroy();
});

test.serial('after SET MANAGEMENT KEY, old files no longer unseal the old key (also with an edited generation)', async (t) => {
  await fixture.tpm.dictionaryAttackParameters({ maxTries: 1000, recoveryTime: 600, lockoutRecovery: 1 });
  try {
    const oldKey = tdes();
    const newKey = aes();
    const vault = await newCard(oldKey);
    const oldFiles = vault.state();
    await vault.setManagementKey(copy(newKey));
    t.truthy(vault.state().managementKeyNext, 'pending until the files are saved');
    await vault.persisted();
    const promoted = vault.state();
    t.is(promoted.managementKeyNext, undefined);
    t.is(promoted.managementKeyGeneration, oldFiles.managementKeyGeneration + 1);
    await assertKey(t, vault, newKey);

    await assertStale(t, await reopen(oldFiles));
    // Editing the files' generation: the old blob loads, but the TPM refuses its policy.
    const edited = await reopen({ ...oldFiles, managementKeyGeneration: oldFiles.managementKeyGeneration + 1 });
    const refused = await assertStale(t, edited);
    t.is((refused?.cause as TpmError | undefined)?.rcName, 'TPM_RC_POLICY_FAIL');
    // The card is unharmed, PIN and all.
    await assertKey(t, vault, newKey);
    t.deepEqual(await vault.verifyPin(PIN), { ok: true });
    await vault.destroy();
  } finally {
    await relaxDictionaryAttack(fixture.tpm);
  }
});

test.serial('crash points of SET MANAGEMENT KEY: before, saved-before-bump, bumped-not-promoted, promoted', async (t) => {
  const oldKey = tdes();
  const newKey = tdes();
  const vault = await newCard(oldKey);
  const before = vault.state();
  await vault.setManagementKey(copy(newKey));
  const saved = vault.state();

  // a. Killed during the call (state never saved): NV untouched, the old files give the old key.
  const crashedDuring = await reopen(before);
  await assertKey(t, crashedDuring, oldKey);
  t.deepEqual(crashedDuring.state(), before);

  // b. Saved, NV not bumped (persisted() never ran): the next use bumps, promotes, gives the new key.
  const savedBeforeBump = await reopen(saved);
  await assertKey(t, savedBeforeBump, newKey);
  const promoted = savedBeforeBump.state();
  t.is(promoted.managementKeyNext, undefined);
  t.is(promoted.managementKeyGeneration, saved.managementKeyGeneration + 1);

  // c. NV bumped, promotion not saved: the same saved files still work (promotion is idempotent),
  //    also when a PIN operation is the first to settle.
  const bumpedNotPromoted = await reopen(saved);
  t.deepEqual(await bumpedNotPromoted.verifyPin(PIN), { ok: true });
  t.deepEqual(bumpedNotPromoted.state(), promoted);
  await assertKey(t, bumpedNotPromoted, newKey);

  // d. Promoted state saved: works; the "before" files are dead.
  await assertKey(t, await reopen(promoted), newKey);
  await assertStale(t, await reopen(before));
  await vault.destroy();
});

test('rollback after a failed save: setting the live key again drops the pending object, NV stays', async (t) => {
  const oldKey = tdes();
  const vault = await newCard(oldKey);
  const onDisk = vault.state();
  // The applet's SET MANAGEMENT KEY: read the live key, set the new one; the save fails; it sets the old one back.
  const previous = await vault.managementKey();
  await vault.setManagementKey(aes());
  await vault.setManagementKey(previous);
  t.deepEqual(vault.state(), onDisk, 'back to exactly the files on disk');
  await vault.persisted();
  await assertKey(t, vault, oldKey);
  await assertKey(t, await TpmVault.open(fixture.tpm, onDisk), oldKey);

  // Two real changes in a row: the second settles the first (its files were saved).
  const second = aes();
  await vault.setManagementKey(tdes());
  const first = vault.state();
  await vault.setManagementKey(copy(second));
  t.is(vault.state().managementKeyGeneration, first.managementKeyGeneration + 1);
  await vault.persisted();
  await assertKey(t, vault, second);
  await assertStale(t, await TpmVault.open(fixture.tpm, first));
  await vault.destroy();
});

test('resetCard: the old files lose the old management key; the new default works', async (t) => {
  const vault = await newCard(tdes());
  const old = vault.state();
  const fresh = tdes();
  await vault.resetCard(PIN, PUK, copy(fresh));
  await assertKey(t, vault, fresh);
  t.is(vault.state().managementKeyGeneration, 1);
  await vault.persisted();
  const error = await t.throwsAsync(TpmVault.open(fixture.tpm, old), { instanceOf: VaultError });
  t.is(error?.reason, 'DESTROYED');
  await vault.destroy();
});

test('the management key and the sealed value never cross the bus in clear', async (t) => {
  // swtpm serves one connection at a time: this test has its own.
  const { proxy, tpm } = await startRecordedTpm(t);
  const first = aes();
  const second = aes();
  const vault = await newCard(first, tpm);
  await vault.setManagementKey(copy(second));
  await vault.persisted();
  const key = await vault.managementKey();
  t.deepEqual(Buffer.from(key.key), Buffer.from(second.key));
  const capture = Buffer.concat([...proxy.sent, ...proxy.received]);
  t.true(capture.length > 2000);
  for (const [name, value] of [['first key', first.key], ['second key', second.key]] as const) {
    for (let i = 0; i + 8 <= value.length; i += 4) t.false(capture.includes(Buffer.from(value.subarray(i, i + 8))), `${name} appeared on the wire`);
  }
  await vault.destroy();
});
