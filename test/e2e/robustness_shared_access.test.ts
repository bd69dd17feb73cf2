/**
 * Two applications on one card at once (SCARD_SHARE_SHARED, each its own PC/SC context,
 * libpcsclite through test/helpers/winscard.ts), and PIN tries interleaved with card resets
 * and daemon restarts, through the real stack.
 *
 * PIV's security status belongs to the card, not to a connection (SP 800-73-4: one
 * application, one basic logical channel; PC/SC shares it between handles): a VERIFY by one
 * application unlocks the card for every other, and a wrong VERIFY by any of them logs
 * everybody out. An application that must not be disturbed between its VERIFY and its
 * signature holds a PC/SC transaction around the pair. So:
 * - without transactions A's signature may be refused (6982) after B's wrong VERIFY, never
 *   answered with an error or a signature that does not verify;
 * - with transactions around A's VERIFY + sign, every signature of A succeeds and verifies;
 * - 5 wrong PINs block the PIN whatever comes between them (SCardReconnect with reset,
 *   disconnect with reset, unpower, kill -9 and restart of the daemon, a clean restart).
 */
import test from 'ava';
import { randomBytes, type KeyObject } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Stack } from '../helpers/stack.js';
import { DEFAULT_MANAGEMENT_KEY, DEFAULT_PIN, DEFAULT_PUK, paddedPin, readerName, startCardStack } from '../helpers/piv_tools.js';
import { openWinscardApp, SCARD, WinscardError, type WinscardApp, type WinscardConnection } from '../helpers/winscard.js';
import { ALG_ECCP256, connectPivCard, type PivCard } from '../helpers/piv_card.js';

const READER = readerName(0);
const WRONG_PIN = '99999999';

let stack: Stack;
let appA: WinscardApp;
let appB: WinscardApp;

test.before(async () => {
  stack = await startCardStack({ relaxLockout: 1000 });
  appA = await openWinscardApp();
  appB = await openWinscardApp();
});

test.after.always(async () => {
  await appA?.close();
  await appB?.close();
  await stack?.stop();
});

/** A's loop: VERIFY + sign with 9A until `stop`, optionally inside transactions; tallies the outcomes. */
interface SignTally {
  signed: number;
  refused: number;
  pinRejected: number;
  other: string[];
}

async function signLoop(card: PivCard, connection: WinscardConnection, publicKey: KeyObject, useTransactions: boolean, tally: SignTally, stop: () => boolean) {
  while (!stop()) {
    if (useTransactions) await connection.beginTransaction();
    try {
      const { sw, valid } = await card.signAndCheck(0x9a, publicKey, randomBytes(32), DEFAULT_PIN);
      if (sw === '9000' && valid) tally.signed++;
      else if (sw === '6982') tally.refused++;
      else if (sw.startsWith('VERIFY 63C')) tally.pinRejected++;
      else tally.other.push(`${sw} valid=${valid}`);
    } finally {
      if (useTransactions) await connection.endTransaction();
    }
    // pcsc-lite makes a client that waits for the card poll every 100 ms (PCSCLITE_LOCK_POLL_RATE):
    // an application that takes the card back at once would starve every other one.
    if (useTransactions) await sleep(150);
  }
}

test.serial('two shared connections: A signs with 9A while B verifies a wrong PIN, changes the PIN, reads data', async (t) => {
  const a = await connectPivCard(appA, READER);
  const b = await connectPivCard(appB, READER);
  t.teardown(async () => {
    await a.connection.disconnect('leave').catch(() => undefined);
    await b.connection.disconnect('reset').catch(() => undefined);
  });
  t.true(await a.card.authenticate(DEFAULT_MANAGEMENT_KEY));
  await a.card.must(a.card.generateApdu(0x9a, ALG_ECCP256), 'GENERATE 9A');
  const publicKey = (await a.card.slotPublicKey(0x9a))!;

  // The security status is the card's: A's VERIFY lets B sign; B's wrong VERIFY logs A out.
  t.is(await a.card.verifyPin(DEFAULT_PIN), '9000');
  const byB = await b.card.signAndCheck(0x9a, publicKey, randomBytes(32));
  t.deepEqual(byB, { sw: '9000', valid: true }, "B signs on A's VERIFY");
  t.regex(await b.card.verifyPin(WRONG_PIN), /^63C4$/);
  t.is((await a.card.signAndCheck(0x9a, publicKey, randomBytes(32))).sw, '6982', "B's wrong VERIFY logged A out");

  for (const useTransactions of [false, true]) {
    let stop = false;
    const tally: SignTally = { signed: 0, refused: 0, pinRejected: 0, other: [] };
    const loop = signLoop(a.card, a.connection, publicKey, useTransactions, tally, () => stop);
    const answersOfB: string[] = [];
    for (let i = 0; i < 6 || (tally.signed < 10 && i < 40); i++) {
      answersOfB.push((await b.card.send(`0020008008${paddedPin(WRONG_PIN)}`)).sw);
      answersOfB.push((await b.card.send('00CB3FFF055C035FC10200')).sw);
      // The same PIN again: a full change (new PIN object, new generation) that A's PIN survives.
      answersOfB.push((await b.card.send(`0024008010${paddedPin(DEFAULT_PIN)}${paddedPin(DEFAULT_PIN)}`)).sw);
      answersOfB.push((await b.card.send('00F7009A00')).sw);
    }
    stop = true;
    await loop;
    const label = useTransactions ? 'with transactions' : 'without transactions';
    t.log(`${label}: A ${JSON.stringify(tally)}`);
    t.deepEqual(tally.other, [], `${label}: A got unexpected answers`);
    t.is(tally.pinRejected, 0, `${label}: A's right PIN was refused`);
    t.true(tally.signed >= 5, `${label}: A signed ${tally.signed} times only`);
    if (useTransactions) t.is(tally.refused, 0, "with transactions, B's commands never come between A's VERIFY and its signature");
    for (let i = 0; i < answersOfB.length; i += 4) {
      t.regex(answersOfB[i]!, /^63C[1-4]$/, `${label}: B's wrong VERIFY`);
      t.deepEqual(answersOfB.slice(i + 1, i + 4), ['9000', '9000', '9000'], `${label}: B's GET DATA, CHANGE PIN, GET METADATA`);
    }
    t.is(await a.card.verifyPin(DEFAULT_PIN), '9000');
    t.deepEqual(await a.card.retries(0x80), { total: 5, remaining: 5, isDefault: true });
  }
  t.notRegex(stack.daemonLog(), /internal-error|transmit-failure/);
});

type Interruption = 'SCardReconnect reset' | 'disconnect reset' | 'disconnect unpower' | 'kill -9' | 'clean restart' | 'other app resets';

test.serial('5 wrong PINs block, whatever resets and daemon restarts come in between', async (t) => {
  const interruptions: Interruption[] = ['SCardReconnect reset', 'kill -9', 'disconnect reset', 'other app resets', 'clean restart', 'disconnect unpower'];
  let a = await connectPivCard(appA, READER);
  t.teardown(() => a.connection.disconnect('reset').catch(() => undefined));
  let step = 0;
  for (let cycle = 0; cycle < 3; cycle++) {
    for (let wrong = 1; wrong <= 5; wrong++) {
      const answer = await a.card.verifyPin(WRONG_PIN);
      // The last one answers 6983 here (applet/pin_input.ts; a YubiKey says 63C0): both mean blocked.
      t.regex(answer, wrong < 5 ? new RegExp(`^63C${5 - wrong}$`) : /^(63C0|6983)$/, `cycle ${cycle}: wrong PIN ${wrong}`);
      const interruption = interruptions[step++ % interruptions.length]!;
      switch (interruption) {
        case 'SCardReconnect reset':
          await a.connection.reconnect('reset');
          await a.card.select();
          break;
        case 'disconnect reset':
        case 'disconnect unpower':
          await a.connection.disconnect(interruption === 'disconnect reset' ? 'reset' : 'unpower');
          a = await connectPivCard(appA, READER);
          break;
        case 'other app resets': {
          const b = await connectPivCard(appB, READER);
          await b.connection.disconnect('reset');
          // A's handle learns of the reset once, then reconnects as applications do.
          const error = await a.connection.transmit(Buffer.from('00A4040005A000000308', 'hex')).catch((e: unknown) => e);
          t.true(error instanceof WinscardError && error.code === SCARD.W_RESET_CARD, `A is told of B's reset: ${String(error)}`);
          await a.connection.reconnect('leave');
          await a.card.select();
          break;
        }
        case 'kill -9':
        case 'clean restart':
          await (interruption === 'kill -9' ? stack.killDaemon() : stack.stopDaemon());
          await stack.startDaemon();
          await a.connection.disconnect('leave').catch(() => undefined);
          a = await connectPivCard(appA, READER);
          break;
      }
      const left = await a.card.retries(0x80);
      t.is(left.remaining, 5 - wrong, `cycle ${cycle}: after wrong PIN ${wrong} and ${interruption}`);
    }
    t.is(await a.card.verifyPin(DEFAULT_PIN), '6983', `cycle ${cycle}: the right PIN is refused once blocked`);
    t.is((await a.card.send(`002C008010${paddedPin(DEFAULT_PUK)}${paddedPin(DEFAULT_PIN)}`)).sw, '9000', `cycle ${cycle}: PUK unblocks`);
    t.is(await a.card.verifyPin(DEFAULT_PIN), '9000');
  }
  t.notRegex(stack.daemonLog(), /internal-error|transmit-failure/);
});
