/**
 * A client's 1-byte APDU (which vpcd sends as what looks like a control byte) and a
 * zero-length APDU (which vpcd does not send at all, and still waits for an answer to)
 * never knock a card out of its reader and never shift an answer onto another command.
 * Real stack: swtpm, pcscd + the stock vpcd driver, tpmvscd, a card made by tpmvscmgr.
 * The owner is this process (libpcsclite through koffi) holding a session; the sender runs
 * as uid nobody inside pcscd's mount namespace (pcscd's socket is open to every user).
 */
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

import test from 'ava';

import { runProgram, startStack, type Stack } from '../helpers/stack.js';
import { openWinscardApp, SCARD_STATE, type WinscardApp, type WinscardConnection } from '../helpers/winscard.js';

const SENDER = fileURLToPath(new URL('../helpers/pcsc_transmit.py', import.meta.url));
/** GET DATA of the CHUID, readable without a PIN. */
const GET_CHUID = Buffer.from('00cb3fff055c035fc10200', 'hex');

let stack: Stack;
let owner: WinscardApp;
let session: WinscardConnection;
let reader: string;
let chuid: string;
let atr: string;

test.before(async () => {
  stack = await startStack({ readers: 2 });
  const created = await stack.cli(['create', '/name', 'Owner', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/generate']);
  if (created.code !== 0) throw new Error(created.stderr);
  reader = stack.pcscd.readerName(0);
  stack.pcscd.useInThisProcess();
  owner = await openWinscardApp();
  session = await owner.connect(reader);
  chuid = (await session.transmit(GET_CHUID)).toString('hex');
  atr = (await session.status()).atr.toString('hex');
});

test.after.always(async () => {
  await session?.disconnect().catch(() => undefined);
  await owner?.close().catch(() => undefined);
  await stack?.stop();
});

interface Sent {
  apdu: string;
  rv: number;
  response: string;
}

/** Sends raw APDUs as uid nobody through pcscd; one result per APDU. */
async function sendAsNobody(apdus: string[]): Promise<Sent[]> {
  const asNobody = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups'];
  const result = await runProgram(
    'nsenter',
    ['--target', String(stack.pcscd.namespacePid), '--mount', '--', ...asNobody, '/usr/bin/python3', SENDER, reader, ...apdus],
    // Inside the namespace pcscd's socket is at its default path, open to every user.
    { timeoutMs: 120_000, env: { ...process.env, PCSCLITE_CSOCK_NAME: '/run/pcscd/pcscd.comm' } },
  );
  const lines = result.stdout.trim().split('\n').filter(Boolean).map((line) => JSON.parse(line) as Sent & { call?: string });
  if (result.code !== 0 || lines.some((line) => line.call)) throw new Error(`sender failed (${result.code}): ${result.stdout}${result.stderr}`);
  return lines;
}

/** The owner's session still has its card: no removal or reset event, present, and its next APDU answered right. */
async function ownerKeepsCard(t: { is: (a: unknown, b: unknown, m?: string) => void; true: (a: boolean, m?: string) => void }): Promise<void> {
  const { state, atr: seen } = await session.status(); // throws W_REMOVED_CARD / W_RESET_CARD after such an event
  t.true((state & SCARD_STATE.PRESENT) !== 0, `SCardStatus state 0x${state.toString(16)}`);
  t.is(seen.toString('hex'), atr);
  t.is((await session.transmit(GET_CHUID)).toString('hex'), chuid, "the owner's next APDU gets its own answer");
}

test.serial('1-byte APDUs 00..FF and a zero-length APDU from another user: errors for the sender, nothing for the owner', async (t) => {
  const values = Array.from({ length: 256 }, (_, value) => value.toString(16).padStart(2, '0'));
  const logBefore = stack.daemonLog().length;
  const started = Date.now();
  const sent = await sendAsNobody([...values, '']);
  t.log(`257 APDUs in ${Date.now() - started} ms`);
  t.is(sent.length, 257);
  for (const { apdu, rv, response } of sent) {
    if (rv !== 0) continue; // a transport error is an acceptable answer too
    // 04 reaches vpcd as GET ATR: its answer is the ATR, which pcscd shows anyone.
    t.is(response, apdu === '04' ? atr : '6700', `APDU "${apdu}"`);
  }
  t.true(sent.every(({ rv }) => rv === 0), 'in fact every one was answered');
  await ownerKeepsCard(t);
  const log = stack.daemonLog().slice(logBefore);
  t.false(/"event":"disconnected"/.test(log), log);
  t.regex(log, /apdu_answered.*1-byte APDU 01/);
  t.regex(log, /apdu_answered.*zero-length APDU/);
});

test.serial('pcscd stopped (SIGSTOP) while a 1-byte APDU waits: answered when it resumes, the owner keeps the card', async (t) => {
  const pending = sendAsNobody(['01', '00', '02']);
  await sleep(30);
  process.kill(stack.pcscd.pid, 'SIGSTOP');
  try {
    await sleep(1500);
  } finally {
    process.kill(stack.pcscd.pid, 'SIGCONT');
  }
  const sent = await pending;
  t.deepEqual(
    sent.map(({ rv, response }) => (rv === 0 ? response : `rv ${rv.toString(16)}`)),
    ['6700', '6700', '6700'],
  );
  await ownerKeepsCard(t);
});

test.serial("after all that the card's link was never dropped: present in status", async (t) => {
  const status = await stack.cli(['status', '--json']);
  const card = (JSON.parse(status.stdout) as { cards: Array<{ connected: boolean; link: { state: string } }> }).cards[0]!;
  t.true(card.connected);
  t.is(card.link.state, 'present');
  t.false(/"event":"disconnected"/.test(stack.daemonLog()), 'no disconnection since the card was created');
});
