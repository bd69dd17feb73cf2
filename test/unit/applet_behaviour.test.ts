/**
 * Behaviour of the PIV applet that golden rows cannot show: real cryptography
 * checked with node:crypto, chaining, PIN-always slots, import, attestation,
 * RESET, SET PIN RETRIES, save failures and rollback, single-use challenges.
 */
import test from 'ava';
import { constants, createECDH, createHash, createPublicKey, generateKeyPairSync, publicEncrypt, verify } from 'node:crypto';
import {
  DEFAULT_ADMIN_KEY_HEX,
  ecbEncrypt,
  hexBytes,
  makeTestCard,
  mutualAuthenticate,
  toHex,
  verifyCommand,
  type TestCard,
} from '../helpers/applet_harness.js';
import { readTlv } from '../../applet/tlv.js';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { APPLET_CHANNEL } from '../../applet/piv_applet.js';

const lc = (hex: string): string => (hex.length / 2).toString(16).padStart(2, '0');
const PIN_OK = verifyCommand('12345678');

/** Sends a command with short chaining (CLA 10, 255-byte parts) and collects 61xx parts. */
async function sendChained(card: TestCard, header: string, dataHex: string): Promise<string> {
  const data = hexBytes(dataHex);
  let response = '';
  for (let offset = 0; offset < data.length; offset += 255) {
    const part = data.subarray(offset, offset + 255);
    const last = offset + 255 >= data.length;
    const cla = last ? '00' : '10';
    response = await card.send(cla + header.slice(2) + lc(toHex(part)) + toHex(part) + (last ? '00' : ''));
    if (!last && response !== '9000') return response;
  }
  let body = '';
  while (response.slice(-4).startsWith('61')) {
    body += response.slice(0, -4);
    response = await card.send('00c00000' + response.slice(-2));
  }
  return body + response;
}

function publicKeyFromGenerate(hex: string): ReturnType<typeof createPublicKey> {
  const bytes = hexBytes(hex.slice(0, -4));
  const template = readTlv(bytes, 0);
  const inner = template.value;
  const first = readTlv(inner, 0);
  if (first.tag === 0x86) {
    const point = first.value;
    const size = (point.length - 1) / 2;
    return createPublicKey({
      key: {
        kty: 'EC',
        crv: size === 32 ? 'P-256' : 'P-384',
        x: Buffer.from(point.subarray(1, 1 + size)).toString('base64url'),
        y: Buffer.from(point.subarray(1 + size)).toString('base64url'),
      },
      format: 'jwk',
    });
  }
  const exponent = readTlv(inner, first.end);
  return createPublicKey({
    key: { kty: 'RSA', n: Buffer.from(first.value).toString('base64url'), e: Buffer.from(exponent.value).toString('base64url') },
    format: 'jwk',
  });
}

function resultOf(responseHex: string): Uint8Array {
  const outer = readTlv(hexBytes(responseHex.slice(0, -4)), 0);
  const inner = readTlv(outer.value, 0);
  return inner.value;
}

test('RSA 2048: GENERATE via 61xx chaining, raw private op via command chaining, checked with node:crypto', async (t) => {
  const card = makeTestCard();
  await mutualAuthenticate(card.send);
  const generated = await sendChained(card, '0047009a', 'ac03800107');
  t.regex(generated, /^7f4982010981820100/);
  t.true(generated.endsWith('9000'));
  const publicKey = publicKeyFromGenerate(generated);
  t.is(await card.send(PIN_OK), '9000');
  // PKCS#1 v1.5 signature block built by the host, raw private op on the card
  const digestInfo = Buffer.concat([Buffer.from('3031300d060960864801650304020105000420', 'hex'), createHash('sha256').update('hello').digest()]);
  const block = Buffer.concat([Buffer.from([0, 1]), Buffer.alloc(256 - 3 - digestInfo.length, 0xff), Buffer.from([0]), digestInfo]);
  const data = '7c820106' + '8200' + '81820100' + block.toString('hex');
  const response = await sendChained(card, '0087079a', data);
  t.true(response.endsWith('9000'), response.slice(-4));
  const signature = resultOf(response);
  t.is(signature.length, 256);
  t.true(verify('sha256', Buffer.from('hello'), { key: publicKey, padding: constants.RSA_PKCS1_PADDING }, signature));
  // decrypt: the host encrypts raw, the card returns the block
  const secret = Buffer.concat([Buffer.from([0, 2]), Buffer.alloc(200, 0x55), Buffer.from([0]), Buffer.alloc(53, 0x42)]);
  const encrypted = publicEncrypt({ key: publicKey, padding: constants.RSA_NO_PADDING }, secret);
  const decrypted = await sendChained(card, '0087079a', '7c820106820081820100' + encrypted.toString('hex'));
  t.is(toHex(resultOf(decrypted)), secret.toString('hex'));
  // an extended APDU gets the whole answer at once
  const extendedData = '7c820106820081820100' + encrypted.toString('hex');
  const extended = await card.send('0087079a00010a' + extendedData + '0000');
  t.is(extended, decrypted);
  // block not below the modulus -> 6A80
  t.is(await card.send('0087079a00010a' + '7c820106820081820100' + 'ff'.repeat(256)), '6a80');
});

test('ECDSA P-256 and P-384 over hashes of any length, ECDH, checked with node:crypto', async (t) => {
  const card = makeTestCard();
  await mutualAuthenticate(card.send);
  for (const [alg, slot, hashName] of [['11', '9a', 'sha256'], ['14', '9d', 'sha384'], ['11', '82', 'sha512']] as const) {
    const publicKey = publicKeyFromGenerate(await card.send(`004700${slot}05ac038001${alg}`));
    t.is(await card.send(PIN_OK), '9000');
    const hash = createHash(hashName).update('message').digest('hex');
    const data = `7c${lc('8200' + '81' + lc(hash) + hash)}820081${lc(hash)}${hash}`;
    const response = await card.send(`0087${alg}${slot}${lc(data)}${data}`);
    t.true(response.endsWith('9000'), `${slot} ${response}`);
    t.true(verify(hashName, Buffer.from('message'), publicKey, resultOf(response)), `signature by ${slot}`);
  }
  // ECDH with 9A
  const peer = createECDH('prime256v1');
  peer.generateKeys();
  const generated = await card.send('0047009a05ac03800111');
  const cardPoint = hexBytes(generated.slice(10, 10 + 130));
  const point = peer.getPublicKey().toString('hex');
  const data = `7c${lc('8200' + '8541' + point)}82008541${point}`;
  const response = await card.send(`0087119a${lc(data)}${data}`);
  t.is(toHex(resultOf(response)), peer.computeSecret(cardPoint).toString('hex'));
});

test('9C signature key: PIN before every use, 9E: no PIN, AA override to "always" on 9A', async (t) => {
  const card = makeTestCard();
  await mutualAuthenticate(card.send);
  await card.send('0047009c05ac03800111');
  const sign = (slot: string): Promise<string> => card.send(`008711${slot}267c2482008120` + '01'.repeat(32));
  t.is(await sign('9c'), '6982');
  t.is(await card.send(PIN_OK), '9000');
  t.regex(await sign('9c'), /9000$/);
  t.is(await sign('9c'), '6982', 'the verification was consumed');
  t.is(await card.send(PIN_OK), '9000');
  t.regex(await sign('9c'), /9000$/);
  await card.send('0047009a08ac06800111aa0103');
  t.is(await card.send(PIN_OK), '9000');
  t.regex(await sign('9a'), /9000$/);
  t.is(await sign('9a'), '6982');
  t.regex(await card.send('00f7009a'), /^0101110202030103010104/);
});

test('replacing a key forgets the old one in the vault; 9B challenges are single use', async (t) => {
  const card = makeTestCard();
  await mutualAuthenticate(card.send);
  await card.send('0047009a05ac03800111');
  t.is(card.vault.keyCount, 1);
  await card.send('0047009a05ac03800111');
  t.is(card.vault.keyCount, 1);
  // external authentication: 81 00 then 82 E(challenge)
  card.applet.reset();
  const first = await card.send('0087039b047c028100');
  const challenge = hexBytes(first.slice(8, 24));
  const answer = toHex(ecbEncrypt('03', DEFAULT_ADMIN_KEY_HEX, challenge));
  t.is(await card.send(`0087039b0c7c0a8208${answer}`), '9000');
  t.is(await card.send('0047009d05ac03800111').then((r) => r.slice(-4)), '9000', 'authenticated');
  t.is(await card.send(`0087039b0c7c0a8208${answer}`), '6982', 'replaying the answer fails');
  t.is(await card.send('0047009d05ac03800111'), '6982', 'and the failure ends the authentication');
  // a mutual-auth witness is single use too
  const { first: witnessResponse } = await mutualAuthenticate(card.send);
  t.regex(witnessResponse, /9000$/);
  const replay = await card.send('0087039b167c1480080000000000000000' + '8108a0a1a2a3a4a5a6a7');
  t.is(replay, '6982');
});

test('IMPORT KEY (EC and RSA CRT) then sign; ATTEST asks the attestor only for generated keys', async (t) => {
  const calls: number[] = [];
  const card = makeTestCard({
    attestor: {
      attest: async (subject) => {
        calls.push(subject.slot);
        return Uint8Array.of(0x30, 0x03, 0x02, 0x01, subject.slot);
      },
    },
  });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const d = Buffer.from(ec.privateKey.export({ format: 'jwk' }).d!, 'base64url').toString('hex');
  t.is(await card.send(`00fe119a2206${lc(d)}${d}`), '6982', 'needs 9B');
  await mutualAuthenticate(card.send);
  t.is(await card.send(`00fe119a2506${lc(d)}${d}aa0101`), '9000');
  t.regex(await card.send('00f7009a'), /^010111020201010301020443864104/);
  const hash = createHash('sha256').update('x').digest('hex');
  const sig = await card.send(`0087119a267c2482008120${hash}`);
  t.true(verify('sha256', Buffer.from('x'), ec.publicKey, resultOf(sig)));
  t.is(await card.send('00f99a00'), '6a80', 'imported keys are not attested');
  t.is(await card.send('00f99c00'), '6a88', 'empty slot');
  t.is(await card.send('00fe119a0306' + '01' + '00'), '6a80', 'd = 0 rejected by the vault');

  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = rsa.privateKey.export({ format: 'jwk' });
  const part = (tag: string, value: string): string => {
    const hex = Buffer.from(value, 'base64url').toString('hex');
    return `${tag}8180${hex.padStart(256, '0')}`;
  };
  const body = part('01', jwk.p!) + part('02', jwk.q!) + part('03', jwk.dp!) + part('04', jwk.dq!) + part('05', jwk.qi!);
  t.is(await sendChained(card, '00fe079d', body), '9000');
  t.is(await card.send(PIN_OK), '9000');
  const block = publicEncrypt({ key: rsa.publicKey, padding: constants.RSA_NO_PADDING }, Buffer.alloc(256, 0).fill(7, 1));
  const decrypted = await sendChained(card, '0087079d', '7c820106820081820100' + block.toString('hex'));
  t.is(toHex(resultOf(decrypted)), Buffer.alloc(256, 0).fill(7, 1).toString('hex'));

  await card.send('0047009e05ac03800111');
  t.is(await card.send('00f99e00'), '3003020' + '19e9000');
  t.deepEqual(calls, [0x9e]);
});

test('ATTEST answers 6A81 when the attestor has nothing to attest with (e.g. after RESET)', async (t) => {
  let available = true;
  const card = makeTestCard({
    attestor: {
      available: () => available,
      attest: async (subject) => Uint8Array.of(0x30, 0x03, 0x02, 0x01, subject.slot),
    },
  });
  await mutualAuthenticate(card.send);
  t.is(await card.send('0047009e05ac03800111').then((r) => r.slice(-4)), '9000');
  t.regex(await card.send('00f99e00'), /9000$/);
  available = false;
  t.is(await card.send('00f99e00'), '6a81', 'no attestation key: function not supported');
});

test('a failed save answers 6581 and leaves card and store as before', async (t) => {
  const card = makeTestCard();
  await mutualAuthenticate(card.send);
  const savedBefore = card.store.saved.length;
  card.store.failing = true;
  t.is(await card.send('00db3fff0a5c035fc10553037001aa'), '6581');
  t.is(await card.send('0047009a05ac03800111'), '6581');
  t.is(card.vault.keyCount, 0, 'the generated key was forgotten again');
  t.is(await card.send('00ffffff1b039b18' + '11'.repeat(24)), '6581');
  card.store.failing = false;
  t.false(card.store.saved.slice(savedBefore).some((json) => json.includes('5fc105') || JSON.parse(json).keys['9a']));
  t.is(await card.send('00cb3fff055c035fc105'), '6a82');
  t.is(await card.send('00f7009a'), '6a88');
  card.applet.reset();
  await t.notThrowsAsync(mutualAuthenticate(card.send), 'the old management key still works');
  const beforePut = card.store.saved.length;
  t.is(await card.send('00db3fff0a5c035fc10553037001aa'), '9000');
  t.is(card.store.saved.length, beforePut + 1);
  t.is(JSON.parse(card.store.last!).objects['5fc105'], Buffer.from([0x70, 0x01, 0xaa]).toString('base64'));
});

test('RESET after PIN and PUK are blocked restores the factory state but keeps the identity', async (t) => {
  const card = makeTestCard({ pin: 'secretpin' });
  await mutualAuthenticate(card.send);
  await card.send('0047009a05ac03800111');
  await card.send('00ffffff13089b10' + '22'.repeat(16));
  await card.send('00db3fff0a5c035fc10553037001aa');
  const chuid = await card.send('00cb3fff055c035fc102');
  t.is(await card.send('00fb0000'), '6985');
  for (let i = 0; i < 5; i++) await card.send('00200080083131313131313131');
  t.is(await card.send('00fb0000'), '6985', 'PUK not yet blocked');
  for (let i = 0; i < 5; i++) await card.send('002c0080103939393939393939' + '3131313131313131');
  t.is(await card.send('00f70081'), '0101ff050101060205009000');
  t.is(await card.send('00fb0000'), '9000');
  t.is(await card.send('00f7009a'), '6a88');
  t.is(await card.send('00cb3fff055c035fc105'), '6a82');
  t.is(await card.send('00cb3fff055c035fc102'), chuid, 'same CHUID and GUID');
  t.is(await card.send('00f80000'), '00bc614e9000');
  t.is(await card.send('00f7009b'), '010103020200010501019000', 'default 3DES management key');
  t.is(await card.send(verifyCommand('12345678')), '9000');
  t.is(card.vault.keyCount, 0);
});

test('RESET without 9B is refused (6982) and reported on the applet channel with the reason; nothing is lost', async (t) => {
  const refusals: unknown[] = [];
  const listener = (message: unknown): void => void refusals.push(message);
  subscribe(APPLET_CHANNEL, listener);
  t.teardown(() => unsubscribe(APPLET_CHANNEL, listener));
  const card = makeTestCard({ serial: 424242 });
  await mutualAuthenticate(card.send);
  await card.send('0047009a05ac03800111');
  card.applet.reset();
  for (let i = 0; i < 5; i++) await card.send('00200080083131313131313131');
  for (let i = 0; i < 5; i++) await card.send('002c0080103939393939393939' + '3131313131313131');
  const calls = card.vault.calls;
  t.is(await card.send('00fb0000'), '6982');
  t.is(card.vault.calls, calls, 'the vault was not even asked for the counters');
  t.deepEqual(refusals.filter((r) => (r as { serial?: number }).serial === 424242), [
    { event: 'refused', serial: 424242, instruction: 'RESET', reason: 'RESET needs the management key (9B) authenticated in this card session' },
  ]);
  t.is(card.vault.keyCount, 1, 'the key is still in the vault');
  t.regex(await card.send('00f7009a'), /9000$/);
  // Refusals clients cause all day (an absent object, a missing PIN) are not reported.
  await card.send('00cb3fff055c035fc105');
  await card.send('0087119a267c2482008120' + 'ab'.repeat(32));
  t.is(refusals.filter((r) => (r as { serial?: number }).serial === 424242).length, 1);
});

test('SET PIN RETRIES needs 9B and the PIN, resets PIN/PUK to the defaults', async (t) => {
  const card = makeTestCard({ pin: 'mypin123' });
  t.is(await card.send('00fa0303'), '6982');
  await mutualAuthenticate(card.send);
  t.is(await card.send('00fa0303'), '6982', 'PIN not verified');
  t.is(await card.send(verifyCommand('mypin123')), '9000');
  t.is(await card.send('00fa0000'), '6a86');
  t.is(await card.send('00fa0304'), '9000');
  t.is(await card.send('00f70080'), '0101ff050101060203039000');
  t.is(await card.send('00f70081'), '0101ff050101060204049000');
  t.is(await card.send(verifyCommand('12345678')), '9000');
});

test('TPM lockout looks like a blocked PIN (6983)', async (t) => {
  const card = makeTestCard();
  card.vault.lockedOut = true;
  t.is(await card.send(PIN_OK), '6983');
  card.vault.lockedOut = false;
  t.is(await card.send(PIN_OK), '9000');
});

test('AES-256 management key card: mutual authentication with 16-byte blocks', async (t) => {
  const key = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
  const card = makeTestCard({ managementKey: { algorithm: 'aes256', key: hexBytes(key) } });
  const { second } = await mutualAuthenticate(card.send, key, '0c');
  t.regex(second, /^7c128210[0-9a-f]{32}9000$/);
  t.is(await card.send('00f7009b'), '01010c020200010501009000');
});

test('response chaining with a small Le and GET RESPONSE; another command drops the rest', async (t) => {
  const card = makeTestCard();
  await mutualAuthenticate(card.send);
  const generated = await card.send('0047009a05ac0380011110');
  t.is(generated.length, 16 * 2 + 4);
  t.is(generated.slice(-4), '6136');
  const next = await card.send('00c0000020');
  t.is(next.slice(-4), '6116');
  const last = await card.send('00c00000');
  t.is(last.slice(-4), '9000');
  t.is((generated.slice(0, -4) + next.slice(0, -4) + last.slice(0, -4)).length, 0x46 * 2);
  await card.send('0047009a05ac0380011110');
  await card.send('00fd0000');
  t.is(await card.send('00c00000'), '6985');
});

test('command chaining: an instruction that cannot be chained answers 6884; another INS abandons the chain', async (t) => {
  const card = makeTestCard();
  t.is(await card.send('10fd0000'), '6884');
  t.is(await card.send('10db3fff035c035f'), '9000');
  t.is(await card.send('00fd0000'), '0504039000');
  t.is(await card.send('00db3fff0a5c035fc10553037001aa'), '6982', 'a whole command after the abandoned chain');
});

test('power events clear PIN and management-key authentication', async (t) => {
  const card = makeTestCard();
  await mutualAuthenticate(card.send);
  t.is(await card.send(PIN_OK), '9000');
  card.applet.powerOff();
  card.applet.powerOn();
  t.false(card.vault.unlocked);
  t.is(await card.send('00200080'), '63c5');
  t.is(await card.send('0047009a05ac03800111'), '6982');
});
