/**
 * Wire secrecy: everything sent to and received from swtpm is recorded by a loopback proxy; none
 * of the secrets, PIN-derived auth values, digests to sign or unsealed data may appear in it.
 * A control run with a password session shows that the capture does see clear-text auth.
 */
import test from 'ava';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { startRecordedTpm } from '../helpers/swtpm.js';
import { TPM_ALG, TPM_ECC, TPMA_NV, eccKeyTemplate, sealedDataTemplate } from '../../tpm/index.js';

function appearsIn(capture: Buffer, secret: Uint8Array): boolean {
  // the whole value or any 8-byte window of it
  for (let i = 0; i + 8 <= secret.length; i += 4) if (capture.includes(Buffer.from(secret.subarray(i, i + 8)))) return true;
  return capture.includes(Buffer.from(secret));
}

test('salted sessions keep secrets, PIN-derived auth, digests and unsealed data off the wire', async (t) => {
  const { proxy, tpm } = await startRecordedTpm(t);

  const pinAuth = createHash('sha256').update('PIN 123456').digest();
  const newPinAuth = createHash('sha256').update('PIN 654321').digest();
  const sealedSecret = randomBytes(32);
  const digest = randomBytes(32);
  const nvSecret = randomBytes(32);
  const nvAuth = randomBytes(32);
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  const d = Buffer.from(jwk.d!, 'base64url');

  const srk = await tpm.storageRoot();
  // seal, unseal
  const blob = await tpm.create(srk, sealedDataTemplate(), { userAuth: pinAuth, data: sealedSecret });
  let sealed = await tpm.load(srk, blob);
  t.deepEqual(Buffer.from(await tpm.unseal(sealed, { auth: pinAuth })), sealedSecret);
  // change auth to a new PIN-derived value and use it
  const priv = await tpm.objectChangeAuth(sealed, srk, newPinAuth, { auth: pinAuth });
  await tpm.flushContext(sealed.handle);
  sealed = await tpm.load(srk, { public: blob.public, private: priv });
  t.deepEqual(Buffer.from(await tpm.unseal(sealed, { auth: newPinAuth })), sealedSecret);
  await tpm.flushContext(sealed.handle);
  // sign a digest with a PIN-protected key
  const key = await tpm.load(srk, await tpm.create(srk, eccKeyTemplate(TPM_ECC.NIST_P256), { userAuth: pinAuth }));
  await tpm.sign(key, digest, { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { auth: pinAuth });
  await tpm.flushContext(key.handle);
  // import an external private key
  const imported = await tpm.importKey(srk, eccKeyTemplate(TPM_ECC.NIST_P256, { imported: true }), {
    type: 'ecc', curveId: TPM_ECC.NIST_P256, d, x: Buffer.from(jwk.x!, 'base64url'), y: Buffer.from(jwk.y!, 'base64url'),
  }, pinAuth);
  const ik = await tpm.load(srk, imported);
  await tpm.sign(ik, digest, { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { auth: pinAuth });
  await tpm.flushContext(ik.handle);
  // NV secret with an auth
  const index = 0x01500201;
  await tpm.nvDefineSpace({ nvIndex: index, nameAlg: TPM_ALG.SHA256, attributes: TPMA_NV.AUTHREAD | TPMA_NV.AUTHWRITE | TPMA_NV.NO_DA, authPolicy: new Uint8Array(0), dataSize: 32 }, nvAuth);
  await tpm.nvWrite(index, nvSecret, 0, { auth: nvAuth });
  t.deepEqual(Buffer.from(await tpm.nvRead(index, 32, 0, { auth: nvAuth })), nvSecret);
  await tpm.nvUndefineSpace(index);

  const capture = Buffer.concat([...proxy.sent, ...proxy.received]);
  t.true(capture.length > 2000);
  for (const [name, v] of Object.entries({ pinAuth, newPinAuth, sealedSecret, digest, nvSecret, nvAuth, d })) {
    t.false(appearsIn(capture, v), `${name} appeared on the wire`);
  }

  // control: with password sessions the same capture does see the auth
  const before = proxy.sent.length;
  sealed = await tpm.load(srk, blob);
  await tpm.unseal(sealed, { auth: pinAuth, session: 'password' });
  await tpm.flushContext(sealed.handle);
  const clear = Buffer.concat([...proxy.sent.slice(before), ...proxy.received]);
  t.true(appearsIn(clear, pinAuth));
  // ...while the unsealed data stays encrypted: a salted session is added for parameter encryption
  t.false(appearsIn(clear, sealedSecret));
});

test('encrypt option: owner-authorized NV data is hidden with encrypt: true and visible with encrypt: false', async (t) => {
  const { proxy, tpm } = await startRecordedTpm(t);
  const index = 0x01500301;
  const data = randomBytes(32);
  await tpm.nvDefineSpace({ nvIndex: index, nameAlg: TPM_ALG.SHA256, attributes: TPMA_NV.OWNERREAD | TPMA_NV.OWNERWRITE | TPMA_NV.NO_DA, authPolicy: new Uint8Array(0), dataSize: 32 });
  await tpm.nvWrite(index, data, 0, { authHandle: 0x40000001 });
  t.deepEqual(Buffer.from(await tpm.nvRead(index, 32, 0, { authHandle: 0x40000001, encrypt: true })), data);
  t.false(appearsIn(Buffer.concat([...proxy.sent, ...proxy.received]), data), 'written and read encrypted');
  t.deepEqual(Buffer.from(await tpm.nvRead(index, 32, 0, { authHandle: 0x40000001, encrypt: false })), data);
  t.true(appearsIn(Buffer.concat(proxy.received), data), 'read in clear when asked');
  await tpm.nvUndefineSpace(index);
});
