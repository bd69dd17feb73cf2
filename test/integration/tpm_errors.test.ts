/**
 * Typed TPM errors against a real swtpm: wrong auth (DA and noDA), lockout with recovery time,
 * SRK pinning.
 */
import test from 'ava';
import { startSwtpm, type SwtpmInstance } from '../helpers/swtpm.js';
import {
  Tpm, TPM_ALG, TPM_ECC, TpmError, TpmProtocolError, RC, eccKeyTemplate, isAuthFail, isLockout, sealedDataTemplate,
} from '../../tpm/index.js';

let sw: SwtpmInstance;

test.before(async () => {
  sw = await startSwtpm();
});

test.after.always(async () => {
  await sw?.stop();
});

const right = Buffer.from('right auth');
const wrong = Buffer.from('wrong auth');

test.serial('wrong auth: AUTH_FAIL on a DA key (session 1), BAD_AUTH on a noDA object; both salted and password', async (t) => {
  const tpm = await Tpm.open({ tcti: sw.tcti });
  t.teardown(() => tpm.close());
  const srk = await tpm.storageRoot();
  const key = await tpm.load(srk, await tpm.create(srk, eccKeyTemplate(TPM_ECC.NIST_P256), { userAuth: right }));
  const sealed = await tpm.load(srk, await tpm.create(srk, sealedDataTemplate({ noDA: true }), { userAuth: right, data: Buffer.from('x') }));
  try {
    for (const session of ['salted', 'password'] as const) {
      const e = await t.throwsAsync(tpm.sign(key, Buffer.alloc(32), { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { auth: wrong, session }), { instanceOf: TpmError });
      t.is(e!.rcName, 'TPM_RC_AUTH_FAIL');
      t.is(e!.base, RC.AUTH_FAIL);
      t.is(e!.rc, 0x98e);
      t.deepEqual(e!.location, { kind: 'session', index: 1 });
      t.is(e!.command, 'Sign');
      t.true(isAuthFail(e));
      t.false(isLockout(e));
      const b = await t.throwsAsync(tpm.unseal(sealed, { auth: wrong, session }), { instanceOf: TpmError });
      t.is(b!.rcName, 'TPM_RC_BAD_AUTH');
      t.is(b!.rc, 0x9a2);
      t.true(isAuthFail(b));
    }
    // the salted session survives failures: right auth still works
    t.deepEqual(Buffer.from(await tpm.unseal(sealed, { auth: right })), Buffer.from('x'));
    const info = await tpm.dictionaryAttackInfo();
    t.is(info.lockoutCounter, 2);
    await tpm.dictionaryAttackLockReset();
    t.is((await tpm.dictionaryAttackInfo()).lockoutCounter, 0);
  } finally {
    await tpm.flushContext(key.handle);
    await tpm.flushContext(sealed.handle);
  }
});

test.serial('lockout after the DA limit: typed LOCKOUT with the recovery time; reset clears it', async (t) => {
  const tpm = await Tpm.open({ tcti: sw.tcti });
  t.teardown(() => tpm.close());
  const srk = await tpm.storageRoot();
  const key = await tpm.load(srk, await tpm.create(srk, eccKeyTemplate(TPM_ECC.NIST_P256), { userAuth: right }));
  try {
    const before = await tpm.dictionaryAttackInfo();
    t.is(before.maxAuthFail, 3);
    const sign = (auth: Buffer): Promise<unknown> => tpm.sign(key, Buffer.alloc(32), { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { auth });
    for (let i = 0; i < before.maxAuthFail; i++) await t.throwsAsync(sign(wrong), { instanceOf: TpmError, message: /AUTH_FAIL/ });
    const e = await t.throwsAsync(sign(right), { instanceOf: TpmError });
    t.true(isLockout(e));
    t.is(e!.rcName, 'TPM_RC_LOCKOUT');
    const info = await tpm.dictionaryAttackInfo();
    t.true(info.inLockout);
    t.is(info.recoverySeconds, 1000);
    t.is(info.lockoutRecovery, 1000);
    await tpm.dictionaryAttackLockReset();
    t.false((await tpm.dictionaryAttackInfo()).inLockout);
    t.is((await sign(right) as { sigAlg: number }).sigAlg, TPM_ALG.ECDSA);
    await tpm.dictionaryAttackParameters({ maxTries: 32, recoveryTime: 600, lockoutRecovery: 600 });
    const changed = await tpm.dictionaryAttackInfo();
    t.is(changed.maxAuthFail, 32);
    t.is(changed.lockoutInterval, 600);
    await tpm.dictionaryAttackParameters({ maxTries: 3, recoveryTime: 1000, lockoutRecovery: 1000 });
  } finally {
    await tpm.flushContext(key.handle);
  }
});

test.serial('SRK pinning: the right name is accepted, another is refused with SALT_KEY_MISMATCH', async (t) => {
  const first = await Tpm.open({ tcti: sw.tcti });
  const name = await first.storageRootName();
  await first.close();
  const pinned = await Tpm.open({ tcti: sw.tcti, expectedSrkName: name });
  t.is((await pinned.getRandom(4)).length, 4);
  const srk = await pinned.storageRoot();
  const sealed = await pinned.load(srk, await pinned.create(srk, sealedDataTemplate(), { userAuth: right, data: Buffer.from('ok') }));
  t.deepEqual(Buffer.from(await pinned.unseal(sealed, { auth: right })), Buffer.from('ok'));
  await pinned.flushContext(sealed.handle);
  await pinned.close();

  const other = Buffer.from(name);
  other[other.length - 1]! ^= 1;
  const e = await t.throwsAsync(Tpm.open({ tcti: sw.tcti, expectedSrkName: other }), { instanceOf: TpmProtocolError });
  t.is(e!.code, 'SALT_KEY_MISMATCH');
  // the refused SRK was flushed and the connection closed: the TPM is usable by the next client
  const next = await Tpm.open({ tcti: sw.tcti, flushLeftovers: false });
  t.deepEqual(await next.getHandles(0x80000000), []);
  await next.close();
});
