import test from 'ava';
import { createECDH, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { normaliseHash, ecdsaSignatureDer } from '../../vault/ecdsa_encoding.js';
import { rsaPublicFromCrt } from '../../vault/rsa_crt.js';
import { sealKeyAuth, openKeyAuth, boxEphemeralPoint } from '../../vault/key_auth_box.js';
import { decodeCounters, encodeCounters } from '../../vault/retry_counters.js';
import { decodeWrapped, encodeWrapped } from '../../vault/wrapped_blob.js';
import { parseVaultState } from '../../vault/vault_state.js';
import { deriveAuthValue } from '../../vault/pin_auth.js';
import { VaultError } from '../../vault/vault_error.js';

const b64url = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64url'));

test('normaliseHash pads short hashes on the left and keeps the leftmost bytes of long ones', (t) => {
  t.deepEqual([...normaliseHash(Uint8Array.of(1, 2), 4)], [0, 0, 1, 2]);
  t.deepEqual([...normaliseHash(Uint8Array.of(1, 2, 3, 4, 5, 6), 4)], [1, 2, 3, 4]);
  t.deepEqual([...normaliseHash(Uint8Array.of(9, 8, 7, 6), 4)], [9, 8, 7, 6]);
});

test('ecdsaSignatureDer writes minimal positive INTEGERs', (t) => {
  const r = new Uint8Array(32);
  r[0] = 0x80;
  const s = new Uint8Array(32);
  s[31] = 5;
  const der = ecdsaSignatureDer(r, s);
  // 30 len | 02 21 00 80 .. | 02 01 05
  t.is(der[0], 0x30);
  t.is(der[2], 0x02);
  t.is(der[3], 33);
  t.is(der[4], 0x00);
  t.is(der[5], 0x80);
  t.deepEqual([...der.slice(-3)], [0x02, 0x01, 0x05]);
  t.is(der[1], der.length - 2);
});

/**
 * RSA-2048 keys made once with node:crypto (test/fixtures/rsa2048_crt_keys.json): generating
 * four of them here took long enough on a loaded 2-vCPU machine to time the test out.
 */
interface RsaJwk {
  n: string;
  e: string;
  p: string;
  q: string;
  dp: string;
  dq: string;
  qi: string;
}
const RSA_KEYS = (JSON.parse(readFileSync(new URL('../fixtures/rsa2048_crt_keys.json', import.meta.url), 'utf8')) as { keys: Record<string, RsaJwk> }).keys;
const crtParts = (jwk: RsaJwk) => ({ p: b64url(jwk.p), q: b64url(jwk.q), dp: b64url(jwk.dp), dq: b64url(jwk.dq), qinv: b64url(jwk.qi) });

test('rsaPublicFromCrt recovers n and e from the CRT parts of a node key', (t) => {
  t.deepEqual(Object.keys(RSA_KEYS).sort(), ['3', '65537', '65719']);
  for (const [publicExponent, jwk] of Object.entries(RSA_KEYS)) {
    // The fixture is consistent: p * q = n.
    const big = (value: string): bigint => BigInt(`0x${Buffer.from(value, 'base64url').toString('hex')}`);
    t.is(big(jwk.p) * big(jwk.q), big(jwk.n));
    const result = rsaPublicFromCrt(crtParts(jwk), 256);
    t.deepEqual(Buffer.from(result.modulus), Buffer.from(b64url(jwk.n)));
    t.is(result.exponent, Number(publicExponent));
  }
});

test('rsaPublicFromCrt refuses inconsistent parts with a typed error', (t) => {
  const parts = crtParts(RSA_KEYS['65537']!);
  const badQinv = Uint8Array.from(parts.qinv);
  badQinv[10] ^= 1;
  const error = t.throws(() => rsaPublicFromCrt({ ...parts, qinv: badQinv }, 256), { instanceOf: VaultError });
  t.is(error?.reason, 'BAD_KEY');
  t.throws(() => rsaPublicFromCrt({ ...parts, q: Uint8Array.of(0) }, 256), { instanceOf: VaultError });
});

test('key auth box opens with the ECDH secret of the wrap key and only with it', (t) => {
  const wrap = createECDH('prime256v1');
  const wrapPoint = new Uint8Array(wrap.generateKeys());
  const auth = new Uint8Array(randomBytes(32));
  const box = sealKeyAuth(wrapPoint, auth);
  const { x, y } = boxEphemeralPoint(box);
  const z = new Uint8Array(wrap.computeSecret(Buffer.concat([Buffer.of(4), x, y])));
  t.deepEqual(Buffer.from(openKeyAuth(box, z)), Buffer.from(auth));
  const other = createECDH('prime256v1');
  other.generateKeys();
  const wrongZ = new Uint8Array(other.computeSecret(Buffer.concat([Buffer.of(4), x, y])));
  t.notDeepEqual(Buffer.from(openKeyAuth(box, wrongZ)), Buffer.from(auth));
  t.throws(() => boxEphemeralPoint(box.subarray(1)), { instanceOf: VaultError });
});

test('retry counters round-trip and reject unknown layouts', (t) => {
  const c = { pinTotal: 5, pinRemaining: 3, pinIsDefault: true, hasPuk: true, pukTotal: 4, pukRemaining: 4, pukIsDefault: false, pinGeneration: 0x01020304, pukGeneration: 7, managementGeneration: 0x0a0b0c0d };
  t.deepEqual(decodeCounters(encodeCounters(c)), c);
  const bytes = encodeCounters(c);
  // Layout 3: version 3, 20 bytes; the generations sit where PolicyNV compares them (u32 big-endian at 8, 12, 16).
  t.is(bytes.length, 20);
  t.is(bytes[0], 3);
  t.deepEqual([...bytes.subarray(8)], [1, 2, 3, 4, 0, 0, 0, 7, 10, 11, 12, 13]);
  t.throws(() => decodeCounters(bytes.subarray(0, 8)), { instanceOf: VaultError });
  // Layout 2 (16 bytes) is refused clearly.
  const layout2 = bytes.slice(0, 16);
  layout2[0] = 2;
  t.throws(() => decodeCounters(layout2), { instanceOf: VaultError, message: /unknown layout/ });
  bytes[0] = 9;
  t.throws(() => decodeCounters(bytes), { instanceOf: VaultError });
  const inconsistent = encodeCounters({ ...c, pinRemaining: 9 });
  t.throws(() => decodeCounters(inconsistent), { instanceOf: VaultError });
});

test('wrapped blobs round-trip with and without an auth box and reject garbage', (t) => {
  const pub = Uint8Array.of(0, 3, 1, 2, 3);
  const priv = Uint8Array.of(0, 2, 9, 9);
  t.deepEqual(decodeWrapped(encodeWrapped({ public: pub, private: priv })), { public: pub, private: priv });
  const withBox = decodeWrapped(encodeWrapped({ public: pub, private: priv, authBox: Uint8Array.of(7, 7) }));
  t.deepEqual([...withBox.authBox!], [7, 7]);
  t.throws(() => decodeWrapped('AAUB'), { instanceOf: VaultError });
  t.throws(() => decodeWrapped('not base64!'), { instanceOf: VaultError });
});

test('vault state parsing rejects malformed state with BAD_STATE', (t) => {
  for (const bad of [null, 42, {}, { format: 'tpmvsc-tpm-vault/1' }, { format: 'x' }]) {
    const error = t.throws(() => parseVaultState(bad), { instanceOf: VaultError });
    t.is(error?.reason, 'BAD_STATE');
  }
});

test('PIN-derived auths depend on salt, purpose and value', (t) => {
  const salt = new Uint8Array(16);
  const pin = new TextEncoder().encode('12345678');
  const a = Buffer.from(deriveAuthValue(salt, 'pin', pin));
  t.is(a.length, 32);
  t.notDeepEqual(a, Buffer.from(deriveAuthValue(salt, 'puk', pin)));
  t.notDeepEqual(a, Buffer.from(deriveAuthValue(Uint8Array.of(1, ...salt.subarray(1)), 'pin', pin)));
  t.notDeepEqual(a, Buffer.from(deriveAuthValue(salt, 'pin', new TextEncoder().encode('12345679'))));
});
