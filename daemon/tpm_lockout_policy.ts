/**
 * The TPM's dictionary-attack (DA) policy, as the cards need it.
 *
 * Every wrong PIN or PUK is also a TPM authorization failure. A TPM that locks out after
 * 3 failures (swtpm's default, and some firmware's) blocks every card after 3 wrong PINs,
 * before the card's own 5 tries are spent, and for 1000 s. Windows configures TPM 2.0
 * chips to 32 failures with one forgiven every 10 minutes; with mode 'windows' the daemon
 * does the same at start, but only when the TPM is stricter than that and its lockout
 * password is empty. A TPM whose lockout hierarchy has a password (TPMA_PERMANENT.lockoutAuthSet)
 * is left alone without trying: a wrong lockout authorization, the empty one included, locks
 * the lockout hierarchy itself for the TPM's lockout recovery time.
 */
import { channel } from 'node:diagnostics_channel';
import type { Tpm } from '../tpm/index.js';
import type { TpmLockoutMode } from './config.js';

export const WINDOWS_DA_POLICY = { maxTries: 32, recoveryTime: 600, lockoutRecovery: 600 } as const;

const diagnostics = channel('tpmvsc:daemon');

export type LockoutPolicyOutcome = 'kept' | 'already-sufficient' | 'lockout-password-set' | 'applied' | 'refused-by-tpm';

export async function applyLockoutPolicy(tpm: Tpm, mode: TpmLockoutMode): Promise<LockoutPolicyOutcome> {
  if (mode === 'keep') return 'kept';
  const before = await tpm.dictionaryAttackInfo();
  if (before.maxAuthFail >= WINDOWS_DA_POLICY.maxTries) return 'already-sufficient';
  if ((await tpm.permanentAttributes()).lockoutAuthSet) {
    diagnostics.publish({
      event: 'tpm_lockout_policy_kept',
      detail: `the TPM locks out after ${before.maxAuthFail} failures, recovery ${before.lockoutInterval} s; its DA parameters are kept because the lockout hierarchy has a password (set them with tpm2_dictionarylockout -s -n 32 -t 600 -l 600 -p LOCKOUTPASS)`,
    });
    return 'lockout-password-set';
  }
  try {
    await tpm.dictionaryAttackParameters(WINDOWS_DA_POLICY, { auth: new Uint8Array(0), session: 'password' });
  } catch (error) {
    diagnostics.publish({
      event: 'tpm_lockout_policy_kept',
      detail: `the TPM locks out after ${before.maxAuthFail} failures and refused Windows' policy (lockout password set?): ${(error as Error).message}`,
    });
    return 'refused-by-tpm';
  }
  diagnostics.publish({
    event: 'tpm_lockout_policy_applied',
    detail: `TPM dictionary-attack policy: ${WINDOWS_DA_POLICY.maxTries} failures, recovery ${WINDOWS_DA_POLICY.recoveryTime} s (was ${before.maxAuthFail} failures, ${before.lockoutInterval} s)`,
  });
  return 'applied';
}
