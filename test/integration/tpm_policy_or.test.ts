/**
 * TPM2_PolicyOR on a real swtpm: a trial session's digest equals the software digest
 * (tpm/policy_digest.ts), in SHA-256 and SHA-384 sessions; a real session passes only when its
 * current digest is one of the branches; bad branch lists are refused before the TPM sees them.
 * The SHA-384 PolicySecret(TPM_RH_ENDORSEMENT) -> PolicyOR(PolicyA, PolicyC) sequence yields the
 * TCG high-range EK authPolicy (PolicyB) that swtpm_setup gives its P-384 EK.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { startSwtpm, type SwtpmInstance } from '../helpers/swtpm.js';
import {
  RC, TPM_ALG, TPM_CC, TPM_RH, Tpm, attestationKeyTemplate, makeCredential, TpmError, TpmProtocolError, emptyPolicyDigest, emptyPolicyDigestFor, handleName, permanent,
  policyCommandCodeDigest, policyOrDigest, policySecretDigest,
} from '../../tpm/index.js';
import { EK_POLICY_A_SHA384, EK_POLICY_B_SHA384, EK_POLICY_C_SHA384, eccP384HighRangeEkTemplate } from '../../attestation/endorsement.js';

let sw: SwtpmInstance;
let tpm: Tpm;

test.before(async () => {
  sw = await startSwtpm();
  tpm = await Tpm.open({ tcti: sw.tcti });
});

test.after.always(async () => {
  await tpm?.close();
  await sw?.stop();
});

test.serial('SHA-256 trial session: PolicyCommandCode then PolicyOR equals the software digest', async (t) => {
  const certifyBranch = policyCommandCodeDigest(emptyPolicyDigest(), TPM_CC.Certify);
  const signBranch = policyCommandCodeDigest(emptyPolicyDigest(), TPM_CC.Sign);
  const third = new Uint8Array(randomBytes(32));
  const session = await tpm.startPolicySession({ trial: true });
  try {
    await tpm.policyCommandCode(session, TPM_CC.Certify);
    t.deepEqual(await tpm.policyGetDigest(session), certifyBranch);
    await tpm.policyOR(session, [signBranch, certifyBranch, third]);
    const expected = policyOrDigest(TPM_ALG.SHA256, [signBranch, certifyBranch, third]);
    t.deepEqual(await tpm.policyGetDigest(session), expected);
    // The order of the branches matters.
    t.notDeepEqual(policyOrDigest(TPM_ALG.SHA256, [certifyBranch, signBranch, third]), expected);
  } finally {
    await tpm.flushContext(session.handle);
  }
});

test.serial('SHA-384 policy session: PolicySecret(endorsement) + PolicyOR(A, C) = the high-range EK PolicyB', async (t) => {
  // The TCG EK profile's SHA-384 PolicyA, computed in software.
  t.deepEqual(EK_POLICY_A_SHA384, policySecretDigest(TPM_ALG.SHA384, emptyPolicyDigestFor(TPM_ALG.SHA384), handleName(TPM_RH.ENDORSEMENT)));
  // PolicyB as read from swtpm_setup's P-384 EK (ReadPublic of 0x81010016).
  const swtpmEkAuthPolicy = 'b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba09699646150f9fc000f3f80e12';
  t.is(Buffer.from(EK_POLICY_B_SHA384).toString('hex'), swtpmEkAuthPolicy);
  const session = await tpm.startPolicySession({ hashAlg: TPM_ALG.SHA384 });
  try {
    await tpm.policySecret(session, permanent(TPM_RH.ENDORSEMENT), { auth: new Uint8Array(0) });
    t.deepEqual(await tpm.policyGetDigest(session), EK_POLICY_A_SHA384);
    await tpm.policyOR(session, [EK_POLICY_A_SHA384, EK_POLICY_C_SHA384]);
    t.is(Buffer.from(await tpm.policyGetDigest(session)).toString('hex'), swtpmEkAuthPolicy);
  } finally {
    await tpm.flushContext(session.handle);
  }
});

test.serial('the H-3 template creates a P-384 EK whose authPolicy is PolicyB', async (t) => {
  const ek = await tpm.createPrimary(TPM_RH.ENDORSEMENT, eccP384HighRangeEkTemplate(), undefined, { auth: new Uint8Array(0) });
  try {
    const { publicArea } = await tpm.readPublic(ek.handle);
    t.is(publicArea.nameAlg, TPM_ALG.SHA384);
    t.deepEqual(publicArea.authPolicy, EK_POLICY_B_SHA384);
  } finally {
    await tpm.flushContext(ek.handle);
  }
});

test.serial('a salted SHA-384 policy session authorizes ActivateCredential next to a SHA-256 session', async (t) => {
  // Pins two session fixes: the salt is KDFe over the salt key's nameAlg (not the session hash),
  // and cpHash / rpHash are computed per session hash algorithm.
  const ek = await tpm.createPrimary(TPM_RH.ENDORSEMENT, eccP384HighRangeEkTemplate(), undefined, { auth: new Uint8Array(0) });
  const ak = await tpm.createPrimary(TPM_RH.OWNER, attestationKeyTemplate({ noDA: true }), undefined, {});
  const session = await tpm.startPolicySession({ hashAlg: TPM_ALG.SHA384 });
  try {
    const secret = new Uint8Array(randomBytes(32));
    const made = makeCredential(ek.publicArea, ak.name, secret);
    await tpm.policySecret(session, permanent(TPM_RH.ENDORSEMENT), { auth: new Uint8Array(0) });
    await tpm.policyOR(session, [EK_POLICY_A_SHA384, EK_POLICY_C_SHA384]);
    const released = await tpm.activateCredential(ak, ek, made.credentialBlob, made.secret, { activateAuth: { session: 'salted' }, keyAuth: { session } });
    t.deepEqual(released, secret);
  } finally {
    await tpm.flushContext(session.handle).catch(() => undefined);
    await tpm.flushContext(ak.handle);
    await tpm.flushContext(ek.handle);
  }
});

test.serial('a real session whose digest is not one of the branches fails with TPM_RC_VALUE', async (t) => {
  const session = await tpm.startPolicySession();
  try {
    await tpm.policyCommandCode(session, TPM_CC.Unseal);
    const error = await t.throwsAsync(
      () => tpm.policyOR(session, [policyCommandCodeDigest(emptyPolicyDigest(), TPM_CC.Sign), new Uint8Array(32)]),
      { instanceOf: TpmError },
    );
    t.is(error!.base, RC.VALUE);
  } finally {
    await tpm.flushContext(session.handle);
  }
});

test.serial('bad branch lists are refused before the TPM sees them', async (t) => {
  const session = await tpm.startPolicySession({ hashAlg: TPM_ALG.SHA384 });
  try {
    const d48 = new Uint8Array(48);
    for (const branches of [[d48], Array.from({ length: 9 }, () => d48), [d48, new Uint8Array(32)]]) {
      const error = await t.throwsAsync(() => tpm.policyOR(session, branches), { instanceOf: TpmProtocolError });
      t.is(error?.code, 'BAD_INPUT');
    }
    t.throws(() => policyOrDigest(TPM_ALG.SHA256, [new Uint8Array(32)]), { instanceOf: TpmProtocolError });
    // The session is still usable: nothing was sent.
    t.deepEqual(await tpm.policyGetDigest(session), new Uint8Array(48));
  } finally {
    await tpm.flushContext(session.handle);
  }
});
