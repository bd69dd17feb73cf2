/**
 * TpmVault.revision() on a real swtpm: every operation that changes state() changes the
 * revision (the card application saves only when it moves), and the operations on the
 * signature path leave both alone.
 */
import test, { type ExecutionContext } from 'ava';
import { createECDH, createHash, randomBytes } from 'node:crypto';
import type { ManagementKey } from '../../applet/key_vault.js';
import { TpmVault } from '../../vault/tpm_vault.js';
import { encode, useTpmFixture } from './vault_fixture.js';

const fixture = useTpmFixture(test);

const PIN = encode('13572468');
const PUK = encode('86420135');
const hash = new Uint8Array(createHash('sha256').update('data').digest());
const newManagementKey = (): ManagementKey => ({ algorithm: 'aes128', key: new Uint8Array(randomBytes(16)) });

type Expectation = 'changes' | 'unchanged';

/**
 * Runs `operation` and checks the vault's state() and revision() around it: 'changes' means
 * state() must differ afterwards (so the test really covers a mutation) and so must the
 * revision; 'unchanged' means both stay equal. Either way: new state => new revision.
 */
async function expectState<T>(t: ExecutionContext, vault: TpmVault, what: string, expectation: Expectation, operation: () => Promise<T>): Promise<T> {
  const jsonBefore = JSON.stringify(vault.state());
  const revisionBefore = vault.revision();
  const result = await operation();
  const stateMoved = JSON.stringify(vault.state()) !== jsonBefore;
  const revisionMoved = vault.revision() !== revisionBefore;
  if (stateMoved) t.true(revisionMoved, `${what}: state() changed but revision() did not`);
  if (expectation === 'changes') t.true(stateMoved, `${what}: expected to change state()`);
  else t.false(stateMoved || revisionMoved, `${what}: expected to leave state() and revision() alone`);
  return result;
}

test.serial('PIN, PUK, retries and management key: every state change moves the revision', async (t) => {
  const managementKey = newManagementKey();
  const vault = await TpmVault.create(fixture.tpm, { pin: PIN, puk: PUK, managementKey, pinTries: 5, pukTries: 5 });
  t.true(Number.isFinite(vault.revision()));
  const step = <T>(what: string, expectation: Expectation, operation: () => Promise<T>): Promise<T> => expectState(t, vault, what, expectation, operation);

  t.deepEqual(await step('verifyPin wrong', 'unchanged', () => vault.verifyPin(encode('wrong-pin'))), { ok: false, reason: 'wrong', remaining: 4 });
  t.deepEqual(await step('verifyPin right', 'unchanged', () => vault.verifyPin(PIN)), { ok: true });
  await step('pinStatus', 'unchanged', () => vault.pinStatus());
  await step('pukStatus', 'unchanged', () => vault.pukStatus());
  const statuses = await step('retryStatus', 'unchanged', () => vault.retryStatus());
  t.deepEqual(statuses, { pin: await vault.pinStatus(), puk: await vault.pukStatus() }, 'one read gives what the two calls give');
  t.deepEqual(statuses.puk, { total: 5, remaining: 5, isDefault: false });
  await step('persisted (nothing pending)', 'unchanged', () => vault.persisted());

  // PIN change: staged (pinNext), then promoted by persisted().
  t.deepEqual(await step('changePin wrong', 'unchanged', () => vault.changePin(encode('wrong-pin'), encode('24682468'))), { ok: false, reason: 'wrong', remaining: 4 });
  t.deepEqual(await step('changePin', 'changes', () => vault.changePin(PIN, encode('24682468'))), { ok: true });
  await step('persisted (PIN)', 'changes', () => vault.persisted());
  // A pending change promoted by the next PIN operation instead of persisted().
  await step('changePin again', 'changes', () => vault.changePin(encode('24682468'), PIN));
  t.deepEqual(await step('verifyPin settles the pending PIN', 'changes', () => vault.verifyPin(PIN)), { ok: true });

  await step('changePuk', 'changes', () => vault.changePuk(PUK, encode('97539753')));
  await step('persisted (PUK)', 'changes', () => vault.persisted());
  await step('unblockPinWithPuk', 'changes', () => vault.unblockPinWithPuk(encode('97539753'), PIN));
  await step('persisted (unblock)', 'changes', () => vault.persisted());
  await step('setRetries', 'changes', () => vault.setRetries(4, 3, PIN, PUK));
  await step('persisted (retries)', 'changes', () => vault.persisted());

  // Management key: staged, then settled by managementKey(); a change back while pending is cancelled.
  await step('managementKey (nothing pending)', 'unchanged', () => vault.managementKey());
  const second = newManagementKey();
  await step('setManagementKey', 'changes', () => vault.setManagementKey(second));
  await step('managementKey settles the pending key', 'changes', () => vault.managementKey());
  await step('setManagementKey again', 'changes', () => vault.setManagementKey(newManagementKey()));
  await step('setManagementKey back to the live key cancels the pending one', 'changes', () => vault.setManagementKey(second));
  t.deepEqual((await vault.managementKey()).key, second.key);
  await step('setManagementKey then persisted', 'changes', () => vault.setManagementKey(managementKey));
  await step('persisted (management key)', 'changes', () => vault.persisted());

  await step('resetCard', 'changes', () => vault.resetCard(PIN, PUK, newManagementKey()));
  await vault.destroy();
});

test.serial('keys and attestation: signatures leave state and revision alone', async (t) => {
  const vault = await TpmVault.create(fixture.tpm, { pin: PIN, puk: undefined, managementKey: newManagementKey() });
  const step = <T>(what: string, expectation: Expectation, operation: () => Promise<T>): Promise<T> => expectState(t, vault, what, expectation, operation);
  t.deepEqual(await vault.verifyPin(PIN), { ok: true });

  // Keys are records in the card state, not in the vault's: making and forgetting them moves nothing.
  const ecc = await step('generateKey eccp256', 'unchanged', () => vault.generateKey('eccp256', 'pin'));
  const rsa = await step('generateKey rsa2048', 'unchanged', () => vault.generateKey('rsa2048', 'none'));
  const peer = createECDH('prime256v1');
  peer.generateKeys();
  const imported = await step('importKey eccp256', 'unchanged', () => vault.importKey({ algorithm: 'eccp256', d: new Uint8Array(peer.getPrivateKey()) }, 'none'));
  await step('ecdsaSign', 'unchanged', () => vault.ecdsaSign(ecc, hash));
  const other = createECDH('prime256v1');
  other.generateKeys();
  await step('ecdh', 'unchanged', () => vault.ecdh(imported, new Uint8Array(other.getPublicKey())));
  const block = new Uint8Array(256);
  block[255] = 1;
  await step('rsaPrivate', 'unchanged', () => vault.rsaPrivate(rsa, block));
  await step('pukStatus (no PUK)', 'unchanged', () => vault.pukStatus());
  t.deepEqual(await step('retryStatus (no PUK)', 'unchanged', () => vault.retryStatus()), { pin: { total: 5, remaining: 5, isDefault: false }, puk: undefined });
  await step('deleteKey', 'unchanged', () => vault.deleteKey(imported));
  await step('lock', 'unchanged', async () => vault.lock());

  await step('createAttestationKey', 'changes', () => vault.createAttestationKey());
  await step('attestationKey', 'unchanged', async () => vault.attestationKey());
  await step('signWithAttestationKey', 'unchanged', () => vault.signWithAttestationKey(encode('challenge')));
  await step('certifyKey', 'unchanged', () => vault.certifyKey(ecc, encode('nonce')));

  // A card without PUK: the admin unblock stages a new PIN object.
  await step('unblockPinWithAdmin', 'changes', () => vault.unblockPinWithAdmin(encode('11112222')));
  await step('persisted (admin unblock)', 'changes', () => vault.persisted());
  await step('setRetries without PUK', 'changes', () => vault.setRetries(6, 1, PIN, undefined));
  await vault.destroy();
});

test.serial('open: the state comes back as saved, with a revision of its own', async (t) => {
  const vault = await TpmVault.create(fixture.tpm, { pin: PIN, puk: PUK, managementKey: newManagementKey() });
  await vault.changePin(PIN, encode('55556666'));
  const saved = vault.state();
  const again = await TpmVault.open(fixture.tpm, saved);
  t.deepEqual(again.state(), saved);
  const revision = again.revision();
  t.deepEqual(await again.verifyPin(encode('55556666')), { ok: true }, 'the pending PIN is promoted');
  t.not(again.revision(), revision);
  t.notDeepEqual(again.state(), saved);
  await again.destroy();
});
