/**
 * TPM2_PolicyNV on a real swtpm: the software digest (tpm/policy_digest.ts) equals a trial
 * session's; a real session passes only while the NV bytes compare true; an object bound
 * to the policy unseals (response encrypted through the policy session) only then.
 */
import test from 'ava';
import { createHash, randomBytes } from 'node:crypto';
import { startSwtpm, startSwtpmProxy, type SwtpmInstance } from '../helpers/swtpm.js';
import {
  RC, TPM_ALG, TPM_CC, TPM_EO, TPMA_NV, TPMA_OBJECT, TPM_ALG as ALG, Tpm, TpmError, emptyPolicyDigest, policyAuthValueDigest,
  policyCommandCodeDigest, policyNvDigest, type KeyedHashPublic, type LoadedObject,
} from '../../tpm/index.js';

let sw: SwtpmInstance;
let tpm: Tpm;
let srk: LoadedObject;
const nvIndex = 0x01500200;
const nvAuth = Buffer.from('policy nv auth');

test.before(async () => {
  sw = await startSwtpm();
  tpm = await Tpm.open({ tcti: sw.tcti });
  srk = await tpm.storageRoot();
  await tpm.nvDefineSpace(
    { nvIndex, nameAlg: TPM_ALG.SHA256, attributes: TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD | TPMA_NV.NO_DA, authPolicy: new Uint8Array(0), dataSize: 8 },
    nvAuth,
  );
  await tpm.nvWrite(nvIndex, Buffer.from('gen\0\0\0\0\x05', 'latin1'), 0, { auth: nvAuth });
});

test.after.always(async () => {
  await tpm?.nvUndefineSpace(nvIndex).catch(() => undefined);
  await tpm?.close();
  await sw?.stop();
});

const five = Uint8Array.of(0, 0, 0, 5);

function softwareDigest(nvName: Uint8Array, operandB: Uint8Array): Uint8Array {
  const d = policyNvDigest(emptyPolicyDigest(), nvName, operandB, 4, TPM_EO.EQ);
  return policyCommandCodeDigest(policyAuthValueDigest(d), TPM_CC.Unseal);
}

async function runPolicy(operandB: Uint8Array, trial: boolean) {
  const session = await tpm.startPolicySession({ trial });
  try {
    await tpm.policyNV(session, nvIndex, operandB, 4, TPM_EO.EQ, { auth: nvAuth, session: 'salted' });
    await tpm.policyAuthValue(session);
    await tpm.policyCommandCode(session, TPM_CC.Unseal);
    return session;
  } catch (e) {
    await tpm.flushContext(session.handle).catch(() => undefined);
    throw e;
  }
}

test.serial('software policy digest equals the trial session digest', async (t) => {
  const { name } = await tpm.nvReadPublic(nvIndex);
  const session = await runPolicy(five, true);
  try {
    t.deepEqual(Buffer.from(await tpm.policyGetDigest(session)), Buffer.from(softwareDigest(name, five)));
  } finally {
    await tpm.flushContext(session.handle);
  }
});

test.serial('PolicyNV: equal passes, unequal is TPM_RC_POLICY, wrong NV auth fails; bound object unseals only on the equal path', async (t) => {
  const { name } = await tpm.nvReadPublic(nvIndex);
  const secret = new Uint8Array(randomBytes(32));
  const auth = Buffer.from('object auth');
  const template: KeyedHashPublic = {
    type: ALG.KEYEDHASH, nameAlg: ALG.SHA256, objectAttributes: TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent,
    authPolicy: softwareDigest(name, five), scheme: { scheme: ALG.NULL }, unique: new Uint8Array(0),
  };
  const blob = await tpm.create(srk, template, { userAuth: auth, data: secret });
  const object = await tpm.load(srk, blob);
  try {
    const good = await runPolicy(five, false);
    try {
      t.deepEqual(Buffer.from(await tpm.unseal(object, { auth, session: good })), Buffer.from(secret));
    } finally {
      await tpm.flushContext(good.handle).catch(() => undefined);
    }
    // Not through plain HMAC: userWithAuth is clear.
    await t.throwsAsync(tpm.unseal(object, { auth, session: 'salted' }), { instanceOf: TpmError });
    const e = await t.throwsAsync(runPolicy(Uint8Array.of(0, 0, 0, 6), false), { instanceOf: TpmError });
    t.is(e?.base, RC.POLICY);
    const bad = await tpm.startPolicySession();
    try {
      const wrongAuth = await t.throwsAsync(tpm.policyNV(bad, nvIndex, five, 4, TPM_EO.EQ, { auth: Buffer.from('nope'), session: 'salted' }), { instanceOf: TpmError });
      t.is(wrongAuth?.base, RC.BAD_AUTH);
    } finally {
      await tpm.flushContext(bad.handle).catch(() => undefined);
    }
    // After the NV value moves, the same policy fails: the object is dead.
    await tpm.nvWrite(nvIndex, Uint8Array.of(0, 0, 0, 6), 4, { auth: nvAuth });
    const dead = await t.throwsAsync(runPolicy(five, false), { instanceOf: TpmError });
    t.is(dead?.base, RC.POLICY);
  } finally {
    await tpm.flushContext(object.handle);
  }
});

test.serial('unseal through the policy session: the auth and the unsealed data stay off the wire', async (t) => {
  const own = await startSwtpm();
  t.teardown(() => own.stop());
  const proxy = await startSwtpmProxy(own);
  t.teardown(() => proxy.close());
  const wired = await Tpm.open({ tcti: proxy.tcti });
  t.teardown(() => wired.close());
  const index = 0x01500201;
  const indexAuth = randomBytes(32);
  await wired.nvDefineSpace(
    { nvIndex: index, nameAlg: TPM_ALG.SHA256, attributes: TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD | TPMA_NV.NO_DA, authPolicy: new Uint8Array(0), dataSize: 4 },
    indexAuth,
  );
  await wired.nvWrite(index, five, 0, { auth: indexAuth });
  const { name } = await wired.nvReadPublic(index);
  const policy = policyCommandCodeDigest(policyAuthValueDigest(policyNvDigest(emptyPolicyDigest(), name, five, 0, TPM_EO.EQ)), TPM_CC.Unseal);
  const auth = createHash('sha256').update('PIN 24681357').digest();
  const secret = randomBytes(32);
  const root = await wired.storageRoot();
  const template: KeyedHashPublic = {
    type: ALG.KEYEDHASH, nameAlg: ALG.SHA256, objectAttributes: TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent,
    authPolicy: policy, scheme: { scheme: ALG.NULL }, unique: new Uint8Array(0),
  };
  const object = await wired.load(root, await wired.create(root, template, { userAuth: auth, data: secret }));
  const session = await wired.startPolicySession();
  await wired.policyNV(session, index, five, 0, TPM_EO.EQ, { auth: indexAuth, session: 'salted' });
  await wired.policyAuthValue(session);
  await wired.policyCommandCode(session, TPM_CC.Unseal);
  t.deepEqual(Buffer.from(await wired.unseal(object, { auth, session })), secret);
  await wired.flushContext(session.handle).catch(() => undefined);
  await wired.flushContext(object.handle);
  const capture = Buffer.concat([...proxy.sent, ...proxy.received]);
  for (const [label, value] of Object.entries({ auth, secret, indexAuth })) {
    t.false(capture.includes(value), `${label} appeared on the wire`);
    t.false(capture.includes(value.subarray(0, 8)), `part of ${label} appeared on the wire`);
  }
});
