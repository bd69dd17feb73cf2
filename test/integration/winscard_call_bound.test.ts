/**
 * The test helpers' PC/SC calls are bounded: pcsc-lite waits for a card's answer without a
 * timeout (vpcd reads the reply with no timeout), so a card that never answers used to hang a
 * test until ava's global timeout without saying which call was stuck. Real pcscd + vpcd and a
 * card that holds its answer longer than the bound.
 */
import test from 'ava';

import { VpcdLink } from '../../daemon/vpcd_link.js';
import { EchoCard } from '../helpers/echo_card.js';
import { startPcscd, type PcscdInstance } from '../helpers/pcscd.js';
import { openWinscardApp, WinscardTimeout, type WinscardApp, type WinscardConnection } from '../helpers/winscard.js';

const SLOT = 0;
const BOUND_MS = 1500;
/** The card's answer comes this long after the command: well after the bound. */
const CARD_DELAY_MS = 6000;

let pcscd: PcscdInstance;
let app: WinscardApp;
const card = new EchoCard();
let link: VpcdLink;

test.before(async () => {
  pcscd = await startPcscd({ readers: 2 });
  pcscd.useInThisProcess();
  link = new VpcdLink({ card, port: pcscd.port(SLOT) }).start();
  app = await openWinscardApp({ callTimeoutMs: BOUND_MS });
});

test.after.always(async () => {
  card.delayMs = 0;
  await app?.close().catch(() => undefined);
  await link?.close();
  await pcscd?.stop();
});

/** Connects once the card is in the reader (vpcd takes a new link at its next poll). */
async function connect(): Promise<WinscardConnection> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      return await app.connect(pcscd.readerName(SLOT));
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
}

test.serial('SCardTransmit to a card that does not answer fails after the bound, naming the call and the reader', async (t) => {
  const connection = await connect();
  t.is((await connection.transmit(Buffer.from('00CB3FFF00', 'hex'))).subarray(-2).toString('hex'), '9000');

  card.delayMs = CARD_DELAY_MS;
  const started = performance.now();
  const error = await t.throwsAsync(connection.transmit(Buffer.from('00CB3FFF00', 'hex')), { instanceOf: WinscardTimeout });
  const waited = performance.now() - started;
  t.true(waited >= BOUND_MS - 50 && waited < CARD_DELAY_MS - 1000, `failed after ${waited.toFixed(0)} ms`);
  t.is(error?.call, 'SCardTransmit');
  t.true(error?.message.includes(`"${pcscd.readerName(SLOT)}"`), error?.message);
  t.true(error?.message.includes(`${BOUND_MS} ms`), error?.message);

  // The card answers in the end; the connection works again once it has.
  card.delayMs = 0;
  await new Promise((resolve) => setTimeout(resolve, CARD_DELAY_MS - waited + 500));
  t.is((await connection.transmit(Buffer.from('00CB3FFF00', 'hex'))).subarray(-2).toString('hex'), '9000');
  await connection.disconnect('leave');
});
