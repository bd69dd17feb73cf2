/**
 * PIN-protected data objects sealed by the TPM vault (vault/object_box.ts) on a real swtpm:
 * sealed while locked, opened only after VERIFY (ECDH_ZGen with the user wrap key), through
 * every change of the PIN (change, PUK unblock, admin unblock, SET PIN RETRIES) and a re-open of
 * the vault from its saved state (a daemon restart), and gone with the card (RESET, destroy).
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { TpmVault } from '../../vault/tpm_vault.js';
import { VaultError } from '../../vault/vault_error.js';
import { encode, useTpmFixture } from './vault_fixture.js';

const fixture = useTpmFixture(test);

const PIN = encode('13572468');
const PUK = encode('86420135');
const PRINTED_INFORMATION = 0x5fc109;
const FACIAL_IMAGE = 0x5fc108;
const managementKey = () => ({ algorithm: 'tdes' as const, key: new Uint8Array(randomBytes(24)) });
const value = new Uint8Array(Buffer.from('881a8918' + 'c7c2377bbb99bae11a08b50e1c553c3909d8d67f9496d49c', 'hex'));

function newCard(withPuk: boolean): Promise<TpmVault> {
  return TpmVault.create(fixture.tpm, { pin: PIN, puk: withPuk ? PUK : undefined, managementKey: managementKey() });
}

async function refusesLocked(t: import('ava').ExecutionContext, vault: TpmVault, sealed: string): Promise<void> {
  const error = await t.throwsAsync(vault.openObject(PRINTED_INFORMATION, sealed), { instanceOf: VaultError });
  t.is(error?.reason, 'PIN_REQUIRED');
}

test.serial('sealed while locked, opened after VERIFY; bound to its object; every seal differs', async (t) => {
  const vault = await newCard(true);
  t.false(vault.unlocked);
  const sealed = await vault.sealObject(PRINTED_INFORMATION, value);
  t.not(await vault.sealObject(PRINTED_INFORMATION, value), sealed, 'a fresh ephemeral key and nonce per seal');
  const stored = Buffer.from(sealed, 'base64');
  t.is(stored.length, 1 + 65 + 12 + value.length + 16);
  t.false(stored.includes(Buffer.from(value.subarray(4))), 'no key bytes in the sealed form');
  t.false(JSON.stringify(vault.state()).includes(Buffer.from(value).toString('base64')));
  await refusesLocked(t, vault, sealed);
  t.deepEqual(await vault.verifyPin(PIN), { ok: true });
  t.deepEqual(await vault.openObject(PRINTED_INFORMATION, sealed), value);
  const other = await t.throwsAsync(vault.openObject(FACIAL_IMAGE, sealed), { instanceOf: VaultError });
  t.is(other?.reason, 'BAD_STATE', 'a box does not open as another object');
  const altered = Buffer.from(stored);
  altered[altered.length - 20]! ^= 1;
  t.is((await t.throwsAsync(vault.openObject(PRINTED_INFORMATION, altered.toString('base64')), { instanceOf: VaultError }))?.reason, 'BAD_STATE');
  vault.lock();
  await refusesLocked(t, vault, sealed);
  await vault.destroy();
});

test.serial('a sealed object survives re-opening the vault, PIN change, PUK unblock and SET PIN RETRIES', async (t) => {
  const first = await newCard(true);
  const sealed = await first.sealObject(PRINTED_INFORMATION, value);
  const vault = await TpmVault.open(fixture.tpm, first.state());
  await refusesLocked(t, vault, sealed);
  t.deepEqual(await vault.changePin(PIN, encode('24681357')), { ok: true });
  await vault.persisted();
  t.deepEqual(await vault.verifyPin(encode('24681357')), { ok: true });
  t.deepEqual(await vault.openObject(PRINTED_INFORMATION, sealed), value, 'after a PIN change');
  vault.lock();
  for (let i = 0; i < 5; i++) await vault.verifyPin(encode('99999999'));
  t.deepEqual(await vault.unblockPinWithPuk(PUK, encode('11223344')), { ok: true });
  await vault.persisted();
  t.deepEqual(await vault.verifyPin(encode('11223344')), { ok: true });
  t.deepEqual(await vault.openObject(PRINTED_INFORMATION, sealed), value, 'after a PUK unblock');
  await vault.setRetries(4, 4, encode('12345678'), encode('12345678'));
  await vault.persisted();
  vault.lock();
  t.deepEqual(await vault.verifyPin(encode('12345678')), { ok: true });
  t.deepEqual(await vault.openObject(PRINTED_INFORMATION, sealed), value, 'after SET PIN RETRIES');
  await vault.destroy();
});

test.serial('a card without a PUK: the object survives an admin unblock', async (t) => {
  const vault = await newCard(false);
  const sealed = await vault.sealObject(PRINTED_INFORMATION, value);
  for (let i = 0; i < 5; i++) await vault.verifyPin(encode('99999999'));
  await vault.unblockPinWithAdmin(encode('55556666'));
  await vault.persisted();
  t.deepEqual(await vault.verifyPin(encode('55556666')), { ok: true });
  t.deepEqual(await vault.openObject(PRINTED_INFORMATION, sealed), value);
  await vault.destroy();
});

test.serial('gone with the card: RESET makes a new wrap key, destroy removes the card parent', async (t) => {
  const vault = await newCard(true);
  const sealed = await vault.sealObject(PRINTED_INFORMATION, value);
  const savedBeforeReset = vault.state();
  await vault.resetCard(encode('12345678'), encode('12345678'), managementKey());
  await vault.persisted();
  t.deepEqual(await vault.verifyPin(encode('12345678')), { ok: true });
  t.is((await t.throwsAsync(vault.openObject(PRINTED_INFORMATION, sealed), { instanceOf: VaultError }))?.reason, 'BAD_STATE', 'the old box does not open on the reset card');
  const kept = await vault.sealObject(PRINTED_INFORMATION, value);
  await vault.destroy();
  await t.throwsAsync(vault.openObject(PRINTED_INFORMATION, kept), { instanceOf: VaultError });
  await t.throwsAsync(vault.sealObject(PRINTED_INFORMATION, value), { instanceOf: VaultError });
  await t.throwsAsync(TpmVault.open(fixture.tpm, savedBeforeReset), { instanceOf: VaultError }, 'the pre-RESET files open nothing');
});
