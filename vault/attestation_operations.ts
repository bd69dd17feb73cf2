/**
 * The TPM command sequences the card's attestation identity key (attestation_key.ts) runs
 * once TpmVault has loaded it: signing the AIK's own certificate data, TPM2_Certify of a card
 * key, TPM2_ActivateCredential against the EK. TpmVault runs them under the connection lock.
 */
import {
  TPM_ALG,
  TPM_CC,
  TPM_RH,
  ecdsaSignatureToDer,
  objectName,
  permanent,
  type LoadedObject,
  type SavedContext,
  type Signature,
  type Tpm,
  type TpmEntity,
  type TpmPublic,
} from '../tpm/index.js';
import type { EndorsementKeySource, KeyCertification } from './attestation_key.js';
import type { LoadedObjects } from './loaded_objects.js';
import { VaultError } from './vault_error.js';

function signatureOf(signature: Signature): Uint8Array {
  if (signature.sigAlg !== TPM_ALG.ECDSA) throw new VaultError('TPM', 'the attestation key made a signature of another kind');
  return ecdsaSignatureToDer(signature);
}

/**
 * TPM2_Hash (which refuses data starting with TPM_GENERATED_VALUE, so nothing can pass for a
 * TPM-made structure) gives the ticket that TPM2_Sign with a restricted key demands; a DER
 * ECDSA-SHA256 signature.
 */
export async function signWithLoadedAik(tpm: Tpm, aik: LoadedObject, data: Uint8Array): Promise<Uint8Array> {
  const { digest, validation } = await tpm.hash(data, TPM_ALG.SHA256, TPM_RH.OWNER);
  return signatureOf(await tpm.sign(aik, digest, { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { validation, session: 'salted' }));
}

/**
 * TPM2_Certify of the card key saved in `keyContext` (brought back with ContextLoad, which needs
 * no slot for its parent: swtpm has 3) through the key's certify-only policy.
 */
export async function certifyWithLoadedAik(
  tpm: Tpm,
  objects: LoadedObjects,
  aik: LoadedObject,
  keyContext: SavedContext,
  keyPublic: TpmPublic,
  qualifyingData: Uint8Array,
): Promise<KeyCertification> {
  const handle = await objects.withRoom(() => tpm.contextLoad(keyContext));
  const session = await tpm.startPolicySession();
  try {
    await tpm.policyCommandCode(session, TPM_CC.Certify);
    const object = { handle, name: objectName(keyPublic) };
    const { attest, signature } = await tpm.certify(object, aik, qualifyingData, { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, {
      objectAuth: { session },
      signAuth: { session: 'salted' },
    });
    return { keyPublic, attest: attest.raw, signature: signatureOf(signature) };
  } finally {
    await tpm.flushContext(session.handle).catch(() => undefined);
    await tpm.flushContext(handle).catch(() => undefined);
  }
}

/**
 * TPM2_ActivateCredential with the EK used through a PolicySecret(TPM_RH_ENDORSEMENT) session
 * (TCG EK profile), with PolicyOR for a high-range EK (endorsement.policy).
 */
export async function activateWithLoadedAik(
  tpm: Tpm,
  objects: LoadedObjects,
  aik: LoadedObject,
  endorsement: EndorsementKeySource,
  credentialBlob: Uint8Array,
  secret: Uint8Array,
): Promise<Uint8Array> {
  let ek: TpmEntity;
  let transient: number | undefined;
  if ('handle' in endorsement) {
    ek = { handle: endorsement.handle, name: (await tpm.readPublic(endorsement.handle)).name };
  } else {
    const primary = await objects.withRoom(() =>
      tpm.createPrimary(TPM_RH.ENDORSEMENT, endorsement.template, undefined, { auth: endorsement.endorsementAuth ?? new Uint8Array(0) }),
    );
    ek = primary;
    transient = primary.handle;
  }
  const session = await tpm.startPolicySession({ hashAlg: endorsement.policy?.hashAlg ?? TPM_ALG.SHA256 });
  try {
    await tpm.policySecret(session, permanent(TPM_RH.ENDORSEMENT), { auth: endorsement.endorsementAuth ?? new Uint8Array(0) });
    // High-range EKs: PolicyOR(PolicyA, PolicyC) over the PolicySecret branch.
    const branches = endorsement.policy?.orBranches;
    if (branches) await tpm.policyOR(session, branches);
    return await tpm.activateCredential(aik, ek, credentialBlob, secret, { activateAuth: { session: 'salted' }, keyAuth: { session } });
  } finally {
    await tpm.flushContext(session.handle).catch(() => undefined);
    if (transient !== undefined) await tpm.flushContext(transient).catch(() => undefined);
  }
}
