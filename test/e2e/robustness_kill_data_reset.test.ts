/**
 * kill -9 of tpmvscd in the middle of PUT DATA (a certificate, and a PIN-protected object the
 * vault seals) and of PIV RESET (INS FB, with the management key,
 * after blocking PIN and PUK), through the real stack. After every restart the card must
 * answer; PUT DATA must leave the old or the new object whole (never a truncated one);
 * RESET must leave either the old card (PIN and PUK blocked, its own management key, its
 * key in 9A) or a fresh default card (PIN 12345678 with 5 tries, PUK 12345678, the default
 * 3DES management key, no keys, no certificates: applet/instructions/reset.ts), never a
 * mix and never a card that cannot be opened.
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runProgram, type Stack } from '../helpers/stack.js';
import { DEFAULT_MANAGEMENT_KEY, DEFAULT_PIN, DEFAULT_PUK, paddedPin, readerName, startCardStack, tempDir } from '../helpers/piv_tools.js';
import { openWinscardApp, type WinscardApp } from '../helpers/winscard.js';
import { ALG_AES128, ALG_ECCP256, berTlv, publicKeyId } from '../helpers/piv_card.js';
import { describe, killDelays, ReconnectingCard, sendThenKill, timedSend, type KillOutcome } from '../helpers/daemon_kill.js';

const READER = readerName(0);
const AES_KEY = '00112233445566778899aabbccddeeff';
const CERTIFICATE_9A = 0x5fc105;
const PRINTED_INFORMATION = 0x5fc109;

/** Every file under the daemon's state directory, concatenated (latin1: raw bytes stay searchable). */
async function stateFilesText(stack: Stack): Promise<string> {
  const entries = await readdir(stack.stateDir, { recursive: true, withFileTypes: true });
  const texts = await Promise.all(entries.filter((e) => e.isFile()).map((e) => readFile(join(e.parentPath, e.name), 'latin1')));
  return texts.join('\n');
}

let stack: Stack;
let app: WinscardApp;
let target: ReconnectingCard;

test.before(async () => {
  // Blocking PIN and PUK again and again: the TPM's dictionary-attack lockout must not get in the way.
  stack = await startCardStack({ relaxLockout: 1000 });
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

/** Two real certificates (DER, openssl) as PIV certificate objects: 70 cert 71 01 00 FE 00. */
async function certificateObjects(): Promise<Buffer[]> {
  const dir = await tempDir();
  try {
    const objects: Buffer[] = [];
    for (const name of ['first', 'second']) {
      const out = join(dir.path, `${name}.der`);
      const made = await runProgram('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir.path, `${name}.key`),
        '-subj', `/CN=${name} certificate of a long-enough subject name`, '-days', '2', '-outform', 'DER', '-out', out]);
      if (made.code !== 0) throw new Error(`openssl: ${made.stderr}`);
      objects.push(Buffer.concat([berTlv(0x70, await readFile(out)), Buffer.from('710100FE00', 'hex')]));
    }
    return objects;
  } finally {
    await dir.cleanup();
  }
}

/**
 * PUT DATA of `values[0]`, then rounds of PUT DATA of the other value killed after a spread of
 * delays: after each restart the object (read after VERIFY when `pin`) must be one of the two
 * values, whole, and the new one whenever the card answered 9000.
 */
async function killDuringPutData(t: ExecutionContext, tag: number, values: Buffer[], pin?: string): Promise<void> {
  t.true(await target.card.authenticate(DEFAULT_MANAGEMENT_KEY));
  const { answer, ms } = await timedSend(target.card, target.card.putDataApdu(tag, values[0]!));
  t.is(answer.sw, '9000');
  t.log(`PUT DATA of ${values[0]!.length} bytes into ${tag.toString(16)} takes ${ms.toFixed(1)} ms`);
  let old = 0;
  for (const [round, delay] of killDelays(ms, 10).entries()) {
    const next = 1 - old;
    t.true(await target.card.authenticate(DEFAULT_MANAGEMENT_KEY));
    const outcome = await sendThenKill(stack, target, target.card.putDataApdu(tag, values[next]!), delay);
    const label = `round ${round}, kill after ${delay} ms, ${describe(outcome)}`;
    if (pin !== undefined) t.is(await target.card.verifyPin(pin), '9000', `${label}: VERIFY`);
    const stored = await target.card.getData(tag);
    const found = values.findIndex((value) => stored !== undefined && value.equals(stored));
    t.true(found >= 0, `${label}: the object is neither the old nor the new one (${stored?.length ?? 'none'} bytes)`);
    if (outcome.kind === 'answer' && outcome.answer.sw === '9000') t.is(found, next, `${label}: answered 9000 but the old object is there`);
    if (found >= 0) old = found;
  }
  t.notRegex(stack.daemonLog(), /internal-error|transmit-failure/);
}

test.serial('kill -9 during PUT DATA of a certificate: the old or the new object, whole', async (t) => {
  await killDuringPutData(t, CERTIFICATE_9A, await certificateObjects());
});

test.serial('kill -9 during PUT DATA of a PIN-protected object (5FC109, sealed): the old or the new value, never a mix, never in clear', async (t) => {
  // ykman's form of a PIN-protected management key: 88 1A 89 18 <24-byte key>.
  const values = [0, 1].map(() => Buffer.concat([Buffer.from('881a8918', 'hex'), randomBytes(24)]));
  await killDuringPutData(t, PRINTED_INFORMATION, values, DEFAULT_PIN);
  const files = await stateFilesText(stack);
  for (const value of values) {
    for (const form of [value.subarray(4).toString('hex'), value.subarray(4).toString('base64'), value.toString('base64')]) t.false(files.includes(form), 'never in clear in the state files');
  }
});

/** Makes the card an "old" one worth telling apart from a fresh one, then blocks PIN and PUK. */
async function prepareBlockedCard(): Promise<string> {
  const card = target.card;
  if (!(await card.authenticate(DEFAULT_MANAGEMENT_KEY))) throw new Error('a fresh card refuses the default management key');
  await card.must(card.setManagementKeyApdu(ALG_AES128, AES_KEY), 'SET MANAGEMENT KEY');
  if (!(await card.authenticate(AES_KEY))) throw new Error('the new management key does not work');
  await card.must(card.generateApdu(0x9a, ALG_ECCP256), 'GENERATE');
  const key = await card.slotPublicKey(0x9a);
  for (let i = 0; i < 5; i++) await card.verifyPin('99999999');
  for (let i = 0; i < 5; i++) await card.send(`002C008010${paddedPin('87654321')}${paddedPin(DEFAULT_PIN)}`);
  return publicKeyId(key!);
}

type CardKind = 'old' | 'fresh';

/** Which card is there: the old one (blocked, AES key, its 9A key) or a fresh default one. Throws on a mix. */
async function identify(oldKey: string, label: string): Promise<CardKind> {
  const card = target.card;
  const pin = await card.retries(0x80);
  const puk = await card.retries(0x81);
  const key = await card.slotPublicKey(0x9a);
  const certificate = await card.getData(CERTIFICATE_9A);
  const oldAdmin = await card.authenticate(AES_KEY);
  const defaultAdmin = await card.authenticate(DEFAULT_MANAGEMENT_KEY);
  const facts = JSON.stringify({ pin, puk, key: key ? publicKeyId(key) === oldKey ? 'old' : 'other' : 'none', certificate: certificate?.length, oldAdmin, defaultAdmin });
  if (pin.remaining === 0 && puk.remaining === 0 && key && publicKeyId(key) === oldKey && oldAdmin && !defaultAdmin) return 'old';
  if (pin.remaining === 5 && pin.isDefault && puk.remaining === puk.total && puk.isDefault && !key && !certificate && defaultAdmin && !oldAdmin) {
    const verified = await card.verifyPin(DEFAULT_PIN);
    if (verified !== '9000') throw new Error(`${label}: a fresh-looking card refuses PIN ${DEFAULT_PIN}: ${verified}`);
    const unblock = await card.send(`002C008010${paddedPin(DEFAULT_PUK)}${paddedPin(DEFAULT_PIN)}`);
    if (unblock.sw !== '9000') throw new Error(`${label}: a fresh-looking card refuses PUK ${DEFAULT_PUK}: ${unblock.sw}`);
    return 'fresh';
  }
  throw new Error(`${label}: neither the old card nor a fresh one: ${facts}`);
}

test.serial('kill -9 during RESET: the old blocked card or a fresh default card, never a mix', async (t) => {
  let oldKey = await prepareBlockedCard();
  t.true(await target.card.authenticate(AES_KEY), 'RESET needs the management key in this session');
  const { answer, ms } = await timedSend(target.card, Buffer.from('00FB000000', 'hex'));
  t.is(answer.sw, '9000', 'RESET of a blocked card');
  t.is(await identify('', 'unkilled'), 'fresh');
  t.log(`RESET takes ${ms.toFixed(1)} ms`);
  const seen: Record<CardKind, number> = { old: 0, fresh: 0 };
  let kind: CardKind = 'fresh';
  // RESET takes 20-40 ms here, and longer under load: spread the kills a little wider.
  for (const [round, delay] of killDelays(Math.max(ms, 40), 10).entries()) {
    if (kind === 'fresh') oldKey = await prepareBlockedCard();
    // RESET needs the management key in the session (identify() ends with a failed 9B attempt).
    if (!(await target.card.authenticate(AES_KEY))) throw new Error(`round ${round}: the old card refuses its management key`);
    const outcome: KillOutcome = await sendThenKill(stack, target, Buffer.from('00FB000000', 'hex'), delay);
    const label = `round ${round}, kill after ${delay} ms, ${describe(outcome)}`;
    kind = await identify(oldKey, label);
    seen[kind]++;
    if (outcome.kind === 'answer') t.is(kind, outcome.answer.sw === '9000' ? 'fresh' : 'old', `${label}: the answer and the card disagree`);
    t.pass(`${label}: ${kind}`);
  }
  t.log(`after the kills: ${JSON.stringify(seen)}`);
  t.notRegex(stack.daemonLog(), /internal-error|transmit-failure|card_unavailable/);
});
