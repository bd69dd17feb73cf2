/**
 * TPM vault key operations on a real swtpm, every result checked with node:crypto.
 */
import test from 'ava';
import {
  constants,
  createECDH,
  createHash,
  generateKeyPairSync,
  publicEncrypt,
  randomBytes,
  verify,
} from 'node:crypto';
import { TpmVault } from '../../vault/tpm_vault.js';
import { VaultError } from '../../vault/vault_error.js';
import { LoadedObjects } from '../../vault/loaded_objects.js';
import type { KeyRecord } from '../../applet/key_vault.js';
import { encode, nodePublicKey, startTpm, stopTpm, type TpmFixture } from './vault_fixture.js';

let fixture: TpmFixture | undefined;
let vault: TpmVault;
const PIN = encode('24681357');

test.before(async () => {
  fixture = await startTpm();
  vault = await TpmVault.create(fixture.tpm, {
    pin: PIN,
    puk: encode('11223344'),
    managementKey: { algorithm: 'aes256', key: new Uint8Array(randomBytes(32)) },
  });
});

test.after.always(async () => {
  await stopTpm(fixture);
});

const sha = (alg: string, data: Uint8Array): Uint8Array => new Uint8Array(createHash(alg).update(data).digest());

for (const algorithm of ['eccp256', 'eccp384'] as const) {
  test.serial(`${algorithm}: ECDSA over hashes shorter than, equal to and longer than the field verifies in node`, async (t) => {
    const key = await vault.generateKey(algorithm, 'none');
    t.is(key.origin, 'generated');
    const publicKey = nodePublicKey(key.publicKey);
    const data = encode(`message for ${algorithm}`);
    for (const hashAlg of ['sha1', 'sha256', 'sha384', 'sha512']) {
      const signature = await vault.ecdsaSign(key, sha(hashAlg, data));
      t.true(verify(hashAlg, data, { key: publicKey, dsaEncoding: 'der' }, signature), `${hashAlg} on ${algorithm}`);
      t.false(verify(hashAlg, encode('other'), { key: publicKey, dsaEncoding: 'der' }, signature));
    }
  });

  test.serial(`${algorithm}: ECDH equals node's ECDH`, async (t) => {
    const key = await vault.generateKey(algorithm, 'none');
    const peer = createECDH(algorithm === 'eccp256' ? 'prime256v1' : 'secp384r1');
    const peerPoint = new Uint8Array(peer.generateKeys());
    const shared = await vault.ecdh(key, peerPoint);
    t.deepEqual(Buffer.from(shared), peer.computeSecret(Buffer.from((key.publicKey as { point: Uint8Array }).point)));
  });

  test.serial(`${algorithm}: an imported key works and matches the software key`, async (t) => {
    const pair = generateKeyPairSync('ec', { namedCurve: algorithm === 'eccp256' ? 'P-256' : 'P-384' });
    const jwk = pair.privateKey.export({ format: 'jwk' });
    const d = new Uint8Array(Buffer.from(jwk.d!, 'base64url'));
    const key = await vault.importKey({ algorithm, d }, 'none');
    t.is(key.origin, 'imported');
    const point = (key.publicKey as { point: Uint8Array }).point;
    t.deepEqual(Buffer.from(point.subarray(1, 1 + d.length)), Buffer.from(jwk.x!, 'base64url'));
    const data = encode('imported');
    const signature = await vault.ecdsaSign(key, sha(algorithm === 'eccp256' ? 'sha256' : 'sha384', data));
    t.true(verify(algorithm === 'eccp256' ? 'sha256' : 'sha384', data, { key: pair.publicKey, dsaEncoding: 'der' }, signature));
    const peer = createECDH(algorithm === 'eccp256' ? 'prime256v1' : 'secp384r1');
    const shared = await vault.ecdh(key, new Uint8Array(peer.generateKeys()));
    t.deepEqual(Buffer.from(shared), peer.computeSecret(Buffer.from(point)));
  });
}

function pkcs1v15Sha256(data: Uint8Array): Uint8Array {
  // EMSA-PKCS1-v1_5: 00 01 FF..FF 00 || DigestInfo(SHA-256) || hash
  const digestInfo = Buffer.concat([Buffer.from('3031300d060960864801650304020105000420', 'hex'), createHash('sha256').update(data).digest()]);
  const block = Buffer.alloc(256, 0xff);
  block[0] = 0;
  block[1] = 1;
  block[256 - digestInfo.length - 1] = 0;
  digestInfo.copy(block, 256 - digestInfo.length);
  return new Uint8Array(block);
}

async function checkRsa(t: import('ava').ExecutionContext, key: KeyRecord): Promise<void> {
  const publicKey = nodePublicKey(key.publicKey);
  // Raw RSA round trip: node encrypts without padding, the TPM's raw private operation decrypts.
  const message = new Uint8Array(randomBytes(256));
  message[0] = 0x00;
  const encrypted = publicEncrypt({ key: publicKey, padding: constants.RSA_NO_PADDING }, message);
  t.deepEqual(Buffer.from(await vault.rsaPrivate(key, encrypted)), Buffer.from(message));
  // PKCS#1 v1.5 signature padded in node, private operation in the TPM.
  const data = encode('sign me');
  const signature = await vault.rsaPrivate(key, pkcs1v15Sha256(data));
  t.true(verify('sha256', data, publicKey, signature));
}

test.serial('rsa2048: raw RSA round-trips and a PKCS#1 v1.5 signature verifies', async (t) => {
  const key = await vault.generateKey('rsa2048', 'none');
  t.deepEqual([...(key.publicKey as { publicExponent: Uint8Array }).publicExponent], [1, 0, 1]);
  await checkRsa(t, key);
  const error = await t.throwsAsync(vault.rsaPrivate(key, new Uint8Array(255)), { instanceOf: VaultError });
  t.is(error?.reason, 'BAD_INPUT');
  const tooBig = await t.throwsAsync(vault.rsaPrivate(key, new Uint8Array(256).fill(0xff)), { instanceOf: VaultError });
  t.is(tooBig?.reason, 'BAD_INPUT', tooBig?.message);
});

test.serial('rsa2048: an imported key works and matches the software key', async (t) => {
  const pair = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = pair.privateKey.export({ format: 'jwk' });
  const part = (s: string | undefined): Uint8Array => new Uint8Array(Buffer.from(s!, 'base64url'));
  const key = await vault.importKey({ algorithm: 'rsa2048', p: part(jwk.p), q: part(jwk.q), dp: part(jwk.dp), dq: part(jwk.dq), qinv: part(jwk.qi) }, 'pin');
  t.deepEqual(Buffer.from((key.publicKey as { modulus: Uint8Array }).modulus), Buffer.from(jwk.n!, 'base64url'));
  await vault.verifyPin(PIN);
  try {
    await checkRsa(t, key);
    const data = encode('matches');
    t.true(verify('sha256', data, pair.publicKey, await vault.rsaPrivate(key, pkcs1v15Sha256(data))));
  } finally {
    vault.lock();
  }
});

test.serial("'pin' keys need the PIN, 'none' keys don't; PIN keys can be generated while locked", async (t) => {
  vault.lock();
  const pinKey = await vault.generateKey('eccp256', 'pin');
  const freeKey = await vault.generateKey('eccp256', 'none');
  const hash = sha('sha256', encode('x'));
  const refused = await t.throwsAsync(vault.ecdsaSign(pinKey, hash), { instanceOf: VaultError });
  t.is(refused?.reason, 'PIN_REQUIRED');
  t.true(verify('sha256', encode('x'), { key: nodePublicKey(freeKey.publicKey), dsaEncoding: 'der' }, await vault.ecdsaSign(freeKey, hash)));
  t.is((await vault.verifyPin(PIN)).ok, true);
  t.true(verify('sha256', encode('x'), { key: nodePublicKey(pinKey.publicKey), dsaEncoding: 'der' }, await vault.ecdsaSign(pinKey, hash)));
  vault.lock();
  await t.throwsAsync(vault.ecdsaSign(pinKey, hash), { instanceOf: VaultError });
  // A 'pin' key relabelled 'none' is useless: its auth is not K_free.
  await t.throwsAsync(vault.ecdsaSign({ ...pinKey, authorization: 'none' }, hash), { instanceOf: VaultError });
});

test.serial('more keys than swtpm object slots are all usable in turn', async (t) => {
  const keys: KeyRecord[] = [];
  for (let i = 0; i < 6; i++) keys.push(await vault.generateKey(i % 2 ? 'eccp384' : 'eccp256', i % 3 ? 'none' : 'pin'));
  t.is((await vault.verifyPin(PIN)).ok, true);
  for (let round = 0; round < 2; round++) {
    for (const key of keys) {
      const hash = sha(key.algorithm === 'eccp256' ? 'sha256' : 'sha384', encode(`round ${round}`));
      const signature = await vault.ecdsaSign(key, hash);
      t.true(verify(key.algorithm === 'eccp256' ? 'sha256' : 'sha384', encode(`round ${round}`), { key: nodePublicKey(key.publicKey), dsaEncoding: 'der' }, signature));
    }
  }
  t.true(LoadedObjects.for(fixture!.tpm).size <= LoadedObjects.for(fixture!.tpm).capacity);
  vault.lock();
});

test.serial('bad input gets typed errors', async (t) => {
  const ec = await vault.generateKey('eccp256', 'none');
  const cases: Array<Promise<unknown>> = [
    vault.ecdsaSign(ec, new Uint8Array(0)),
    vault.ecdh(ec, new Uint8Array(65)),
    vault.ecdh(ec, Uint8Array.of(4, ...new Uint8Array(64).fill(1))), // not on the curve
    vault.rsaPrivate(ec, new Uint8Array(256)),
    vault.generateKey('rsa4096' as never, 'none'),
    vault.importKey({ algorithm: 'eccp256', d: new Uint8Array(32) }, 'none'),
    vault.importKey({ algorithm: 'eccp256', d: new Uint8Array(33).fill(1) }, 'none'),
    vault.importKey({ algorithm: 'rsa2048', p: Uint8Array.of(7), q: Uint8Array.of(11), dp: Uint8Array.of(1), dq: Uint8Array.of(1), qinv: Uint8Array.of(1) }, 'none'),
    vault.ecdsaSign({ ...ec, wrapped: 'AAAA' }, new Uint8Array(32)),
  ];
  for (const pending of cases) {
    const error = await t.throwsAsync(pending, { instanceOf: VaultError });
    t.truthy(error?.reason);
  }
  // The vault still works afterwards.
  t.is((await vault.ecdsaSign(ec, new Uint8Array(32).fill(3)))[0], 0x30);
});
