/**
 * A crash in the middle of RESET leaves the old card or the new one, never no card
 * (found by test/e2e/robustness_kill_data_reset.test.ts: tpmvscd killed during RESET came
 * back without the card, "card_unavailable", because resetCard() evicted the old card parent
 * and undefined its counter index before the card application had saved the new state).
 * "Files" are vault.state() snapshots; the daemon's start-up sweep is sweepOrphans.
 */
import test from 'ava';
import { createHash, randomBytes, verify } from 'node:crypto';
import { HANDLE_RANGE, TpmError } from '../../tpm/index.js';
import { TpmVault } from '../../vault/tpm_vault.js';
import { sweepOrphans } from '../../vault/orphan_sweep.js';
import { VaultError } from '../../vault/vault_error.js';
import { encode, nodePublicKey, useTpmFixture } from './vault_fixture.js';

const fixture = useTpmFixture(test);

const PIN = encode('31415926');
const hash = new Uint8Array(createHash('sha256').update('data').digest());
const newCard = (): Promise<TpmVault> =>
  TpmVault.create(fixture.tpm, { pin: PIN, puk: encode('27182818'), managementKey: { algorithm: 'aes128', key: new Uint8Array(randomBytes(16)) } });
const defaults = (): [Uint8Array, Uint8Array, { algorithm: 'tdes'; key: Uint8Array }] => [
  encode('12345678'),
  encode('12345678'),
  { algorithm: 'tdes', key: new Uint8Array(randomBytes(24)) },
];

async function persistentHandles(): Promise<number[]> {
  return [...(await fixture.tpm.getHandles(HANDLE_RANGE.PERSISTENT, 256)), ...(await fixture.tpm.getHandles(HANDLE_RANGE.NV_INDEX, 256))];
}

test.serial('killed after resetCard, before the new state was saved: the old files still open the old card', async (t) => {
  const vault = await newCard();
  const key = await vault.generateKey('eccp256', 'none');
  const oldFiles = structuredClone(vault.state());
  const before = await persistentHandles();
  await vault.resetCard(...defaults());
  // The crash: the new state never reached the disk. The next start sweeps what no file names.
  const swept = await sweepOrphans(fixture.tpm, [oldFiles]);
  t.deepEqual(swept, { evictedParents: [vault.tpmResources.parentHandle], undefinedIndices: [vault.tpmResources.counterIndex] });
  t.deepEqual((await persistentHandles()).sort(), before.sort(), 'the old card parent and counters are still there');
  const reopened = await TpmVault.open(fixture.tpm, oldFiles);
  t.true(verify('sha256', encode('data'), { key: nodePublicKey(key.publicKey), dsaEncoding: 'der' }, await reopened.ecdsaSign(key, hash)));
  t.deepEqual(await reopened.verifyPin(PIN), { ok: true });
  await reopened.destroy();
});

test.serial('killed after the new state was saved, before persisted(): the new files open the new card; the old one is swept', async (t) => {
  const vault = await newCard();
  const oldFiles = structuredClone(vault.state());
  const { parentHandle: oldParent, counterIndex: oldIndex } = vault.tpmResources;
  await vault.resetCard(...defaults());
  const newFiles = structuredClone(vault.state());
  const swept = await sweepOrphans(fixture.tpm, [newFiles]);
  t.deepEqual(swept, { evictedParents: [oldParent], undefinedIndices: [oldIndex] });
  const reopened = await TpmVault.open(fixture.tpm, newFiles);
  t.deepEqual(await reopened.verifyPin(encode('12345678')), { ok: true });
  const gone = await t.throwsAsync(TpmVault.open(fixture.tpm, oldFiles), { instanceOf: VaultError });
  t.is(gone?.reason, 'DESTROYED');
  await reopened.destroy();
});

test.serial('persisted() after resetCard removes the old card; destroy() removes one still pending', async (t) => {
  const vault = await newCard();
  const { parentHandle: oldParent, counterIndex: oldIndex } = vault.tpmResources;
  await vault.resetCard(...defaults());
  t.true((await persistentHandles()).includes(oldParent), 'kept until the new state is saved');
  await vault.persisted();
  t.false((await persistentHandles()).includes(oldParent));
  t.false((await persistentHandles()).includes(oldIndex));

  const second = await newCard();
  const pending = second.tpmResources;
  await second.resetCard(...defaults());
  const current = second.tpmResources;
  await second.destroy();
  const left = await persistentHandles();
  for (const handle of [pending.parentHandle, pending.counterIndex, current.parentHandle, current.counterIndex]) t.false(left.includes(handle));
  await vault.destroy();
});

test.serial('a retirement that fails after RESET is retried by the next persisted(), not forgotten', async (t) => {
  const vault = await newCard();
  const { parentHandle: oldParent, counterIndex: oldIndex } = vault.tpmResources;
  await vault.resetCard(...defaults());
  // The TPM is busy once (TPM_RC_RETRY) while the old card parent is evicted.
  const tpm = fixture.tpm as unknown as { evictControl: (...args: unknown[]) => Promise<unknown> };
  const evict = tpm.evictControl;
  let failures = 1;
  tpm.evictControl = async function (this: unknown, ...args: unknown[]) {
    if (failures-- > 0) throw new TpmError(0x922, 'EvictControl');
    return evict.apply(this, args);
  };
  try {
    await t.throwsAsync(vault.persisted());
  } finally {
    tpm.evictControl = evict;
  }
  t.true((await persistentHandles()).includes(oldParent), 'still there after the failure');
  await vault.persisted();
  const left = await persistentHandles();
  t.false(left.includes(oldParent), 'the old card parent is gone');
  t.false(left.includes(oldIndex), 'the old counter index is gone');
  await vault.destroy();
});
