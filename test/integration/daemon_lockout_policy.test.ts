import test from 'ava';
import { randomBytes } from 'node:crypto';
import { Tpm, isAuthFail } from '../../tpm/index.js';
import { applyLockoutPolicy, WINDOWS_DA_POLICY } from '../../daemon/tpm_lockout_policy.js';
import { runDaemonOnce } from '../helpers/daemon_run.js';
import { startSwtpm } from '../helpers/swtpm.js';
import { clearDictionaryLockout, setHierarchyPassword } from '../helpers/tpm_passwords.js';

test('a TPM stricter than Windows gets 32 failures / 10 min, unless told to keep its policy', async (t) => {
  const swtpm = await startSwtpm();
  const tpm = await Tpm.open({ tcti: swtpm.tcti });
  t.teardown(async () => {
    await tpm.close();
    await swtpm.stop();
  });
  const before = await tpm.dictionaryAttackInfo();
  t.is(before.maxAuthFail, 3, "swtpm's default: 3 failures lock the whole TPM");

  t.is(await applyLockoutPolicy(tpm, 'keep'), 'kept');
  t.is((await tpm.dictionaryAttackInfo()).maxAuthFail, 3, 'keep changes nothing');

  t.is(await applyLockoutPolicy(tpm, 'windows'), 'applied');
  const after = await tpm.dictionaryAttackInfo();
  t.is(after.maxAuthFail, WINDOWS_DA_POLICY.maxTries);
  t.is(after.lockoutInterval, WINDOWS_DA_POLICY.recoveryTime);
  t.is(await applyLockoutPolicy(tpm, 'windows'), 'already-sufficient', 'applied once, then left alone');
});

test('a TPM whose lockout hierarchy has a password is left alone: no try with the empty password, lockout stays usable', async (t) => {
  const swtpm = await startSwtpm();
  t.teardown(() => swtpm.stop());
  const lockoutPassword = `lock-${randomBytes(8).toString('hex')}`;
  await setHierarchyPassword(swtpm.tcti, 'lockout', lockoutPassword);

  const tpm = await Tpm.open({ tcti: swtpm.tcti });
  t.true((await tpm.permanentAttributes()).lockoutAuthSet);
  t.is(await applyLockoutPolicy(tpm, 'windows'), 'lockout-password-set');
  t.is((await tpm.dictionaryAttackInfo()).maxAuthFail, 3, "the TPM's own policy is kept");
  await tpm.close();

  // the real daemon, started twice: it says why it keeps the policy, and burns no lockout try
  for (let start = 0; start < 2; start++) {
    const run = await runDaemonOnce({ tcti: swtpm.tcti });
    t.true(run.ready, run.log);
    t.regex(run.log, /DA parameters are kept because the lockout hierarchy has a password/);
  }
  const cleared = await clearDictionaryLockout(swtpm.tcti, lockoutPassword);
  t.is(cleared.code, 0, `tpm2_dictionarylockout -c -p failed: ${cleared.stderr}`);

  // control: one try with the empty lockout password (what the daemon used to do) blocks it
  const again = await Tpm.open({ tcti: swtpm.tcti });
  const error = await t.throwsAsync(again.dictionaryAttackParameters(WINDOWS_DA_POLICY, { auth: new Uint8Array(0), session: 'password' }));
  t.true(isAuthFail(error), String(error));
  await again.close();
  const blocked = await clearDictionaryLockout(swtpm.tcti, lockoutPassword);
  t.not(blocked.code, 0, 'the lockout hierarchy should now be locked out');
  t.regex(blocked.stderr, /lockout|0x921/i);
});
