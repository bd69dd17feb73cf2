/**
 * Card life cycle on a real swtpm: open from state, destroy, reset, lost objects,
 * several cards on one TPM connection.
 */
import test from 'ava';
import { createHash, randomBytes, verify } from 'node:crypto';
import { HANDLE_RANGE, Tpm, TpmError } from '../../tpm/index.js';
import { TpmVault } from '../../vault/tpm_vault.js';
import { VaultError } from '../../vault/vault_error.js';
import { decodeWrapped } from '../../vault/wrapped_blob.js';
import { encode, nodePublicKey, useTpmFixture } from './vault_fixture.js';

const fixture = useTpmFixture(test);

const PIN = encode('31415926');
const hash = new Uint8Array(createHash('sha256').update('data').digest());
const newCard = (): Promise<TpmVault> =>
  TpmVault.create(fixture.tpm, { pin: PIN, puk: encode('27182818'), managementKey: { algorithm: 'aes128', key: new Uint8Array(randomBytes(16)) } });
const verifies = (key: { publicKey: Parameters<typeof nodePublicKey>[0] }, signature: Uint8Array): boolean =>
  verify('sha256', encode('data'), { key: nodePublicKey(key.publicKey), dsaEncoding: 'der' }, signature);

test.serial('a card reopened from its saved state works; open refuses malformed or foreign state', async (t) => {
  const vault = await newCard();
  const key = await vault.generateKey('eccp256', 'pin');
  const saved = JSON.parse(JSON.stringify(vault.state()));
  const reopened = await TpmVault.open(fixture.tpm, saved);
  t.deepEqual(await reopened.verifyPin(PIN), { ok: true });
  t.true(verifies(key, await reopened.ecdsaSign(key, hash)));
  for (const bad of [{}, { ...saved, pin: 'not base64!' }, { ...saved, parent: { handle: 0x81000001, name: saved.parent.name } }, { ...saved, puk: undefined }]) {
    await t.throwsAsync(TpmVault.open(fixture.tpm, bad), { instanceOf: VaultError });
  }
  // Another card's parent at the recorded handle is detected by its name.
  const other = await newCard();
  const swapped = { ...saved, parent: other.state().parent };
  const error = await t.throwsAsync(TpmVault.open(fixture.tpm, swapped), { instanceOf: VaultError });
  t.truthy(error);
  await other.destroy();
  await vault.destroy();
});

test.serial('destroy: the card parent and the NV index are gone; old blobs are useless', async (t) => {
  const tpm = fixture.tpm;
  const vault = await newCard();
  const key = await vault.generateKey('eccp256', 'none');
  const before = structuredClone(vault.state());
  const { parentHandle, counterIndex } = vault.tpmResources;
  t.true((await tpm.getHandles(HANDLE_RANGE.PERSISTENT, 256)).includes(parentHandle));
  await vault.destroy();
  t.false((await tpm.getHandles(HANDLE_RANGE.PERSISTENT, 256)).includes(parentHandle));
  t.false((await tpm.getHandles(HANDLE_RANGE.NV_INDEX, 256)).includes(counterIndex));
  await t.throwsAsync(tpm.nvReadPublic(counterIndex), { instanceOf: TpmError });
  const gone = await t.throwsAsync(TpmVault.open(tpm, before), { instanceOf: VaultError });
  t.is(gone?.reason, 'DESTROYED');
  await t.throwsAsync(vault.ecdsaSign(key, hash), { instanceOf: VaultError });
  // A new card may get the same persistent handle: the old blob still does not load under it.
  const next = await newCard();
  const nextParent = next.state().parent;
  const blob = decodeWrapped(key.wrapped);
  await t.throwsAsync(tpm.load({ handle: nextParent.handle, name: new Uint8Array(Buffer.from(nextParent.name, 'hex')) }, blob), { instanceOf: TpmError });
  await next.destroy();
});

test.serial('resetCard: old keys die, new PIN/PUK/management key work', async (t) => {
  const vault = await newCard();
  const oldKey = await vault.generateKey('eccp256', 'none');
  const oldParent = vault.tpmResources.parentHandle;
  t.true(verifies(oldKey, await vault.ecdsaSign(oldKey, hash)));
  const mk = { algorithm: 'tdes' as const, key: new Uint8Array(randomBytes(24)) };
  await vault.resetCard(encode('12345678'), encode('12345678'), mk);
  // The old card dies once the new state is saved (the card application then calls persisted()).
  await vault.persisted();
  t.not(vault.tpmResources.parentHandle, oldParent);
  t.false((await fixture.tpm.getHandles(HANDLE_RANGE.PERSISTENT, 256)).includes(oldParent));
  await t.throwsAsync(vault.ecdsaSign(oldKey, hash), { instanceOf: VaultError });
  t.deepEqual(await vault.pinStatus(), { total: 5, remaining: 5, isDefault: true });
  t.deepEqual(await vault.verifyPin(PIN), { ok: false, reason: 'wrong', remaining: 4 });
  t.deepEqual(await vault.verifyPin(encode('12345678')), { ok: true });
  t.deepEqual(Buffer.from((await vault.managementKey()).key), Buffer.from(mk.key));
  const newKey = await vault.generateKey('eccp384', 'pin');
  const h384 = new Uint8Array(createHash('sha384').update('data').digest());
  t.true(verify('sha384', encode('data'), { key: nodePublicKey(newKey.publicKey), dsaEncoding: 'der' }, await vault.ecdsaSign(newKey, h384)));
  await vault.destroy();
});

test.serial('keys are reloaded transparently when the TPM lost the loaded objects', async (t) => {
  const tpm = fixture.tpm;
  const vault = await newCard();
  const key = await vault.generateKey('eccp256', 'none');
  t.true(verifies(key, await vault.ecdsaSign(key, hash)));
  // Flush every transient object but the library's SRK behind the vault's back.
  const srk = (await tpm.storageRoot()).handle;
  for (const handle of await tpm.getHandles(HANDLE_RANGE.TRANSIENT)) if (handle !== srk) await tpm.flushContext(handle);
  t.true(verifies(key, await vault.ecdsaSign(key, hash)));
  await vault.destroy();
});

test.serial('keys survive a swtpm restart (new connection, objects gone)', async (t) => {
  const fx = fixture!;
  const vault = await newCard();
  const key = await vault.generateKey('eccp256', 'none');
  const state = vault.state();
  t.true(verifies(key, await vault.ecdsaSign(key, hash)));
  await fx.tpm.close();
  await fx.sw.restart();
  fx.tpm = await Tpm.open({ tcti: fx.sw.tcti });
  const reopened = await TpmVault.open(fx.tpm, state);
  t.true(verifies(key, await reopened.ecdsaSign(key, hash)));
  t.deepEqual(await reopened.verifyPin(PIN), { ok: true });
  await reopened.destroy();
});

test.serial('the same vault keeps working after a swtpm crash and restart (library reconnects)', async (t) => {
  const fx = fixture!;
  const vault = await newCard();
  const key = await vault.generateKey('eccp256', 'pin');
  t.deepEqual(await vault.verifyPin(PIN), { ok: true });
  t.true(verifies(key, await vault.ecdsaSign(key, hash)));
  await fx.sw.kill9();
  await fx.sw.restart();
  t.true(verifies(key, await vault.ecdsaSign(key, hash)));
  vault.lock();
  t.deepEqual(await vault.verifyPin(PIN), { ok: true });
  await vault.destroy();
});

test.serial('several cards share one TPM connection concurrently', async (t) => {
  const cards = await Promise.all([newCard(), newCard(), newCard()]);
  const keys = await Promise.all(cards.map((card) => card.generateKey('eccp256', 'pin')));
  const results = await Promise.all(cards.map((card) => card.verifyPin(PIN)));
  t.true(results.every((r) => r.ok));
  const signatures = await Promise.all(
    Array.from({ length: 12 }, (_, i) => cards[i % 3]!.ecdsaSign(keys[i % 3]!, hash).then((sig) => verifies(keys[i % 3]!, sig))),
  );
  t.true(signatures.every(Boolean));
  // A key of one card is useless in another.
  await t.throwsAsync(cards[0]!.ecdsaSign(keys[1]!, hash), { instanceOf: VaultError });
  for (const card of cards) await card.destroy();
});
