/**
 * PIN, PUK, admin unblock, retry counters in TPM NV and DA lockout on a real swtpm.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { createHash, randomBytes, verify } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Tpm } from '../../tpm/index.js';
import { TpmVault } from '../../vault/tpm_vault.js';
import { VaultError } from '../../vault/vault_error.js';
import { encode, nodePublicKey, relaxDictionaryAttack, useTpmFixture } from './vault_fixture.js';

const fixture = useTpmFixture(test);

const PIN = encode('13572468');
const PUK = encode('86420135');
const managementKey = () => ({ algorithm: 'tdes' as const, key: new Uint8Array(randomBytes(24)) });

function newCard(withPuk = true, pinTries = 3): Promise<TpmVault> {
  return TpmVault.create(fixture.tpm, { pin: PIN, puk: withPuk ? PUK : undefined, managementKey: managementKey(), pinTries, pukTries: 2 });
}

const hash = new Uint8Array(createHash('sha256').update('data').digest());

test.serial('verify: right and wrong PIN, counters decrement and reset, blocked after N', async (t) => {
  const vault = await newCard();
  t.deepEqual(await vault.pinStatus(), { total: 3, remaining: 3, isDefault: false });
  t.deepEqual(await vault.verifyPin(encode('wrong-pin')), { ok: false, reason: 'wrong', remaining: 2 });
  t.false(vault.unlocked);
  t.deepEqual(await vault.pinStatus(), { total: 3, remaining: 2, isDefault: false });
  t.deepEqual(await vault.verifyPin(PIN), { ok: true });
  t.true(vault.unlocked);
  t.is((await vault.pinStatus()).remaining, 3);
  vault.lock();
  t.false(vault.unlocked);
  for (const remaining of [2, 1, 0]) t.deepEqual(await vault.verifyPin(encode('nope')), { ok: false, reason: 'wrong', remaining });
  // Blocked: even the right PIN is not checked any more.
  t.deepEqual(await vault.verifyPin(PIN), { ok: false, reason: 'blocked' });
  t.false(vault.unlocked);
  t.is((await vault.pinStatus()).remaining, 0);
  await vault.destroy();
});

test.serial('PUK unblock sets a new PIN; PUK counter counts; admin unblock refused on a PUK card', async (t) => {
  const vault = await newCard();
  const key = await vault.generateKey('eccp256', 'pin');
  for (let i = 0; i < 3; i++) await vault.verifyPin(encode('bad'));
  t.deepEqual(await vault.verifyPin(PIN), { ok: false, reason: 'blocked' });
  const error = await t.throwsAsync(vault.unblockPinWithAdmin(encode('44445555')), { instanceOf: VaultError });
  t.is(error?.reason, 'WRONG_CARD_KIND');
  t.deepEqual(await vault.unblockPinWithPuk(encode('bad-puk'), encode('44445555')), { ok: false, reason: 'wrong', remaining: 1 });
  t.deepEqual(await vault.pukStatus(), { total: 2, remaining: 1, isDefault: false });
  t.deepEqual(await vault.unblockPinWithPuk(PUK, encode('44445555')), { ok: true });
  t.deepEqual(await vault.pukStatus(), { total: 2, remaining: 2, isDefault: false });
  t.deepEqual(await vault.pinStatus(), { total: 3, remaining: 3, isDefault: false });
  t.false(vault.unlocked, 'unblocking does not log in');
  t.deepEqual(await vault.verifyPin(PIN), { ok: false, reason: 'wrong', remaining: 2 });
  t.deepEqual(await vault.verifyPin(encode('44445555')), { ok: true });
  // Keys survive an unblock: same K_user behind the new PIN object.
  t.true(verify('sha256', encode('data'), { key: nodePublicKey(key.publicKey), dsaEncoding: 'der' }, await vault.ecdsaSign(key, hash)));
  // PUK blocked after its tries.
  vault.lock();
  t.deepEqual(await vault.unblockPinWithPuk(encode('x1'), PIN), { ok: false, reason: 'wrong', remaining: 1 });
  t.deepEqual(await vault.unblockPinWithPuk(encode('x2'), PIN), { ok: false, reason: 'wrong', remaining: 0 });
  t.deepEqual(await vault.unblockPinWithPuk(PUK, PIN), { ok: false, reason: 'blocked' });
  await vault.destroy();
});

test.serial('card without PUK: admin unblock works, PUK calls are refused', async (t) => {
  const vault = await newCard(false);
  t.is(await vault.pukStatus(), undefined);
  t.truthy(vault.state().admin);
  t.is(vault.state().puk, undefined);
  const key = await vault.generateKey('eccp384', 'pin');
  for (let i = 0; i < 3; i++) await vault.verifyPin(encode('bad'));
  t.deepEqual(await vault.verifyPin(PIN), { ok: false, reason: 'blocked' });
  await t.throwsAsync(vault.unblockPinWithPuk(PUK, PIN), { instanceOf: VaultError });
  await vault.unblockPinWithAdmin(encode('99887766'));
  t.deepEqual(await vault.pinStatus(), { total: 3, remaining: 3, isDefault: false });
  t.deepEqual(await vault.verifyPin(encode('99887766')), { ok: true });
  const h384 = new Uint8Array(createHash('sha384').update('data').digest());
  t.true(verify('sha384', encode('data'), { key: nodePublicKey(key.publicKey), dsaEncoding: 'der' }, await vault.ecdsaSign(key, h384)));
  await vault.destroy();
});

test.serial('change PIN keeps keys usable; the old PIN fails afterwards; change PUK', async (t) => {
  const vault = await newCard();
  const key = await vault.generateKey('eccp256', 'pin');
  const newPin = encode('12345678'); // the default: isDefault follows the value
  t.deepEqual(await vault.changePin(encode('not-it'), newPin), { ok: false, reason: 'wrong', remaining: 2 });
  t.deepEqual(await vault.changePin(PIN, newPin), { ok: true });
  t.deepEqual(await vault.pinStatus(), { total: 3, remaining: 3, isDefault: true });
  t.deepEqual(await vault.verifyPin(PIN), { ok: false, reason: 'wrong', remaining: 2 });
  t.deepEqual(await vault.verifyPin(newPin), { ok: true });
  t.true(verify('sha256', encode('data'), { key: nodePublicKey(key.publicKey), dsaEncoding: 'der' }, await vault.ecdsaSign(key, hash)));
  // The state saved after the change opens with the new PIN only.
  const reopened = await TpmVault.open(fixture.tpm, JSON.parse(JSON.stringify(vault.state())));
  t.deepEqual(await reopened.verifyPin(PIN), { ok: false, reason: 'wrong', remaining: 2 });
  t.deepEqual(await reopened.verifyPin(newPin), { ok: true });
  t.deepEqual(await vault.changePuk(encode('bad'), encode('55556666')), { ok: false, reason: 'wrong', remaining: 1 });
  t.deepEqual(await vault.changePuk(PUK, encode('55556666')), { ok: true });
  t.deepEqual(await vault.unblockPinWithPuk(PUK, PIN), { ok: false, reason: 'wrong', remaining: 1 });
  t.deepEqual(await vault.unblockPinWithPuk(encode('55556666'), PIN), { ok: true });
  await vault.destroy();
});

test.serial('setRetries sets new totals and values; management key seal / unseal', async (t) => {
  const vault = await newCard();
  await t.throwsAsync(vault.setRetries(4, 4, PIN, PUK), { instanceOf: VaultError, message: /PIN/ });
  t.deepEqual(await vault.verifyPin(PIN), { ok: true });
  await vault.setRetries(7, 6, encode('123456'), encode('12345678'));
  t.deepEqual(await vault.pinStatus(), { total: 7, remaining: 7, isDefault: false });
  t.deepEqual(await vault.pukStatus(), { total: 6, remaining: 6, isDefault: true });
  vault.lock();
  t.deepEqual(await vault.verifyPin(encode('123456')), { ok: true });
  const mk = { algorithm: 'aes192' as const, key: new Uint8Array(randomBytes(24)) };
  await vault.setManagementKey(mk);
  const back = await vault.managementKey();
  t.is(back.algorithm, 'aes192');
  t.deepEqual(Buffer.from(back.key), Buffer.from(mk.key));
  await t.throwsAsync(vault.setManagementKey({ algorithm: 'aes128', key: new Uint8Array(15) }), { instanceOf: VaultError });
  await vault.destroy();
});

test.serial('the state JSON holds no secret in clear', async (t) => {
  const pin = encode('PinSecret77');
  const mk = { algorithm: 'aes256' as const, key: new Uint8Array(randomBytes(32)) };
  const vault = await TpmVault.create(fixture.tpm, { pin, puk: encode('PukSecret88'), managementKey: mk });
  t.deepEqual(await vault.verifyPin(pin), { ok: true });
  await vault.generateKey('eccp256', 'pin');
  const kUser = (vault as unknown as { kUser: Uint8Array }).kUser;
  t.is(kUser.length, 32);
  const json = JSON.stringify(vault.state());
  for (const secret of [pin, encode('PukSecret88'), mk.key, kUser]) {
    const buffer = Buffer.from(secret);
    for (const form of [buffer.toString('latin1'), buffer.toString('hex'), buffer.toString('base64'), buffer.toString('base64url')]) {
      t.false(json.includes(form));
    }
    // also not inside any decoded base64 field
    for (const match of json.matchAll(/"([A-Za-z0-9+/]{16,}={0,2})"/g)) {
      t.is(Buffer.from(match[1]!, 'base64').indexOf(buffer), -1);
    }
  }
  await vault.destroy();
});

test.serial('a TPM lockout is reported as lockout and leaves the card counter alone', async (t) => {
  const tpm = fixture.tpm;
  const vault = await newCard(true, 5);
  await tpm.dictionaryAttackLockReset();
  await tpm.dictionaryAttackParameters({ maxTries: 2, recoveryTime: 120, lockoutRecovery: 120 });
  try {
    t.deepEqual(await vault.verifyPin(encode('bad-1')), { ok: false, reason: 'wrong', remaining: 4 });
    t.deepEqual(await vault.verifyPin(encode('bad-2')), { ok: false, reason: 'wrong', remaining: 3 });
    const locked = await vault.verifyPin(PIN);
    t.is(locked.ok, false);
    t.like(locked, { reason: 'lockout' });
    t.true(locked.ok === false && locked.reason === 'lockout' && locked.recoverySeconds > 0);
    t.is((await vault.pinStatus()).remaining, 3, 'nothing was checked: the card counter is restored');
    t.false(vault.unlocked);
  } finally {
    await relaxDictionaryAttack(tpm);
  }
  t.deepEqual(await vault.verifyPin(PIN), { ok: true });
  await vault.destroy();
});

test.serial('kill -9 between the decrement and the check leaves the counter decremented', async (t) => {
  const fx = fixture!;
  const vault = await newCard(true, 5);
  const state = vault.state();
  t.is((await vault.pinStatus()).remaining, 5);
  // swtpm serves one client at a time: hand the TPM to the child.
  await fx.tpm.close();
  const childPath = fileURLToPath(new URL('./vault_verify_child.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import=tsx', childPath, fx.sw.tcti], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    child.stdin.end(JSON.stringify(state));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`child did not reach the check: ${stderr}`)), 30_000);
      child.stdout.on('data', (d: Buffer) => {
        if (d.toString().includes('decremented')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', () => reject(new Error(`child exited early: ${stderr}`)));
    });
  } finally {
    child.kill('SIGKILL');
    await exited;
    fx.tpm = await Tpm.open({ tcti: fx.sw.tcti });
  }
  const fresh = await TpmVault.open(fx.tpm, state);
  t.deepEqual(await fresh.pinStatus(), { total: 5, remaining: 4, isDefault: false });
  // Restoring the old files does not roll the counter back either (it is not in them).
  t.deepEqual(await fresh.verifyPin(PIN), { ok: true });
  t.is((await fresh.pinStatus()).remaining, 5);
  await fresh.destroy();
});
