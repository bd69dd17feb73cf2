/**
 * kill -9 of tpmvscd in the middle of the commands that change keys, through the real stack
 * (swtpm, pcscd + vpcd, tpmvscd, libpcsclite): SET MANAGEMENT KEY (3DES <-> AES-128),
 * GENERATE (P-256 and RSA-2048 in 9A and 9C) and IMPORT (P-256 and RSA-2048 into 9A).
 * After every restart the card must answer, exactly one of the old and the new management
 * key must authenticate, and a slot must hold the old or the new key, one whose private half
 * SIGNS and whose signature verifies with the public key the card reports (GET METADATA):
 * never a slot whose public and private keys disagree. A command that answered 9000 must
 * have taken effect.
 */
import test from 'ava';
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { type Stack } from '../helpers/stack.js';
import { DEFAULT_MANAGEMENT_KEY, DEFAULT_PIN, readerName, startCardStack } from '../helpers/piv_tools.js';
import { openWinscardApp, type WinscardApp } from '../helpers/winscard.js';
import { ALG_AES128, ALG_ECCP256, ALG_RSA2048, ALG_TDES, berTlv, extendedApdu, publicKeyFromTlvs, publicKeyId, readBerTlv } from '../helpers/piv_card.js';
import { describe, killDelays, ReconnectingCard, sendThenKill, timedSend } from '../helpers/daemon_kill.js';

const READER = readerName(0);
const AES_KEY = '0f1e2d3c4b5a69788796a5b4c3d2e1f0';
const MANAGEMENT_KEYS = [
  { algorithm: ALG_TDES, hex: DEFAULT_MANAGEMENT_KEY },
  { algorithm: ALG_AES128, hex: AES_KEY },
];

let stack: Stack;
let app: WinscardApp;
let target: ReconnectingCard;

test.before(async () => {
  stack = await startCardStack();
  app = await openWinscardApp();
  target = await ReconnectingCard.open(app, READER);
});

test.after.always(async () => {
  // A PC/SC call that timed out still holds the context: stop the stack whatever the close calls do.
  try {
    await target?.close();
    await app?.close();
  } finally {
    await stack?.stop();
  }
});

/** Authenticates with whichever management key the card has; fails the test if neither works. */
async function authenticateAny(): Promise<number> {
  for (const [index, key] of MANAGEMENT_KEYS.entries()) if (await target.card.authenticate(key.hex)) return index;
  throw new Error('neither management key authenticates');
}

/** The slot's public key (GET METADATA), after checking it signs and its signature verifies. */
async function checkSlot(slot: number, label: string): Promise<KeyObject> {
  const publicKey = await target.card.slotPublicKey(slot);
  if (!publicKey) throw new Error(`${label}: slot ${slot.toString(16)} is empty`);
  const message = randomBytes(40);
  const { sw, valid } = await target.card.signAndCheck(slot, publicKey, message, DEFAULT_PIN);
  if (sw !== '9000' || !valid) throw new Error(`${label}: slot ${slot.toString(16)} signed with ${sw}, signature valid: ${valid}`);
  return publicKey;
}

test.serial('kill -9 during SET MANAGEMENT KEY: the old or the new key authenticates, never neither', async (t) => {
  let live = await authenticateAny();
  // Unkilled changes both ways: the commands' durations.
  let longest = 0;
  for (let i = 0; i < 2; i++) {
    const next = MANAGEMENT_KEYS[1 - live]!;
    const { answer, ms } = await timedSend(target.card, target.card.setManagementKeyApdu(next.algorithm, next.hex));
    t.is(answer.sw, '9000');
    longest = Math.max(longest, ms);
    live = 1 - live;
    t.true(await target.card.authenticate(MANAGEMENT_KEYS[live]!.hex));
  }
  t.log(`SET MANAGEMENT KEY takes ${longest.toFixed(1)} ms`);
  for (const [round, delay] of killDelays(longest, 8).entries()) {
    t.true(await target.card.authenticate(MANAGEMENT_KEYS[live]!.hex), `round ${round}: authenticate before`);
    const next = MANAGEMENT_KEYS[1 - live]!;
    const outcome = await sendThenKill(stack, target, target.card.setManagementKeyApdu(next.algorithm, next.hex), delay);
    const label = `round ${round}, kill after ${delay} ms, ${describe(outcome)}`;
    const oldWorks = await target.card.authenticate(MANAGEMENT_KEYS[live]!.hex);
    const newWorks = await target.card.authenticate(next.hex);
    t.true(oldWorks !== newWorks, `${label}: old key ${oldWorks}, new key ${newWorks}`);
    if (outcome.kind === 'answer' && outcome.answer.sw === '9000') t.true(newWorks, `${label}: answered 9000 but the new key does not work`);
    const algorithm = await target.card.managementAlgorithm();
    if (newWorks) {
      t.is(algorithm, next.algorithm, `${label}: GET METADATA 9B names the live key's algorithm`);
      live = 1 - live;
    }
  }
  t.notRegex(stack.daemonLog(), /internal-error|transmit-failure/);
});

/** The public key in a GENERATE answer (7F49 { 86 | 81 82 }). */
function generatedKey(data: Buffer): KeyObject {
  const template = readBerTlv(data);
  if (template.tag !== 0x7f49) throw new Error(`GENERATE answered ${data.toString('hex')}`);
  return publicKeyFromTlvs(template.value);
}

test.serial('kill -9 during GENERATE (P-256, RSA-2048; 9A, 9C): a slot holds a key that signs as its public key says', async (t) => {
  for (const [algorithm, name] of [[ALG_ECCP256, 'P-256'], [ALG_RSA2048, 'RSA-2048']] as const) {
    for (const slot of [0x9a, 0x9c]) {
      const apdu = target.card.generateApdu(slot, algorithm);
      await authenticateAny();
      const { answer, ms } = await timedSend(target.card, apdu);
      t.is(answer.sw, '9000', `unkilled GENERATE ${name} in ${slot.toString(16)}`);
      let old = publicKeyId(generatedKey(answer.data));
      t.is(publicKeyId(await checkSlot(slot, 'unkilled')), old);
      t.log(`GENERATE ${name} in ${slot.toString(16)} takes ${ms.toFixed(1)} ms`);
      for (const [round, delay] of killDelays(ms, 3).entries()) {
        await authenticateAny();
        const outcome = await sendThenKill(stack, target, apdu, delay);
        const label = `${name} ${slot.toString(16)} round ${round}, kill after ${delay} ms, ${describe(outcome)}`;
        const now = publicKeyId(await checkSlot(slot, label));
        if (outcome.kind === 'answer' && outcome.answer.sw === '9000') {
          t.is(now, publicKeyId(generatedKey(outcome.answer.data)), `${label}: answered 9000 with another key than the slot's`);
        } else if (outcome.kind === 'answer') {
          t.is(now, old, `${label}: a failed GENERATE changed the slot`);
        }
        t.pass(label);
        old = now;
      }
    }
  }
  t.notRegex(stack.daemonLog(), /internal-error|transmit-failure/);
});

/** IMPORT ASYMMETRIC KEY data for a Node key pair: EC 06 d, RSA 01 p .. 05 qinv. */
function importApdu(slot: number, privateKey: KeyObject): Buffer {
  const jwk = privateKey.export({ format: 'jwk' });
  const part = (tag: number, value: string | undefined): Buffer => berTlv(tag, Buffer.from(value ?? '', 'base64url'));
  if (jwk.kty === 'EC') return extendedApdu(0xfe, ALG_ECCP256, slot, part(0x06, jwk.d));
  const data = Buffer.concat([part(0x01, jwk.p), part(0x02, jwk.q), part(0x03, jwk.dp), part(0x04, jwk.dq), part(0x05, jwk.qi)]);
  return extendedApdu(0xfe, ALG_RSA2048, slot, data);
}

test.serial('kill -9 during IMPORT KEY (P-256, RSA-2048 into 9A): the old or the imported key, never a mix', async (t) => {
  const slot = 0x9a;
  const pairs = [
    generateKeyPairSync('ec', { namedCurve: 'P-256' }),
    generateKeyPairSync('rsa', { modulusLength: 2048 }),
    generateKeyPairSync('ec', { namedCurve: 'P-256' }),
    generateKeyPairSync('rsa', { modulusLength: 2048 }),
  ];
  await authenticateAny();
  const first = await timedSend(target.card, importApdu(slot, pairs[0]!.privateKey));
  t.is(first.answer.sw, '9000');
  let old = publicKeyId(pairs[0]!.publicKey);
  t.is(publicKeyId(await checkSlot(slot, 'unkilled')), old);
  await authenticateAny();
  const second = await timedSend(target.card, importApdu(slot, pairs[1]!.privateKey));
  t.is(second.answer.sw, '9000');
  old = publicKeyId(pairs[1]!.publicKey);
  const longest = Math.max(first.ms, second.ms);
  t.log(`IMPORT takes ${first.ms.toFixed(1)} ms (P-256), ${second.ms.toFixed(1)} ms (RSA-2048)`);
  for (const [round, delay] of killDelays(longest, 7).entries()) {
    const pair = pairs[round % pairs.length]!;
    await authenticateAny();
    const outcome = await sendThenKill(stack, target, importApdu(slot, pair.privateKey), delay);
    const label = `round ${round}, kill after ${delay} ms, ${describe(outcome)}`;
    const now = publicKeyId(await checkSlot(slot, label));
    const imported = publicKeyId(pair.publicKey);
    t.true(now === old || now === imported, `${label}: the slot holds neither the old nor the imported key`);
    if (outcome.kind === 'answer' && outcome.answer.sw === '9000') t.is(now, imported, `${label}: answered 9000 but the old key is still there`);
    old = now;
  }
  t.notRegex(stack.daemonLog(), /internal-error|transmit-failure/);
});
