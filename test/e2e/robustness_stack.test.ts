/**
 * Attacks on the running product through the real stack (swtpm, pcscd + vpcd, tpmvscd,
 * the pcsclite binding): malformed APDUs must get an answer and never wedge a reader, and
 * a kill -9 of the daemon at any moment of a PIN change, a PUK unblock or a wrong VERIFY
 * must leave the old or the new PIN working (never neither) and never give a try back.
 *
 * Bugs these pinned (both found here):
 * - a 1-byte APDU ("01") hung its reader for good: vpcd forwards it as a control byte and
 *   waits for a reply (daemon/vpcd_link.ts now resets the connection after the silence);
 * - after a few kills every VERIFY answered 6F00 (TPM_RC_SESSION_MEMORY: the killed daemon's
 *   policy sessions were never flushed) and each of those failures cost a PIN try.
 */
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import { type Stack } from '../helpers/stack.js';
import { openPcsc, type PcscClient, type PcscConnection } from '../helpers/pcsc_client.js';
import { DEFAULT_PIN, DEFAULT_PUK, paddedPin, readerName, startCardStack } from '../helpers/piv_tools.js';

const SELECT_PIV = '00A4040005A000000308';
const READER = readerName(0);
/** Longest any answer may take here (the slowest legitimate one, a 1-byte APDU's reset, is 1.5 s). */
const ANSWER_WITHIN_MS = 5000;

let stack: Stack;
let pcsc: PcscClient;

test.before(async () => {
  stack = await startCardStack();
  pcsc = openPcsc();
});

test.after.always(async () => {
  pcsc?.close();
  await stack?.stop();
});

type Answer = { kind: 'response'; hex: string } | { kind: 'error'; message: string } | { kind: 'hang' };

/** One APDU with a deadline: a reader that never answers is the failure we look for. */
async function transmit(connection: PcscConnection, hex: string): Promise<Answer> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<Answer>((resolve) => (timer = setTimeout(() => resolve({ kind: 'hang' }), ANSWER_WITHIN_MS)));
  const answer = connection.transmit(Buffer.from(hex, 'hex')).then(
    (response): Answer => ({ kind: 'response', hex: response.toString('hex').toUpperCase() }),
    (error: Error): Answer => ({ kind: 'error', message: error.message }),
  );
  try {
    return await Promise.race([answer, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** The status word of an answer ('' when there is none). */
function sw(answer: Answer): string {
  return answer.kind === 'response' ? answer.hex.slice(-4) : '';
}

/** A connection with PIV selected; waits for the card (it comes back after resets and restarts). */
async function connectCard(): Promise<PcscConnection> {
  for (let attempt = 0; ; attempt++) {
    try {
      await pcsc.waitForCard(READER, true, 10_000);
      const connection = await pcsc.connect(READER);
      const selected = await transmit(connection, SELECT_PIV);
      if (sw(selected) === '9000') return connection;
      await connection.disconnect('leave').catch(() => undefined);
    } catch (error) {
      if (attempt >= 50) throw error;
    }
    await sleep(100);
  }
}

/** The card's PIN tries (tpmvscmgr's default). */
const PIN_TRIES = 5;

/**
 * Tries left of the PIN (80) or the PUK (81) from GET METADATA (tag 06 = total, remaining),
 * which answers the same whatever this or an earlier session verified (an empty VERIFY
 * answers 9000 while the PIN is verified, whatever the counter says).
 */
async function triesLeft(connection: PcscConnection, reference: '80' | '81'): Promise<number> {
  const answer = await transmit(connection, `00F700${reference}00`);
  if (answer.kind !== 'response' || !answer.hex.endsWith('9000')) throw new Error(`GET METADATA ${reference} answered ${JSON.stringify(answer)}`);
  const retries = /0602([0-9A-F]{2})([0-9A-F]{2})/.exec(answer.hex.slice(0, -4));
  if (!retries) throw new Error(`no retries in ${answer.hex}`);
  return parseInt(retries[2]!, 16);
}

const pinTries = (connection: PcscConnection): Promise<number> => triesLeft(connection, '80');
const pukTries = (connection: PcscConnection): Promise<number> => triesLeft(connection, '81');

const verifyCommand = (pin: string): string => `0020008008${paddedPin(pin)}`;

/** A tiny deterministic generator: the same APDUs every run. */
function* pseudoRandomBytes(seed: number): Generator<number> {
  let state = seed;
  for (;;) {
    state = (Math.imul(state, 1103515245) + 12345) & 0x7fffffff;
    yield state >>> 23;
  }
}

test.serial('malformed and 1-byte APDUs through pcscd get an answer; the card keeps working', async (t) => {
  let connection = await connectCard();
  const edgeCases: Array<[string, string]> = [
    ['00', 'power-off byte as an APDU'],
    ['01', 'power-on byte as an APDU'],
    ['02', 'reset byte as an APDU'],
    ['04', 'GET ATR byte as an APDU'],
    ['0000', '2 bytes'],
    ['00A404', '3 bytes'],
    ['00CB3FFF000000', 'case 2E, Le = 0000'],
    ['00CB3FFF0000005C035FC102', 'extended marker with Lc = 0 and data'],
    ['00CB3FFF055C035F', 'Lc bigger than the data'],
    ['00CB3FFF00FFFF5C035FC102', 'extended Lc bigger than the data'],
    ['10DB3FFF055C035FC102', 'a chain started...'],
    ['00C0000000', '...abandoned by GET RESPONSE without pending data'],
    ['10870011047C028100', 'a chained GENERAL AUTHENTICATE part...'],
    ['00A4040005A000000308', '...abandoned by SELECT'],
  ];
  for (const [hex, what] of edgeCases) {
    const answer = await transmit(connection, hex);
    t.not(answer.kind, 'hang', `${what} (${hex}) got no answer`);
    if (hex.length === 2 && hex !== '04') {
      // vpcd can't carry a 1-byte APDU: the card is reset and comes back; reconnect.
      await connection.disconnect('leave').catch(() => undefined);
      connection = await connectCard();
    } else if (hex.length > 2) {
      t.regex(sw(answer), /^(9000|6[1-9A-F][0-9A-F]{2})$/, `${what} (${hex}) answers a status word`);
    }
  }
  t.is(sw(await transmit(connection, '0000')), '6700');
  t.is(sw(await transmit(connection, '00C0000000')), '6985', 'GET RESPONSE with nothing pending');

  // Garbage at full speed, lengths 2..300, never a PIN/PUK-changing instruction (it would count tries).
  const bytes = pseudoRandomBytes(20);
  const next = () => bytes.next().value as number;
  for (let i = 0; i < 400; i++) {
    const apdu = Buffer.alloc(2 + ((next() << 1) | (next() & 1)) % 299);
    for (let j = 0; j < apdu.length; j++) apdu[j] = next();
    if (i % 2 === 0) apdu[0] = [0x00, 0x10, 0x00, 0x0c][next() % 4]!;
    if ([0x20, 0x24, 0x2c, 0xfb, 0xfa].includes(apdu[1]!)) apdu[1] = 0xcb;
    const answer = await transmit(connection, apdu.toString('hex'));
    if (answer.kind !== 'response' || !/^(9000|6[1-9A-F][0-9A-F]{2})$/.test(sw(answer))) {
      t.fail(`${apdu.toString('hex')} answered ${JSON.stringify(answer)}`);
      break;
    }
  }
  t.is(sw(await transmit(connection, SELECT_PIV)), '9000');
  t.is(sw(await transmit(connection, verifyCommand(DEFAULT_PIN))), '9000', 'the right PIN still works');
  t.is(await pinTries(connection), PIN_TRIES);
  await connection.disconnect('reset');
  t.notRegex(stack.daemonLog(), /internal-error|transmit-failure/, 'no unexpected error in the daemon');
});

type Operation = 'change PIN' | 'unblock with PUK' | 'wrong VERIFY';

test.serial('kill -9 during PIN change, PUK unblock and wrong VERIFY: old or new PIN, no try given back', async (t) => {
  const pins = [DEFAULT_PIN, '24682468'];
  let current = 0;
  const operations: Operation[] = ['change PIN', 'wrong VERIFY', 'unblock with PUK', 'change PIN'];
  let connection = await connectCard();
  for (let round = 0; round < 12; round++) {
    const operation = operations[round % operations.length]!;
    const [from, to] = [pins[current]!, pins[1 - current]!];
    const pinBefore = await pinTries(connection);
    const pukBefore = await pukTries(connection);
    const command = {
      'change PIN': `0024008010${paddedPin(from)}${paddedPin(to)}`,
      'unblock with PUK': `002C008010${paddedPin(DEFAULT_PUK)}${paddedPin(to)}`,
      'wrong VERIFY': verifyCommand('99999999'),
    }[operation];
    const sent = transmit(connection, command);
    // These commands take 10-40 ms here: spread the kills over that window.
    await sleep((round * 7) % 36);
    await stack.killDaemon();
    const answer = await sent;
    await stack.startDaemon();
    await connection.disconnect('leave').catch(() => undefined);
    connection = await connectCard();

    const label = `round ${round}, ${operation}, answer ${JSON.stringify(answer)}`;
    const pinAfter = await pinTries(connection);
    const pukAfter = await pukTries(connection);
    if (operation === 'wrong VERIFY') {
      t.true(pinAfter === pinBefore || pinAfter === pinBefore - 1, `${label}: PIN tries ${pinBefore} -> ${pinAfter}`);
    } else if (operation === 'change PIN') {
      t.true(pinAfter <= pinBefore, `${label}: PIN tries ${pinBefore} -> ${pinAfter}`);
    }
    const oldPin = sw(await transmit(connection, verifyCommand(from)));
    // Only a right PUK refills the PUK counter. The unblock sends the right one, which refills the
    // counter as soon as the TPM accepts it: a kill right after that, before the new PIN is saved,
    // leaves the old PIN with a full PUK counter. Nothing else may raise it.
    if (operation !== 'unblock with PUK') t.true(pukAfter <= pukBefore, `${label}: PUK tries ${pukBefore} -> ${pukAfter}`);
    if (oldPin === '9000') {
      t.not(sw(answer), '9000', `${label}: answered 9000 but the old PIN still works`);
    } else {
      t.regex(oldPin, /^63C/, `${label}: the old PIN is wrong, not an error`);
      if (operation === 'wrong VERIFY') {
        t.fail(`${label}: the PIN changed`);
      } else {
        t.is(sw(await transmit(connection, verifyCommand(to))), '9000', `${label}: neither the old nor the new PIN works`);
        current = 1 - current;
      }
    }
    t.is(await pinTries(connection), PIN_TRIES, `${label}: a right PIN resets the counter`);
    // The PUK counter is refilled by a right PUK only: spend one on a no-op unblock when it ran low.
    if ((await pukTries(connection)) < 3) {
      t.is(sw(await transmit(connection, `002C008010${paddedPin(DEFAULT_PUK)}${paddedPin(pins[current]!)}`)), '9000');
    }
  }
  await connection.disconnect('reset');
  t.notRegex(stack.daemonLog(), /internal-error/, 'no unexpected error in the daemon');
});
