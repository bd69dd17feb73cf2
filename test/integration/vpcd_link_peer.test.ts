/**
 * VpcdLink against a fake vpcd driver on loopback that reads its socket only while it waits
 * for a reply, as vpcd does (test/helpers/fake_vpcd.ts): framing, power events, 1-byte and
 * empty APDUs, a driver stopped between a control byte and what follows, protocol
 * violations and floods, presence (served or not), reconnection and close(). The real
 * driver is in vpcd_pcscd.test.ts and vpcd_one_byte_apdu.test.ts.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import net from 'node:net';

import test from 'ava';

import { TpmvscError } from '../../common/errors.js';
import type { SmartCard } from '../../common/smart_card.js';
import { MAX_CONTROL_RUN } from '../../daemon/vpcd_connection.js';
import { vpcdLinkChannel, VpcdLink, type VpcdLinkDiagnostic, type VpcdLinkOptions } from '../../daemon/vpcd_link.js';
import { EchoCard, GET_DATA_ANSWER, TEST_ATR } from '../helpers/echo_card.js';
import { FakeVpcd } from '../helpers/fake_vpcd.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const hexOf = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');
const ATR = hexOf(TEST_ATR);
const GET_DATA = '00cb3fff055c035fc10200';
const GET_DATA_REPLY = hexOf(GET_DATA_ANSWER) + '9000';

async function setup(
  t: { teardown(fn: () => Promise<void> | void): void },
  card: SmartCard = new EchoCard(),
  options: Partial<VpcdLinkOptions> = {},
) {
  const vpcd = await FakeVpcd.start();
  const link = new VpcdLink({ card, port: vpcd.port, backoff: { initialMs: 20, maxMs: 200 }, ...options });
  t.teardown(async () => {
    await link.close();
    await vpcd.stop();
  });
  link.start();
  const driver = await vpcd.connection(0);
  return { vpcd, link, driver };
}

/** Diagnostics published by links while `run` runs. */
async function diagnostics<T>(run: () => Promise<T>): Promise<{ result: T; events: VpcdLinkDiagnostic[] }> {
  const events: VpcdLinkDiagnostic[] = [];
  const listener = (message: unknown) => events.push(message as VpcdLinkDiagnostic);
  subscribe(vpcdLinkChannel.name, listener);
  try {
    return { result: await run(), events };
  } finally {
    unsubscribe(vpcdLinkChannel.name, listener);
  }
}

test('answers GET ATR and APDUs, and passes power events to the card', async (t) => {
  const card = new EchoCard();
  const { driver } = await setup(t, card);
  t.is(await driver.command('04'), ATR);
  await driver.control('01');
  t.is(await driver.command('04'), ATR, 'a power-on is followed by GET ATR, as in the driver');
  await driver.control('02');
  t.is(await driver.command('04'), ATR);
  await driver.control('00');
  t.is(await driver.command(GET_DATA), GET_DATA_REPLY);
  t.deepEqual(card.events, ['powerOn', 'reset', 'powerOff'], 'control bytes get no reply and reach the card in order');
  t.is(await driver.extraBytes(), '', 'never a reply nobody asked for');
});

test('reassembles frames split byte by byte', async (t) => {
  const { driver } = await setup(t);
  for (const byte of Buffer.from('000780e00000020102', 'hex')) {
    await driver.write(Uint8Array.of(byte));
    await sleep(2);
  }
  t.is(await driver.readReply(), '01029000');
});

test('serves a 4 KB command and a 60 KB response (extended length)', async (t) => {
  const { driver } = await setup(t);
  const data = randomBytes(4096);
  t.is(await driver.command(Buffer.concat([Buffer.from('80e00000001000', 'hex'), data, Buffer.from('0000', 'hex')])), data.toString('hex') + '9000');
  const response = Buffer.from((await driver.command('80e1ea600000'))!, 'hex');
  t.is(response.length, 0xea60 + 2);
  t.is(response[1000], 1000 & 0xff);
});

test('a 1-byte APDU of any value but 04 is answered by the card (6700), the link stays', async (t) => {
  const card = new EchoCard();
  const { vpcd, driver } = await setup(t, card);
  t.is(await driver.command('04'), ATR);
  for (let value = 0; value <= 0xff; value++) {
    if (value === 0x04) continue;
    t.is(await driver.command(Uint8Array.of(value)), '6700', `1-byte APDU ${value.toString(16)}`);
  }
  t.is(await driver.command('04'), ATR, 'a 1-byte 04 is a GET ATR: the ATR is its answer');
  t.is(await driver.command(GET_DATA), GET_DATA_REPLY, 'the next command gets its own answer');
  t.is(await driver.extraBytes(), '');
  t.is(vpcd.accepted.length, 1, 'never a reconnection');
  t.deepEqual(card.events, ['powerOff', 'powerOn', 'reset'], '00, 01, 02 still act as power events (as a reset any client may ask for)');
});

test('a driver stopped after a control byte gets one reply byte ahead, then exactly the reply its next command asks for', async (t) => {
  const { driver } = await setup(t);
  t.is(await driver.command('04'), ATR);
  for (const control of ['00', '01', '02']) {
    await driver.control(control);
    // pcscd stopped here: nothing read, nothing sent for well over the grace and probe times.
    await sleep(400);
    t.is(await driver.command('04'), ATR, `after ${control} and silence the GET ATR gets the ATR`);
    t.is(await driver.command(GET_DATA), GET_DATA_REPLY, 'and the next command its own answer');
    t.is(await driver.extraBytes(), '');
  }
});

test('a zero-length APDU (silence while vpcd reads) is answered 6700; silence without a reader changes nothing', async (t) => {
  const { vpcd, driver } = await setup(t, new EchoCard(), { idleProbeMs: 150 });
  t.is(await driver.command('04'), ATR);
  // vpcd's vicc_transmit with 0 bytes: sends nothing, waits for a reply.
  t.is(await driver.readReply(2000), '6700');
  // A stopped pcscd: silent and not reading. The link may write a reply's first byte ahead, no more.
  await sleep(600);
  t.is(await driver.command('04'), ATR);
  t.is(await driver.command(GET_DATA), GET_DATA_REPLY);
  t.is(await driver.extraBytes(), '');
  t.is(vpcd.accepted.length, 1);
});

test('after a control byte, a command of 4 bytes or more while a reply byte is ahead is answered 6F00 without the card', async (t) => {
  const card = new EchoCard();
  const { driver } = await setup(t, card);
  t.is(await driver.command('04'), ATR);
  await driver.control('00');
  await sleep(300);
  const before = card.commands;
  t.is(await driver.command(GET_DATA), '6f00');
  t.is(card.commands, before, 'not run');
  t.is(await driver.command(GET_DATA), GET_DATA_REPLY, 'the next one runs');
});

const violations: { name: string; send: string }[] = [
  { name: 'a zero-length frame', send: '0000' },
  { name: 'two GET ATR without reading the first reply', send: '000104000104' },
  { name: 'a GET ATR and the start of another frame', send: '00010400' },
  { name: `${MAX_CONTROL_RUN + 1} control bytes in a row`, send: '000100'.repeat(MAX_CONTROL_RUN + 1) },
];

for (const row of violations) {
  test(`drops the connection on ${row.name} and reconnects`, async (t) => {
    const { vpcd, driver, link } = await setup(t);
    t.is(await driver.command('04'), ATR);
    const { result: reason, events } = await diagnostics(async () => {
      const disconnected = new Promise<string>((resolve) => link.once('disconnected', (why) => resolve(why)));
      await driver.write(row.send);
      await driver.waitEnded();
      return disconnected;
    });
    t.is(reason, 'protocol_error');
    t.true(events.some((event) => event.event === 'protocol_error' && event.port === vpcd.port));
    const second = await vpcd.connection(1);
    t.is(await second.command('04'), ATR);
  });
}

test('a command sent while the card works on the previous one is a violation: dropped, not queued', async (t) => {
  const card = new EchoCard();
  card.delayMs = 100;
  const { vpcd, driver } = await setup(t, card);
  t.is(await driver.command('04'), ATR);
  const first = driver.command(GET_DATA);
  await sleep(20);
  await driver.write('000400cb3fff');
  t.is(await first, null, 'no answer: the connection is dropped');
  t.is(await (await vpcd.connection(1)).command('04'), ATR, 'reconnected');
});

test('survives random garbage from the peer', async (t) => {
  const { vpcd } = await setup(t);
  for (let round = 0; round < 20; round++) {
    const connection = await vpcd.connection(round);
    // Random bytes: parsed as frames and answered, or refused and the link reconnects. Never a crash or a hang.
    await connection.write(randomBytes(1 + Math.floor(Math.random() * 64)));
    await sleep(5);
    await connection.close();
  }
  const last = await vpcd.connection(20, 5000);
  t.is(await last.command('04'), ATR);
});

test('a card that throws answers 6F00 instead of crashing', async (t) => {
  const card: SmartCard = {
    atr: TEST_ATR,
    powerOn() {
      throw new Error('broken');
    },
    powerOff: () => undefined,
    reset: () => undefined,
    transmit: () => Promise.reject(new Error('broken')),
  };
  const { driver } = await setup(t, card);
  await driver.control('01');
  t.is(await driver.command('04'), ATR);
  t.is(await driver.command(GET_DATA), '6f00');
});

test('presence is proven: connected is false until vpcd asks the ATR over this connection', async (t) => {
  const { link, driver } = await setup(t);
  await sleep(50);
  t.false(link.connected);
  t.is(link.status().state, 'unserved');
  t.is(await driver.command('04'), ATR);
  t.true(link.connected);
  t.like(link.status(), { state: 'present', problem: null });
});

test('a connection vpcd never serves is closed after servedTimeoutMs, reported once, and retried', async (t) => {
  const vpcd = await FakeVpcd.start();
  const { result, events } = await diagnostics(async () => {
    const link = new VpcdLink({ card: new EchoCard(), port: vpcd.port, servedTimeoutMs: 200, backoff: { initialMs: 20, maxMs: 50 } }).start();
    try {
      await vpcd.connection(3, 3000);
      const status = link.status();
      // Then vpcd serves one.
      const served = await vpcd.connection(vpcd.accepted.length - 1);
      await served.command('04');
      return { status, served: link.status() };
    } finally {
      await link.close();
      await vpcd.stop();
    }
  });
  // Other tests of this file run at the same time: only this link's port counts.
  const ours = events.filter((event) => event.port === vpcd.port);
  t.like(result.status, { state: 'unserved', problem: 'connected, not served by vpcd' });
  t.is(result.served.state, 'present');
  t.is(ours.filter((event) => event.event === 'unserved').length, 1, 'one log line, not one per retry');
  t.true(ours.some((event) => event.event === 'served'));
});

test('a connect that hangs (a full accept queue) times out and is retried', async (t) => {
  // A listener with backlog 0 that never accepts: one connection fills its queue, the next SYN is dropped.
  const script = 'import socket,sys,time\ns=socket.socket()\ns.bind(("127.0.0.1",0))\ns.listen(0)\nprint(s.getsockname()[1],flush=True)\ntime.sleep(30)';
  const listener = spawn('/usr/bin/python3', ['-c', script]);
  t.teardown(() => void listener.kill());
  const port = Number(await new Promise<string>((resolve) => listener.stdout.once('data', (data: Buffer) => resolve(data.toString().trim()))));
  const filler = net.connect(port, '127.0.0.1');
  filler.on('error', () => undefined);
  t.teardown(() => void filler.destroy());
  await new Promise((resolve) => filler.once('connect', resolve));
  const link = new VpcdLink({ card: new EchoCard(), port, connectTimeoutMs: 300, servedTimeoutMs: 300, backoff: { initialMs: 20, maxMs: 50 } }).start();
  t.teardown(() => link.close());
  await sleep(1000);
  const status = link.status();
  t.not(status.state, 'present');
  t.truthy(status.problem, JSON.stringify(status));
});

test('reconnects with backoff when the driver is not there yet, and after it drops', async (t) => {
  // Reserve a port, free it: the link starts with nobody listening.
  const probe = await FakeVpcd.start();
  const port = probe.port;
  await probe.stop();
  const link = new VpcdLink({ card: new EchoCard(), port, backoff: { initialMs: 20, maxMs: 100 } });
  let connects = 0;
  link.on('connected', () => connects++);
  link.start();
  await sleep(300);
  t.false(link.connected);
  t.like(link.status(), { state: 'connecting' });
  t.regex(link.status().problem ?? '', /nobody listens on vpcd port/);
  const vpcd = await FakeVpcd.start(port);
  t.teardown(async () => {
    await link.close();
    await vpcd.stop();
  });
  const first = await vpcd.connection(0, 1000);
  t.is(await first.command('04'), ATR);
  await first.close(); // pcscd went away
  const second = await vpcd.connection(1, 1000);
  t.is(await second.command('04'), ATR);
  t.is(connects, 2);
});

test('close() waits for the APDU in flight, then leaves and stops reconnecting', async (t) => {
  const card = new EchoCard();
  card.delayMs = 150;
  const { vpcd, driver, link } = await setup(t, card);
  t.is(await driver.command('04'), ATR);
  const answer = driver.command(GET_DATA);
  while (card.commands === 0) await sleep(2); // the APDU is with the card now
  const closed = link.close();
  t.is(await answer, GET_DATA_REPLY, 'the answer still arrives');
  await driver.waitEnded();
  await closed;
  t.false(link.connected);
  await sleep(300);
  t.is(vpcd.accepted.length, 1, 'no reconnection after close()');
});

test('refuses a non-loopback host and bad ports', (t) => {
  const card = new EchoCard();
  t.throws(() => new VpcdLink({ card, port: 35963, host: '192.0.2.1' }), { instanceOf: TpmvscError });
  t.throws(() => new VpcdLink({ card, port: 0 }), { instanceOf: TpmvscError });
  t.throws(() => new VpcdLink({ card, port: 70000 }), { instanceOf: TpmvscError });
});

test("'powered' fires once the ATR after a power-on or reset is answered, not on presence polls", async (t) => {
  const { driver, link } = await setup(t);
  let powered = 0;
  link.on('powered', () => powered++);
  t.is(await driver.command('04'), ATR);
  t.is(powered, 0, 'a presence poll (GET ATR without power-on) is not a power-up');
  await driver.control('01');
  t.is(powered, 0, 'the power-on alone is not enough: the driver has not read the ATR yet');
  t.is(await driver.command('04'), ATR);
  t.is(powered, 1, 'the reply to the GET ATR after the power-on is out before the event');
  t.is(await driver.command('04'), ATR);
  t.is(powered, 1, 'later polls do not repeat it');
  await driver.control('02');
  t.is(await driver.command('04'), ATR);
  t.is(powered, 2, 'a reset is followed by an ATR read too');
});
