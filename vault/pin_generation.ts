/**
 * The authPolicy of the PIN and PUK objects: they open only while the card's counter NV
 * index holds the generation they were made for, so a PIN/PUK change (which bumps the
 * generation) kills every older object, also copies in backups.
 *
 *   authPolicy = H-chain of
 *     1. PolicyNV(counter index, offset GENERATION_OFFSET[purpose], operandB = g (u32 BE), TPM_EO_EQ)
 *     2. PolicyAuthValue            the PIN/PUK-derived auth is still proven (HMAC, DA-counted)
 *     3. PolicyCommandCode(Unseal)  the policy is good for nothing else
 *
 * PolicyNV comes first so a stale object fails (TPM_RC_POLICY) before any auth is checked:
 * no DA count, no card try. userWithAuth is clear, so the object can't be used by plain HMAC.
 *
 * The management-key object has the same policy without step 2 (the card unseals it by
 * itself before the 9B challenge, no secret is presented):
 *
 *   authPolicy = H-chain of PolicyNV(counter index, offset 16, operandB = g, TPM_EO_EQ) → PolicyCommandCode(Unseal)
 */
import {
  RC,
  TPM_CC,
  TPM_EO,
  TpmError,
  emptyPolicyDigest,
  policyAuthValueDigest,
  policyCommandCodeDigest,
  policyNvDigest,
  type LoadedObject,
  type Tpm,
} from '../tpm/index.js';
import type { SecretPurpose } from './pin_auth.js';
import { GENERATION_OFFSET, generationBytes, type CounterIndex, type GenerationPurpose } from './retry_counters.js';
import { VaultError } from './vault_error.js';

/** The authPolicy of a PIN (or PUK) object bound to `generation` of the index named `nvName`. */
export function generationPolicyDigest(nvName: Uint8Array, purpose: SecretPurpose, generation: number): Uint8Array {
  let digest = emptyPolicyDigest();
  digest = policyNvDigest(digest, nvName, generationBytes(generation), GENERATION_OFFSET[purpose], TPM_EO.EQ);
  digest = policyAuthValueDigest(digest);
  return policyCommandCodeDigest(digest, TPM_CC.Unseal);
}

/** The authPolicy of the management-key object bound to `generation` (no auth value: see above). */
export function managementPolicyDigest(nvName: Uint8Array, generation: number): Uint8Array {
  const digest = policyNvDigest(emptyPolicyDigest(), nvName, generationBytes(generation), GENERATION_OFFSET.management, TPM_EO.EQ);
  return policyCommandCodeDigest(digest, TPM_CC.Unseal);
}

const LABEL: Record<GenerationPurpose, string> = { pin: 'PIN', puk: 'PUK', management: 'management-key' };

/** Thrown when the NV generation is not the one an object was made for (old files, or a newer change). */
export function staleObjectError(purpose: GenerationPurpose, cause?: unknown): VaultError {
  return new VaultError(
    'BAD_STATE',
    `the ${LABEL[purpose]} object in the card files is from an older ${LABEL[purpose]} generation than the TPM's (files restored from a backup?): it can no longer be used`,
    cause === undefined ? undefined : { cause },
  );
}

/**
 * Unseals a PIN/PUK (or management-key, with an empty `auth`) object through a fresh policy session (salted: the secret comes back
 * encrypted). Auth failures (wrong PIN) surface as the TPM's error, unchanged, for the
 * caller's counter logic; a generation mismatch becomes staleObjectError.
 */
export async function unsealWithGeneration(
  tpm: Tpm,
  counters: CounterIndex,
  purpose: GenerationPurpose,
  generation: number,
  object: LoadedObject,
  auth: Uint8Array,
  /** Runs once the policy is satisfied, right before the Unseal checks `auth` (a PIN try is counted here). */
  beforeCheck?: () => Promise<void>,
): Promise<Uint8Array> {
  const session = await tpm.startPolicySession();
  try {
    try {
      await tpm.policyNV(session, counters.nvIndex, generationBytes(generation), GENERATION_OFFSET[purpose], TPM_EO.EQ, { auth: counters.authValue, session: 'salted' });
    } catch (e) {
      if (e instanceof TpmError && e.base === RC.POLICY) throw staleObjectError(purpose, e);
      throw e;
    }
    // The management-key object has no auth value to prove (managementPolicyDigest).
    if (purpose !== 'management') await tpm.policyAuthValue(session);
    await tpm.policyCommandCode(session, TPM_CC.Unseal);
    await beforeCheck?.();
    try {
      return await tpm.unseal(object, { auth, session });
    } catch (e) {
      // The policy digest differs (an object made for another generation or index).
      if (e instanceof TpmError && e.base === RC.POLICY_FAIL) throw staleObjectError(purpose, e);
      throw e;
    }
  } finally {
    await tpm.flushContext(session.handle).catch(() => undefined);
  }
}
