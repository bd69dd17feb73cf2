/**
 * TPM commands against a real swtpm; every cryptographic result is checked with node:crypto.
 */
import test from 'ava';
import {
  constants, createECDH, createHash, generateKeyPairSync, publicEncrypt, randomBytes, verify,
} from 'node:crypto';
import { startSwtpm, type SwtpmInstance } from '../helpers/swtpm.js';
import {
  Tpm, TPM_ALG, TPM_CC, TPM_ECC, TPM_RH, TPM_ST, TPMA_NV, TpmError, RC, attestationKeyTemplate, eccKeyTemplate,
  ecdsaSignatureToDer, eccPointToUncompressed, nvName, objectName, permanent, publicKeyToNode, rsaKeyTemplate,
  sealedDataTemplate, srkEccTemplate, endorsementKeyEccTemplate, makeCredential, type LoadedObject, type Signature,
} from '../../tpm/index.js';

let sw: SwtpmInstance;
let tpm: Tpm;
let srk: LoadedObject;

test.before(async () => {
  sw = await startSwtpm();
  tpm = await Tpm.open({ tcti: sw.tcti });
  srk = await tpm.storageRoot();
});

test.after.always(async () => {
  await tpm?.close();
  await sw?.stop();
});

const pin = Buffer.from('PIN-derived auth 0123456789');

function derOf(sig: Signature): Uint8Array {
  return ecdsaSignatureToDer(sig);
}

for (const [curve, hash, nodeHash, label] of [
  [TPM_ECC.NIST_P256, TPM_ALG.SHA256, 'sha256', 'P-256'],
  [TPM_ECC.NIST_P384, TPM_ALG.SHA384, 'sha384', 'P-384'],
] as const) {
  test.serial(`ECDSA ${label}: signature verifies with node:crypto, public key matches name`, async (t) => {
    const blob = await tpm.create(srk, eccKeyTemplate(curve), { userAuth: pin });
    t.deepEqual(Buffer.from(blob.name), Buffer.from(objectName(blob.publicArea)));
    const key = await tpm.load(srk, blob);
    try {
      const msg = randomBytes(100);
      const digest = createHash(nodeHash).update(msg).digest();
      const sig = await tpm.sign(key, digest, { scheme: TPM_ALG.ECDSA, hash }, { auth: pin });
      t.is(sig.sigAlg, TPM_ALG.ECDSA);
      t.true(verify(nodeHash, msg, { key: publicKeyToNode(key.publicArea), dsaEncoding: 'der' }, derOf(sig)));
      t.false(verify(nodeHash, Buffer.concat([msg, Buffer.of(1)]), { key: publicKeyToNode(key.publicArea), dsaEncoding: 'der' }, derOf(sig)));
      const rp = await tpm.readPublic(key.handle);
      t.deepEqual(Buffer.from(rp.name), Buffer.from(key.name));
    } finally {
      await tpm.flushContext(key.handle);
    }
  });
}

test.serial('RSA-2048: RSASSA and RSAPSS signatures verify; raw, RSAES and OAEP decryption round-trip', async (t) => {
  const blob = await tpm.create(srk, rsaKeyTemplate(2048), { userAuth: pin });
  const key = await tpm.load(srk, blob);
  try {
    const pub = publicKeyToNode(key.publicArea);
    const msg = Buffer.from('message to sign');
    const digest = createHash('sha256').update(msg).digest();
    const ssa = await tpm.sign(key, digest, { scheme: TPM_ALG.RSASSA, hash: TPM_ALG.SHA256 }, { auth: pin });
    if (ssa.sigAlg !== TPM_ALG.RSASSA) return t.fail();
    t.true(verify('sha256', msg, pub, ssa.sig));
    const pss = await tpm.sign(key, digest, { scheme: TPM_ALG.RSAPSS, hash: TPM_ALG.SHA256 }, { auth: pin });
    if (pss.sigAlg !== TPM_ALG.RSAPSS) return t.fail();
    t.true(verify('sha256', msg, { key: pub, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO }, pss.sig));

    // raw RSA: a full-length block (as a PIV host sends it, already padded)
    const block = Buffer.concat([Buffer.from([0x00, 0x01]), Buffer.alloc(200, 0xff), Buffer.from([0]), randomBytes(53)]);
    const c = publicEncrypt({ key: pub, padding: constants.RSA_NO_PADDING }, block);
    const raw = await tpm.rsaDecrypt(key, c, { scheme: TPM_ALG.NULL }, undefined, { auth: pin });
    t.deepEqual(Buffer.from(raw), block);

    const secret = randomBytes(32);
    const c2 = publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_PADDING }, secret);
    t.deepEqual(Buffer.from(await tpm.rsaDecrypt(key, c2, { scheme: TPM_ALG.RSAES }, undefined, { auth: pin })), secret);

    const c3 = publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256', oaepLabel: Buffer.from('LABEL\0') }, secret);
    t.deepEqual(Buffer.from(await tpm.rsaDecrypt(key, c3, { scheme: TPM_ALG.OAEP, hash: TPM_ALG.SHA256 }, Buffer.from('LABEL'), { auth: pin })), secret);
  } finally {
    await tpm.flushContext(key.handle);
  }
});

for (const [curve, nodeCurve, label] of [[TPM_ECC.NIST_P256, 'prime256v1', 'P-256'], [TPM_ECC.NIST_P384, 'secp384r1', 'P-384']] as const) {
  test.serial(`ECDH_ZGen ${label} equals node:crypto ECDH`, async (t) => {
    const blob = await tpm.create(srk, eccKeyTemplate(curve, { sign: false, decrypt: true }), { userAuth: pin });
    const key = await tpm.load(srk, blob);
    try {
      const peer = createECDH(nodeCurve);
      peer.generateKeys();
      const size = curve === TPM_ECC.NIST_P256 ? 32 : 48;
      const pp = peer.getPublicKey();
      const z = await tpm.ecdhZGen(key, { x: pp.subarray(1, 1 + size), y: pp.subarray(1 + size) }, { auth: pin });
      if (key.publicArea.type !== TPM_ALG.ECC) return t.fail();
      const expected = peer.computeSecret(Buffer.from(eccPointToUncompressed(key.publicArea.unique, curve)));
      t.deepEqual(Buffer.from(z.x), expected);
    } finally {
      await tpm.flushContext(key.handle);
    }
  });
}

test.serial('seal / unseal, change auth, old auth refused and new accepted', async (t) => {
  const secret = randomBytes(48);
  const blob = await tpm.create(srk, sealedDataTemplate({ noDA: true }), { userAuth: pin, data: secret });
  let obj = await tpm.load(srk, blob);
  t.deepEqual(Buffer.from(await tpm.unseal(obj, { auth: pin })), secret);
  const newPin = Buffer.from('new PIN-derived auth');
  const newPriv = await tpm.objectChangeAuth(obj, srk, newPin, { auth: pin });
  await tpm.flushContext(obj.handle);
  obj = await tpm.load(srk, { public: blob.public, private: newPriv });
  try {
    t.deepEqual(Buffer.from(await tpm.unseal(obj, { auth: newPin })), secret);
    const e = await t.throwsAsync(tpm.unseal(obj, { auth: pin }), { instanceOf: TpmError });
    t.is(e?.base, RC.BAD_AUTH);
  } finally {
    await tpm.flushContext(obj.handle);
  }
});

test.serial('import an external RSA-2048 key: the TPM signs, node verifies', async (t) => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  const b = (s: string | undefined): Buffer => Buffer.from(s ?? '', 'base64url');
  const blob = await tpm.importKey(srk, rsaKeyTemplate(2048, { imported: true }), { type: 'rsa', n: b(jwk.n), e: b(jwk.e).readUIntBE(0, b(jwk.e).length), p: b(jwk.p) }, pin);
  const key = await tpm.load(srk, blob);
  try {
    const msg = Buffer.from('imported');
    const sig = await tpm.sign(key, createHash('sha256').update(msg).digest(), { scheme: TPM_ALG.RSASSA, hash: TPM_ALG.SHA256 }, { auth: pin });
    if (sig.sigAlg !== TPM_ALG.RSASSA) return t.fail();
    t.true(verify('sha256', msg, publicKey, sig.sig));
  } finally {
    await tpm.flushContext(key.handle);
  }
});

for (const [namedCurve, curve, hash, nodeHash] of [['P-256', TPM_ECC.NIST_P256, TPM_ALG.SHA256, 'sha256'], ['P-384', TPM_ECC.NIST_P384, TPM_ALG.SHA384, 'sha384']] as const) {
  test.serial(`import an external ECC ${namedCurve} key: the TPM signs, node verifies`, async (t) => {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve });
    const jwk = privateKey.export({ format: 'jwk' });
    const b = (s: string | undefined): Buffer => Buffer.from(s ?? '', 'base64url');
    const blob = await tpm.importKey(srk, eccKeyTemplate(curve, { imported: true }), { type: 'ecc', curveId: curve, d: b(jwk.d), x: b(jwk.x), y: b(jwk.y) }, pin);
    const key = await tpm.load(srk, blob);
    try {
      const msg = Buffer.from('imported ecc');
      const sig = await tpm.sign(key, createHash(nodeHash).update(msg).digest(), { scheme: TPM_ALG.ECDSA, hash }, { auth: pin });
      t.true(verify(nodeHash, msg, { key: publicKey, dsaEncoding: 'der' }, ecdsaSignatureToDer(sig)));
    } finally {
      await tpm.flushContext(key.handle);
    }
  });
}

test.serial('NV: define, write, read, counter, read public, undefine', async (t) => {
  const index = 0x01500101;
  const nvAuth = Buffer.from('nv auth');
  const attrs = TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD | TPMA_NV.NO_DA;
  const ent = await tpm.nvDefineSpace({ nvIndex: index, nameAlg: TPM_ALG.SHA256, attributes: attrs, authPolicy: new Uint8Array(0), dataSize: 700 }, nvAuth);
  try {
    const data = randomBytes(700);
    await tpm.nvWrite(index, data, 0, { auth: nvAuth });
    t.deepEqual(Buffer.from(await tpm.nvRead(index, 700, 0, { auth: nvAuth })), data);
    t.deepEqual(Buffer.from(await tpm.nvRead(index, 10, 5, { auth: nvAuth })), data.subarray(5, 15));
    const pub = await tpm.nvReadPublic(index);
    t.is(pub.nvPublic.dataSize, 700);
    t.truthy(pub.nvPublic.attributes & TPMA_NV.WRITTEN);
    t.notDeepEqual(Buffer.from(pub.name), Buffer.from(ent.name)); // WRITTEN changed the name
    t.deepEqual(Buffer.from(pub.name), Buffer.from(nvName(pub.nvPublic)));
  } finally {
    await tpm.nvUndefineSpace(index);
  }
  const counter = 0x01500102;
  await tpm.nvDefineSpace({ nvIndex: counter, nameAlg: TPM_ALG.SHA256, attributes: attrs | TPMA_NV.TPM_NT_COUNTER, authPolicy: new Uint8Array(0), dataSize: 8 }, nvAuth);
  try {
    await tpm.nvIncrement(counter, { auth: nvAuth });
    const a = await tpm.nvReadCounter(counter, { auth: nvAuth });
    await tpm.nvIncrement(counter, { auth: nvAuth });
    await tpm.nvIncrement(counter, { auth: nvAuth });
    t.is(await tpm.nvReadCounter(counter, { auth: nvAuth }), a + 2n);
    const e = await t.throwsAsync(tpm.nvDefineSpace({ nvIndex: counter, nameAlg: TPM_ALG.SHA256, attributes: attrs | TPMA_NV.TPM_NT_COUNTER, authPolicy: new Uint8Array(0), dataSize: 8 }));
    t.is((e as TpmError).rcName, 'TPM_RC_NV_DEFINED');
  } finally {
    await tpm.nvUndefineSpace(counter);
  }
});

test.serial('random, capabilities, TestParms', async (t) => {
  const r = await tpm.getRandom(100);
  t.is(r.length, 100);
  t.notDeepEqual(Buffer.from(r), Buffer.alloc(100));
  t.true(await tpm.testParms(eccKeyTemplate(TPM_ECC.NIST_P384)));
  t.true(await tpm.testParms(rsaKeyTemplate(2048)));
  t.false(await tpm.testParms({ ...rsaKeyTemplate(2048), keyBits: 4096 }));
  t.false(await tpm.testParms({ ...eccKeyTemplate(TPM_ECC.NIST_P256), curveId: 0x7777 }));
  const props = await tpm.getProperties(0x100, 50);
  t.true(props.size > 10);
});

test.serial('persistent SRK via EvictControl, name stable, evict again', async (t) => {
  const persistent = 0x81000101;
  await tpm.evictControl(srk, persistent);
  try {
    const rp = await tpm.readPublic(persistent);
    t.deepEqual(Buffer.from(rp.name), Buffer.from(srk.name));
    t.deepEqual(Buffer.from(objectName(rp.publicArea)), Buffer.from(srk.name));
    t.is(rp.publicArea.objectAttributes, srkEccTemplate().objectAttributes);
  } finally {
    await tpm.evictControl({ handle: persistent, name: srk.name }, persistent);
  }
  await t.throwsAsync(tpm.readPublic(persistent), { instanceOf: TpmError });
});

test.serial('ContextSave / ContextLoad of a key', async (t) => {
  const key = await tpm.load(srk, await tpm.create(srk, eccKeyTemplate(TPM_ECC.NIST_P256)));
  const ctx = await tpm.contextSave(key.handle);
  await tpm.flushContext(key.handle);
  const h = await tpm.contextLoad(ctx);
  try {
    const sig = await tpm.sign({ handle: h, name: key.name }, Buffer.alloc(32, 1), { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 });
    t.is(sig.sigAlg, TPM_ALG.ECDSA);
  } finally {
    await tpm.flushContext(h);
  }
});

test.serial('policy: trial digest of PolicyCommandCode+PolicyAuthValue; key usable only through the policy', async (t) => {
  const trial = await tpm.startPolicySession({ trial: true });
  await tpm.policyCommandCode(trial, TPM_CC.Sign);
  await tpm.policyAuthValue(trial);
  const policy = await tpm.policyGetDigest(trial);
  await tpm.flushContext(trial.handle);
  t.is(policy.length, 32);
  const blob = await tpm.create(srk, eccKeyTemplate(TPM_ECC.NIST_P256, { userWithAuth: false, authPolicy: policy }), { userAuth: pin });
  const key = await tpm.load(srk, blob);
  try {
    const msg = Buffer.from('policy-authorized');
    const digest = createHash('sha256').update(msg).digest();
    await t.throwsAsync(tpm.sign(key, digest, { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { auth: pin }), { instanceOf: TpmError });
    const s = await tpm.startPolicySession();
    try {
      await tpm.policyCommandCode(s, TPM_CC.Sign);
      await tpm.policyAuthValue(s);
      const sig = await tpm.sign(key, digest, { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { auth: pin, session: s });
      t.true(verify('sha256', msg, { key: publicKeyToNode(key.publicArea), dsaEncoding: 'der' }, ecdsaSignatureToDer(sig)));
    } finally {
      await tpm.flushContext(s.handle);
    }
  } finally {
    await tpm.flushContext(key.handle);
  }
});

test.serial('attestation: Certify a key with an AK; Hash ticket lets the AK sign external data', async (t) => {
  const ak = await tpm.load(srk, await tpm.create(srk, attestationKeyTemplate()));
  const key = await tpm.load(srk, await tpm.create(srk, eccKeyTemplate(TPM_ECC.NIST_P256), { userAuth: pin }));
  try {
    const nonce = randomBytes(16);
    const { attest, signature } = await tpm.certify(key, ak, nonce, { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { objectAuth: { auth: pin } });
    t.is(attest.magic, 0xff544347);
    t.is(attest.type, TPM_ST.ATTEST_CERTIFY);
    t.deepEqual(Buffer.from(attest.extraData), nonce);
    t.deepEqual(Buffer.from(attest.certified!.name), Buffer.from(key.name));
    t.true(verify('sha256', attest.raw, { key: publicKeyToNode(ak.publicArea), dsaEncoding: 'der' }, ecdsaSignatureToDer(signature)));

    const tbs = Buffer.concat([Buffer.from([0x30, 0x03, 0x02, 0x01, 0x05])]);
    const { digest, validation } = await tpm.hash(tbs, TPM_ALG.SHA256, TPM_RH.OWNER);
    t.deepEqual(Buffer.from(digest), createHash('sha256').update(tbs).digest());
    const sig = await tpm.sign(ak, digest, { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { validation });
    t.true(verify('sha256', tbs, { key: publicKeyToNode(ak.publicArea), dsaEncoding: 'der' }, ecdsaSignatureToDer(sig)));
  } finally {
    await tpm.flushContext(key.handle);
    await tpm.flushContext(ak.handle);
  }
});

test.serial('permanent() refuses a non-permanent handle', (t) => {
  t.throws(() => permanent(0x81000001));
});

test.serial('credential activation: software MakeCredential to an ECC EK, ActivateCredential with a PolicySecret session', async (t) => {
  const trial = await tpm.startPolicySession({ trial: true });
  await tpm.policySecret(trial, permanent(TPM_RH.ENDORSEMENT));
  const policy = await tpm.policyGetDigest(trial);
  await tpm.flushContext(trial.handle);
  const ek = await tpm.createPrimary(TPM_RH.ENDORSEMENT, endorsementKeyEccTemplate(policy));
  const ak = await tpm.load(srk, await tpm.create(srk, attestationKeyTemplate()));
  try {
    const credential = randomBytes(32);
    const { credentialBlob, secret } = makeCredential(ek.publicArea, ak.name, credential);
    const activate = async (): Promise<Uint8Array> => {
      const s = await tpm.startPolicySession();
      try {
        await tpm.policySecret(s, permanent(TPM_RH.ENDORSEMENT));
        return await tpm.activateCredential(ak, ek, credentialBlob, secret, { keyAuth: { session: s } });
      } finally {
        await tpm.flushContext(s.handle).catch(() => undefined);
      }
    };
    t.deepEqual(Buffer.from(await activate()), credential);
    // a credential bound to another AK name is refused
    const other = makeCredential(ek.publicArea, srk.name, credential);
    const s = await tpm.startPolicySession();
    await tpm.policySecret(s, permanent(TPM_RH.ENDORSEMENT));
    const e = await t.throwsAsync(tpm.activateCredential(ak, ek, other.credentialBlob, other.secret, { keyAuth: { session: s } }), { instanceOf: TpmError });
    t.is(e!.rcName, 'TPM_RC_INTEGRITY');
    await tpm.flushContext(s.handle).catch(() => undefined);
  } finally {
    await tpm.flushContext(ak.handle);
    await tpm.flushContext(ek.handle);
  }
});

test.serial('concurrent calls are queued: one command in flight, the shared session stays in sync', async (t) => {
  const blob = await tpm.create(srk, sealedDataTemplate(), { userAuth: pin, data: Buffer.from('parallel') });
  const obj = await tpm.load(srk, blob);
  try {
    const results = await Promise.all(Array.from({ length: 60 }, (_v, i) =>
      i % 3 === 0 ? tpm.unseal(obj, { auth: pin }) : i % 3 === 1 ? tpm.getRandom(16) : tpm.readPublic(obj.handle).then((r) => r.name)));
    results.forEach((r, i) => {
      if (i % 3 === 0) t.deepEqual(Buffer.from(r), Buffer.from('parallel'));
      else t.is(r.length, i % 3 === 1 ? 16 : 34);
    });
  } finally {
    await tpm.flushContext(obj.handle);
  }
});
