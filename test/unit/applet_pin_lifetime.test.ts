/**
 * The verified-PIN lifetime (common/pin_lifetime.ts) in the card application, on a clock the
 * test moves: the limit counted from the VERIFY (no use extends it), ONCE, the daemon default
 * versus the card's own, and that power events, logout and 9B authentication behave as before.
 */
import test from 'ava';
import { channel } from 'node:diagnostics_channel';
import type { PinLifetime } from '../../common/pin_lifetime.js';
import { parsePivCardState } from '../../applet/piv_state.js';
import { makeTestCard, mutualAuthenticate, verifyCommand, type TestCard } from '../helpers/applet_harness.js';

const PIN_OK = verifyCommand('12345678');
const PIN_STATUS = '00200080';
const LOGOUT = '0020ff80';
const DIGEST = '01'.repeat(32);
const SIGN_9A = `0087119a267c2482008120${DIGEST}`;
const SIGN_9C = `0087119c267c2482008120${DIGEST}`;

/** A card with P-256 keys in 9A and 9C on a clock the test moves (ms). */
async function cardAt(options: { pinLifetime?: PinLifetime; defaultPinLifetime?: PinLifetime }): Promise<{ card: TestCard; advance: (ms: number) => void }> {
  let now = 1_000_000;
  const card = makeTestCard({ ...options, clock: () => now });
  await mutualAuthenticate(card.send);
  for (const slot of ['9a', '9c']) {
    if (!(await card.send(`004700${slot}05ac03800111`)).endsWith('9000')) throw new Error(`GENERATE ${slot} failed`);
  }
  return { card, advance: (ms) => (now += ms) };
}

const sw = (response: string): string => response.slice(-4);

test('the PIN stays verified that many seconds after the VERIFY; no use extends it', async (t) => {
  const { card, advance } = await cardAt({ pinLifetime: { seconds: 30, once: false } });
  t.is(await card.send(PIN_OK), '9000');
  advance(10_000);
  const signature = await card.send(SIGN_9A);
  t.is(sw(signature), '9000', 'within 30 s of the VERIFY');
  t.regex(signature, /^7c..82..30/, 'an ECDSA signature (DER) came back');
  advance(10_000);
  t.is(sw(await card.send(SIGN_9A)), '9000', 'as many signatures as asked within the 30 s');
  t.is(await card.send(PIN_STATUS), '9000');
  t.is(sw(await card.send('00cb3fff055c035fc10200')), '9000');
  advance(9_999);
  t.is(sw(await card.send(SIGN_9A)), '9000', '29.999 s after the VERIFY');
  advance(1);
  t.is(await card.send(SIGN_9A), '6982', '30 s after the VERIFY, signatures in between or not');
  t.is(await card.send(PIN_STATUS), '63c5', 'and VERIFY says so, tries untouched');
  t.is(await card.send(PIN_OK), '9000');
  t.is(sw(await card.send(SIGN_9A)), '9000', 'a new VERIFY starts again');
  advance(20_000);
  t.is(await card.send(PIN_OK), '9000', 'a VERIFY while verified starts the 30 s again');
  advance(20_000);
  t.is(sw(await card.send(SIGN_9A)), '9000');
});

test('the management key (9B) authentication is not the PIN\'s and outlives the lifetime', async (t) => {
  const { card, advance } = await cardAt({ pinLifetime: { seconds: 5, once: false } });
  t.is(await card.send(PIN_OK), '9000');
  advance(60_000);
  t.is(await card.send(SIGN_9A), '6982');
  // Still authenticated with 9B from cardAt: GENERATE needs it and works.
  t.regex(await card.send('0047009d05ac03800111'), /9000$/);
});

test('ONCE: each VERIFY allows one private-key operation, whatever the slot', async (t) => {
  const { card } = await cardAt({ pinLifetime: { seconds: 30, once: true } });
  t.is(await card.send(PIN_OK), '9000');
  t.is(await card.send(PIN_STATUS), '9000', 'verified until used');
  t.is(sw(await card.send(SIGN_9A)), '9000');
  t.is(await card.send(SIGN_9A), '6982', 'another signature right after needs the PIN');
  t.is(await card.send(PIN_STATUS), '63c5');
  t.is(await card.send(PIN_OK), '9000');
  t.is(sw(await card.send(SIGN_9C)), '9000', '9C (PIN always) takes the same single use');
  t.is(await card.send(SIGN_9A), '6982');
  t.is(await card.send(SIGN_9C), '6982');
});

test('ONCE with seconds: an unused VERIFY ends too', async (t) => {
  const { card, advance } = await cardAt({ pinLifetime: { seconds: 10, once: true } });
  t.is(await card.send(PIN_OK), '9000');
  advance(10_000);
  t.is(await card.send(SIGN_9A), '6982');
});

test('UNLIMITED: only power events and logout end it (what real cards do)', async (t) => {
  const { card, advance } = await cardAt({ pinLifetime: { seconds: null, once: false } });
  t.is(await card.send(PIN_OK), '9000');
  advance(7 * 24 * 3600_000);
  t.is(sw(await card.send(SIGN_9A)), '9000');
  t.is(await card.send(LOGOUT), '9000');
  t.is(await card.send(SIGN_9A), '6982');
  t.is(await card.send(PIN_OK), '9000');
  card.applet.powerOff();
  card.applet.powerOn();
  t.is(await card.send(SIGN_9A), '6982', 'power off ends it');
});

test('a card without its own lifetime follows the daemon default; its own wins', async (t) => {
  const fromDaemon = await cardAt({ defaultPinLifetime: { seconds: 2, once: false } });
  t.deepEqual(fromDaemon.card.applet.pinLifetime, { seconds: 2, once: false });
  t.is(await fromDaemon.card.send(PIN_OK), '9000');
  fromDaemon.advance(2_000);
  t.is(await fromDaemon.card.send(SIGN_9A), '6982');

  const own = await cardAt({ pinLifetime: { seconds: 60, once: false }, defaultPinLifetime: { seconds: 2, once: false } });
  t.is(await own.card.send(PIN_OK), '9000');
  own.advance(59_000);
  t.is(sw(await own.card.send(SIGN_9A)), '9000');
  // The card's setting is in its saved state; the default is not written into it.
  t.deepEqual((JSON.parse(own.card.store.last!) as { pinLifetime?: unknown }).pinLifetime, { seconds: 60, once: false });
  t.false('pinLifetime' in (JSON.parse(fromDaemon.card.store.last!) as object));
});

// Serial (runs before the others): the diagnostics channel is shared by every card in this process.
test.serial('the built-in default is 30 s, and an expiry is reported (no secret) on tpmvsc:applet', async (t) => {
  const events: unknown[] = [];
  const listener = (message: unknown): void => void events.push(message);
  channel('tpmvsc:applet').subscribe(listener);
  t.teardown(() => channel('tpmvsc:applet').unsubscribe(listener));
  const { card, advance } = await cardAt({});
  t.deepEqual(card.applet.pinLifetime, { seconds: 30, once: false });
  t.is(await card.send(PIN_OK), '9000');
  advance(30_000);
  t.is(await card.send(SIGN_9A), '6982');
  t.deepEqual(events, [{ event: 'pin-expired', serial: 12345678, seconds: 30 }]);
});

test('a failed VERIFY still ends the verified state, and a wrong PIN costs a try as before', async (t) => {
  const { card } = await cardAt({ pinLifetime: { seconds: 30, once: false } });
  t.is(await card.send(PIN_OK), '9000');
  t.is(await card.send(verifyCommand('87654321')), '63c4');
  t.is(await card.send(SIGN_9A), '6982');
});

test('card files: the lifetime is optional (older cards follow the daemon), a bad one is refused by name', async (t) => {
  const { card } = await cardAt({ pinLifetime: { seconds: 30, once: true } });
  const saved = JSON.parse(card.store.last!) as Record<string, unknown>;
  t.deepEqual(parsePivCardState(saved).pinLifetime, { seconds: 30, once: true });
  const { pinLifetime: _dropped, ...older } = saved;
  t.is(parsePivCardState(older).pinLifetime, undefined);
  for (const bad of [{ seconds: 0, once: false }, { seconds: 30 }, { seconds: '30', once: false }, null]) {
    t.throws(() => parsePivCardState({ ...saved, pinLifetime: bad }), { message: /card state: bad or missing pinLifetime/ });
  }
});
