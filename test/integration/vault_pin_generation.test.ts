/**
 * PIN/PUK generations (vault/pin_generation.ts) on a real swtpm: after a change, copies of older
 * card files can't open the PIN/PUK objects with the old values, and every crash point of a
 * change (tpm_vault.ts, settleGenerations) leaves the card as before or after.
 * "Files" here are vault.state() snapshots, as the card application saves them.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import type { TpmError } from '../../tpm/index.js';
import { TpmVault } from '../../vault/tpm_vault.js';
import { VaultError } from '../../vault/vault_error.js';
import type { TpmVaultState } from '../../vault/vault_state.js';
import { encode, relaxDictionaryAttack, useTpmFixture } from './vault_fixture.js';

const fixture = useTpmFixture(test);

const PIN = encode('13572468');
const NEW_PIN = encode('24681357');
const THIRD_PIN = encode('99887766');
const PUK = encode('86420135');
const NEW_PUK = encode('53102468');
const managementKey = () => ({ algorithm: 'tdes' as const, key: new Uint8Array(randomBytes(24)) });
const hash = new Uint8Array(createHash('sha256').update('data').digest());

function newCard(withPuk = true): Promise<TpmVault> {
  return TpmVault.create(fixture.tpm, { pin: PIN, puk: withPuk ? PUK : undefined, managementKey: managementKey(), pinTries: 3, pukTries: 3 });
}

const reopen = (state: TpmVaultState): Promise<TpmVault> => TpmVault.open(fixture.tpm, state);

/** A stale object is refused with BAD_STATE, costs no card try and no DA failure. */
async function assertStale(t: import('ava').ExecutionContext, attempt: Promise<unknown>, vault: TpmVault, purpose: 'pin' | 'puk'): Promise<VaultError | undefined> {
  const status = async () => (purpose === 'pin' ? await vault.pinStatus() : await vault.pukStatus());
  const before = await status();
  const daBefore = (await fixture.tpm.dictionaryAttackInfo()).lockoutCounter;
  const error = await t.throwsAsync(attempt, { instanceOf: VaultError });
  t.is(error?.reason, 'BAD_STATE');
  t.regex(error?.message ?? '', /older .* generation/);
  t.deepEqual(await status(), before, 'no card try spent');
  t.is((await fixture.tpm.dictionaryAttackInfo()).lockoutCounter, daBefore, 'no DA failure counted');
  return error;
}

test.serial('after a PIN change, old files no longer open with the old PIN (also with an edited generation)', async (t) => {
  const tpm = fixture.tpm;
  // DA failures stay counted for the whole test (no forgiveness during the checks).
  await tpm.dictionaryAttackParameters({ maxTries: 1000, recoveryTime: 600, lockoutRecovery: 1 });
  try {
    const vault = await newCard();
    const key = await vault.generateKey('eccp256', 'pin');
    const oldFiles = vault.state();
    t.deepEqual(await vault.changePin(PIN, NEW_PIN), { ok: true });
    t.truthy(vault.state().pinNext, 'the new PIN object is pending until the next PIN use');
    t.deepEqual(await vault.verifyPin(NEW_PIN), { ok: true });
    t.is(vault.state().pinNext, undefined);
    t.is(vault.state().pinGeneration, oldFiles.pinGeneration + 1);
    t.is((await vault.ecdsaSign(key, hash)).length > 0, true, 'K_user is unchanged: PIN keys keep working');

    const attacker = await reopen(oldFiles);
    await assertStale(t, attacker.verifyPin(PIN), attacker, 'pin');
    await assertStale(t, attacker.changePin(PIN, THIRD_PIN), attacker, 'pin');
    // Editing the files' generation passes the vault's own check, but the TPM refuses the object.
    const edited = await reopen({ ...oldFiles, pinGeneration: oldFiles.pinGeneration + 1 });
    const refused = await assertStale(t, edited.verifyPin(PIN), edited, 'pin');
    t.is((refused?.cause as TpmError | undefined)?.rcName, 'TPM_RC_POLICY_FAIL', 'the old blob loads; the TPM refuses its policy');
    t.false(edited.unlocked);
    // The card itself is unharmed.
    vault.lock();
    t.deepEqual(await vault.verifyPin(NEW_PIN), { ok: true });
    t.deepEqual(await vault.pinStatus(), { total: 3, remaining: 3, isDefault: false });
    await vault.destroy();
  } finally {
    await relaxDictionaryAttack(tpm);
  }
});

test.serial('after PUK unblock, PUK change, admin unblock and setRetries, old files are stale', async (t) => {
  const vault = await newCard();
  const beforeUnblock = vault.state();
  t.deepEqual(await vault.unblockPinWithPuk(PUK, NEW_PIN), { ok: true });
  t.deepEqual(await vault.verifyPin(NEW_PIN), { ok: true });
  const old = await reopen(beforeUnblock);
  await assertStale(t, old.verifyPin(PIN), old, 'pin');

  const beforePukChange = vault.state();
  t.deepEqual(await vault.changePuk(PUK, NEW_PUK), { ok: true });
  t.deepEqual(await vault.unblockPinWithPuk(NEW_PUK, THIRD_PIN), { ok: true });
  const oldPuk = await reopen(beforePukChange);
  await assertStale(t, oldPuk.unblockPinWithPuk(PUK, PIN), oldPuk, 'puk');
  t.deepEqual(await vault.verifyPin(THIRD_PIN), { ok: true });

  const beforeRetries = vault.state();
  await vault.setRetries(4, 4, PIN, PUK);
  t.deepEqual(await vault.verifyPin(PIN), { ok: true });
  const oldRetries = await reopen(beforeRetries);
  await assertStale(t, oldRetries.verifyPin(THIRD_PIN), oldRetries, 'pin');
  await assertStale(t, oldRetries.unblockPinWithPuk(NEW_PUK, THIRD_PIN), oldRetries, 'puk');
  await vault.destroy();

  const noPuk = await newCard(false);
  const beforeAdmin = noPuk.state();
  await noPuk.unblockPinWithAdmin(NEW_PIN);
  t.deepEqual(await noPuk.verifyPin(NEW_PIN), { ok: true });
  const oldAdmin = await reopen(beforeAdmin);
  await assertStale(t, oldAdmin.verifyPin(PIN), oldAdmin, 'pin');
  await noPuk.destroy();
});

test.serial('crash points of a PIN change: before, saved-before-bump, bumped-not-promoted, promoted', async (t) => {
  const vault = await newCard();
  const before = vault.state();
  t.deepEqual(await vault.changePin(PIN, NEW_PIN), { ok: true });
  const saved = vault.state();

  // a. Killed during the call (state never saved): the files still say "before" and NV was not
  //    touched, so the old PIN still works there.
  const crashedDuring = await reopen(before);
  t.deepEqual(await crashedDuring.verifyPin(PIN), { ok: true });
  t.deepEqual(crashedDuring.state(), before, 'nothing pending, nothing changed');

  // b. State saved, NV not bumped yet: the reopened card bumps, promotes, takes the new PIN.
  const savedBeforeBump = await reopen(saved);
  t.deepEqual(await savedBeforeBump.verifyPin(PIN), { ok: false, reason: 'wrong', remaining: 2 });
  t.deepEqual(await savedBeforeBump.verifyPin(NEW_PIN), { ok: true });
  const promoted = savedBeforeBump.state();
  t.is(promoted.pinNext, undefined);
  t.is(promoted.pinGeneration, saved.pinGeneration + 1);

  // c. NV bumped, promotion not saved: the same saved files still open (promotion is idempotent).
  const bumpedNotPromoted = await reopen(saved);
  t.deepEqual(await bumpedNotPromoted.verifyPin(NEW_PIN), { ok: true });
  t.deepEqual(bumpedNotPromoted.state(), promoted);

  // d. Promoted state saved: works; and the "before" files are dead now.
  const after = await reopen(promoted);
  t.deepEqual(await after.verifyPin(NEW_PIN), { ok: true });
  const stale = await reopen(before);
  await assertStale(t, stale.verifyPin(PIN), stale, 'pin');
  await vault.destroy();
});

test.serial('two changes in a row: each saved state is consistent; a pending change is settled first', async (t) => {
  const vault = await newCard();
  t.deepEqual(await vault.changePin(PIN, NEW_PIN), { ok: true });
  const first = vault.state();
  // The second change settles the first (NV g+1) and stages g+2.
  t.deepEqual(await vault.changePin(NEW_PIN, THIRD_PIN), { ok: true });
  const second = vault.state();
  t.is(second.pinGeneration, first.pinGeneration + 1);
  t.truthy(second.pinNext);

  // Killed before the second state was saved: the first change's files work (NV is already g+1).
  const crashed = await reopen(first);
  t.deepEqual(await crashed.verifyPin(NEW_PIN), { ok: true });

  // The second state works and, once settled, kills the first files' objects.
  const current = await reopen(second);
  t.deepEqual(await current.verifyPin(THIRD_PIN), { ok: true });
  const old = await reopen(first);
  await assertStale(t, old.verifyPin(NEW_PIN), old, 'pin');
  await vault.destroy();
});

test.serial('a wrong PIN through the generation policy is a DA-counted auth failure', async (t) => {
  const tpm = fixture.tpm;
  await tpm.dictionaryAttackParameters({ maxTries: 1000, recoveryTime: 600, lockoutRecovery: 1 });
  try {
    const vault = await newCard();
    const before = (await tpm.dictionaryAttackInfo()).lockoutCounter;
    t.deepEqual(await vault.verifyPin(encode('wrong-pin')), { ok: false, reason: 'wrong', remaining: 2 });
    t.is((await tpm.dictionaryAttackInfo()).lockoutCounter, before + 1);
    await vault.destroy();
  } finally {
    await relaxDictionaryAttack(tpm);
  }
});
