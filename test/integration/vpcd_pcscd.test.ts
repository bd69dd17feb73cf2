/**
 * VpcdLink with the real stack: a private pcscd (its own mount namespace), the stock vpcd
 * driver, the `pcsclite` binding in this process and OpenSC's opensc-tool as a spawned client.
 * Serial: the tests share one pcscd and follow each other (the restart test is last).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';

import test from 'ava';

import { VpcdLink } from '../../daemon/vpcd_link.js';
import { EchoCard, GET_DATA_ANSWER, TEST_ATR } from '../helpers/echo_card.js';
import { openPcsc, type PcscClient } from '../helpers/pcsc_client.js';
import { startPcscd, type PcscdInstance } from '../helpers/pcscd.js';

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const atrHex = Buffer.from(TEST_ATR).toString('hex');

let pcscd: PcscdInstance;
let client: PcscClient;
const card = new EchoCard();
let link: VpcdLink;
/** The card sits in slot 1 (the second reader of the first block). */
const SLOT = 1;

test.before(async () => {
  pcscd = await startPcscd({ readers: 4 });
  pcscd.useInThisProcess();
  link = new VpcdLink({ card, port: pcscd.port(SLOT) }).start();
  client = openPcsc();
});

test.after.always(async () => {
  client?.close();
  await link?.close();
  await pcscd?.stop();
});

/** `opensc-tool` run asynchronously: the card answers from this process's event loop. */
async function openscTool(...args: string[]): Promise<string> {
  const { stdout } = await run('opensc-tool', args, { env: pcscd.env, timeout: 20_000 });
  return stdout;
}

test.serial('pcscd shows every reader of the pool under its computed name, the card in its slot', async (t) => {
  for (let slot = 0; slot < 4; slot++) await client.waitForReader(pcscd.readerName(slot));
  t.deepEqual(client.readerNames().sort(), [0, 1, 2, 3].map((slot) => pcscd.readerName(slot)).sort());
  const atr = await client.waitForCard(pcscd.readerName(SLOT), true);
  t.is(atr?.toString('hex'), atrHex);

  const listing = await openscTool('-l');
  t.regex(listing, new RegExp(`^${SLOT}\\s+Yes\\s+${pcscd.readerName(SLOT)}$`, 'm'), listing);
  t.regex(listing, new RegExp(`^0\\s+No\\s+${pcscd.readerName(0)}$`, 'm'), listing);
  const printed = await openscTool('-r', String(SLOT), '-a');
  t.is(printed.trim().replaceAll(':', ''), atrHex);
});

test.serial('APDUs round-trip: short, 2 KB extended response, 4 KB command', async (t) => {
  const connection = await client.connect(pcscd.readerName(SLOT));
  try {
    t.is((await connection.transmit(Buffer.from('00cb3fff055c035fc10200', 'hex'))).toString('hex'), Buffer.from(GET_DATA_ANSWER).toString('hex') + '9000');
    // 80 E1 08 00 with extended Le 00 08 00: 2048 bytes back.
    const long = await connection.transmit(Buffer.from('80e10800000800', 'hex'));
    t.is(long.length, 2048 + 2);
    t.is(long.subarray(-2).toString('hex'), '9000');
    t.is(long[300], 300 & 0xff);
    // Extended case 4: Lc 00 10 00 (4096 bytes), Le 00 00.
    const data = randomBytes(4096);
    const echoed = await connection.transmit(Buffer.concat([Buffer.from('80e00000001000', 'hex'), data, Buffer.from('0000', 'hex')]));
    t.is(echoed.subarray(0, -2).toString('hex'), data.toString('hex'));
    t.is(echoed.subarray(-2).toString('hex'), '9000');
  } finally {
    await connection.disconnect('leave');
  }
});

test.serial('opensc-tool sends an APDU through pcscd to the card', async (t) => {
  const output = await openscTool('-r', String(SLOT), '-s', '80 E0 00 00 03 0A 0B 0C');
  t.regex(output, /Received \(SW1=0x90, SW2=0x00\)/);
  t.regex(output, /0A 0B 0C/);
});

test.serial('connect, reset and unpower reach the card as power events', async (t) => {
  card.events.length = 0;
  const connection = await client.connect(pcscd.readerName(SLOT));
  await connection.disconnect('reset');
  t.true(card.events.includes('reset'), card.events.join(','));
  card.events.length = 0;
  const again = await client.connect(pcscd.readerName(SLOT));
  await again.disconnect('unpower');
  // pcscd powers the card off when the last handle goes with SCARD_UNPOWER_CARD.
  for (let i = 0; i < 100 && !card.events.includes('powerOff'); i++) await sleep(20);
  t.true(card.events.includes('powerOff'), card.events.join(','));
});

test.serial('close() leaves the reader empty, a new link fills it again', async (t) => {
  await link.close();
  t.is(await client.waitForCard(pcscd.readerName(SLOT), false), null);
  const listing = await openscTool('-l');
  t.regex(listing, new RegExp(`^${SLOT}\\s+No\\s+${pcscd.readerName(SLOT)}$`, 'm'), listing);
  link = new VpcdLink({ card, port: pcscd.port(SLOT) }).start();
  t.is((await client.waitForCard(pcscd.readerName(SLOT), true))?.toString('hex'), atrHex);
});

test.serial('after a pcscd restart the card is back within 2 s', async (t) => {
  // The in-process client's context dies with pcscd: use a spawned client from here on.
  client.close();
  const started = Date.now();
  await pcscd.restart();
  let printed = '';
  while (Date.now() - started < 4000) {
    printed = await openscTool('-r', String(SLOT), '-a').catch(() => '');
    if (printed.trim().replaceAll(':', '') === atrHex) break;
    await sleep(50);
  }
  const elapsed = Date.now() - started;
  t.is(printed.trim().replaceAll(':', ''), atrHex);
  t.true(elapsed < 2000, `card back after ${elapsed} ms`);
});
