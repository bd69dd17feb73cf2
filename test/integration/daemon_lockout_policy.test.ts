import test from 'ava';
import { Tpm } from '../../tpm/index.js';
import { applyLockoutPolicy, WINDOWS_DA_POLICY } from '../../daemon/tpm_lockout_policy.js';
import { startSwtpm } from '../helpers/swtpm.js';

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
