/**
 * VpcdLink against a fake vpcd driver on loopback: framing, ordering, power events,
 * malformed input, reconnection and close(). The real driver is in vpcd_pcscd.test.ts.
 */
import { randomBytes } from 'node:crypto';
import net from 'node:net';

import test from 'ava';

import { TpmvscError } from '../../common/errors.js';
import type { SmartCard } from '../../common/smart_card.js';
import { encodeFrame, FrameReader } from '../../daemon/frame_reader.js';
import { VpcdLink } from '../../daemon/vpcd_link.js';
import { EchoCard, GET_DATA_ANSWER, TEST_ATR } from '../helpers/echo_card.js';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** One accepted connection of the fake driver. */
class PeerConnection {
  private readonly reader = new FrameReader();
  private readonly frames: Buffer[] = [];
  private waiters: (() => void)[] = [];
  ended = false;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.frames.push(...this.reader.push(chunk));
      this.wake();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  send(hex: string): void {
    this.socket.write(Buffer.from(hex, 'hex'));
  }

  sendFrame(payload: Uint8Array): void {
    this.socket.write(encodeFrame(payload));
  }

  /** The next frame from the card, or null if the connection ended first. */
  async next(timeoutMs = 3000): Promise<Buffer | null> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length === 0 && !this.ended) {
      if (Date.now() > deadline) throw new Error('no frame from the card');
      await new Promise<void>((resolve) => {
        this.waiters.push(resolve);
        setTimeout(resolve, 50);
      });
    }
    return this.frames.shift() ?? null;
  }

  async nextHex(timeoutMs?: number): Promise<string | null> {
    return (await this.next(timeoutMs))?.toString('hex') ?? null;
  }

  async waitEnded(timeoutMs = 3000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      if (Date.now() > deadline) throw new Error('the card did not close the connection');
      await sleep(10);
    }
  }
}

/** A listening fake driver; connections() yields every card connection in order. */
class FakeVpcd {
  readonly accepted: PeerConnection[] = [];
  private constructor(readonly server: net.Server) {
    server.on('connection', (socket) => this.accepted.push(new PeerConnection(socket)));
  }

  static async start(port = 0): Promise<FakeVpcd> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
    return new FakeVpcd(server);
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  async connection(index: number, timeoutMs = 3000): Promise<PeerConnection> {
    const deadline = Date.now() + timeoutMs;
    while (this.accepted.length <= index) {
      if (Date.now() > deadline) throw new Error(`connection #${index} never came`);
      await sleep(5);
    }
    return this.accepted[index]!;
  }

  async stop(): Promise<void> {
    for (const connection of this.accepted) connection.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

async function setup(t: { teardown(fn: () => Promise<void> | void): void }, card: SmartCard = new EchoCard()) {
  const peer = await FakeVpcd.start();
  const link = new VpcdLink({ card, port: peer.port, backoff: { initialMs: 20, maxMs: 200 } });
  t.teardown(async () => {
    await link.close();
    await peer.stop();
  });
  link.start();
  return { peer, link, connection: await peer.connection(0) };
}

const hexOf = (bytes: Uint8Array) => Buffer.from(bytes).toString('hex');

test('answers GET ATR and APDUs, and passes power events to the card', async (t) => {
  const card = new EchoCard();
  const { connection } = await setup(t, card);
  connection.send('000104');
  t.is(await connection.nextHex(), hexOf(TEST_ATR));
  connection.send('000101' + '000102' + '000100');
  connection.send('000400cb3fff');
  t.is(await connection.nextHex(), hexOf(GET_DATA_ANSWER) + '9000');
  t.deepEqual(card.events, ['powerOn', 'reset', 'powerOff'], 'control bytes get no reply and reach the card in order');
});

test('reassembles frames split byte by byte', async (t) => {
  const { connection } = await setup(t);
  for (const byte of Buffer.from('000780e00000020102', 'hex')) {
    connection.socket.write(Uint8Array.of(byte));
    await sleep(2);
  }
  t.is(await connection.nextHex(), '01029000');
});

test('handles several frames coalesced in one chunk, in order, one at a time', async (t) => {
  let running = 0;
  let maxRunning = 0;
  const echo = new EchoCard();
  const card: SmartCard = {
    atr: TEST_ATR,
    powerOn: () => echo.powerOn(),
    powerOff: () => echo.powerOff(),
    reset: () => echo.reset(),
    async transmit(command) {
      running++;
      maxRunning = Math.max(maxRunning, running);
      // The first command is the slowest: a concurrent link would answer out of order.
      await sleep(command[4] === 0x01 && command[5] === 0x01 ? 40 : 1);
      running--;
      return echo.answer(command);
    },
  };
  const { connection } = await setup(t, card);
  const frames = [1, 2, 3].map((n) => hexOf(encodeFrame(Uint8Array.of(0x80, 0xe0, 0, 0, 1, n))));
  connection.send(frames.join('') + '000104');
  t.is(await connection.nextHex(), '019000');
  t.is(await connection.nextHex(), '029000');
  t.is(await connection.nextHex(), '039000');
  t.is(await connection.nextHex(), hexOf(TEST_ATR));
  t.is(maxRunning, 1);
});

test('serves a 4 KB command and a 60 KB response (extended length)', async (t) => {
  const { connection } = await setup(t);
  const data = randomBytes(4096);
  connection.sendFrame(Buffer.concat([Buffer.from('80e00000001000', 'hex'), data, Buffer.from('0000', 'hex')]));
  t.is(await connection.nextHex(), data.toString('hex') + '9000');
  connection.sendFrame(Buffer.from('80e1ea600000', 'hex'));
  const response = (await connection.next())!;
  t.is(response.length, 0xea60 + 2);
  t.is(response[1000], 1000 & 0xff);
});

const malformed: { name: string; bytes: string }[] = [
  { name: 'a zero-length frame', bytes: '0000' },
  { name: 'an unknown control byte', bytes: '000177' },
];

for (const row of malformed) {
  test(`drops the connection on ${row.name} and reconnects`, async (t) => {
    const { peer, connection, link } = await setup(t);
    const disconnected = new Promise<string>((resolve) => link.once('disconnected', (reason) => resolve(reason)));
    connection.send(row.bytes);
    await connection.waitEnded();
    t.is(await disconnected, 'protocol_error');
    const second = await peer.connection(1);
    second.send('000104');
    t.is(await second.nextHex(), hexOf(TEST_ATR));
  });
}

test('survives random garbage from the peer', async (t) => {
  const { peer } = await setup(t);
  for (let round = 0; round < 20; round++) {
    const connection = await peer.connection(round);
    // Random bytes, then a GET ATR: either the garbage parsed as frames and the link still
    // answers, or it was malformed and the link reconnected. Never a crash or a hang.
    connection.send(randomBytes(1 + Math.floor(Math.random() * 64)).toString('hex'));
    await sleep(5);
    connection.socket.destroy();
  }
  const last = await peer.connection(20, 5000);
  last.send('000104');
  t.is(await last.nextHex(), hexOf(TEST_ATR));
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
  const { connection } = await setup(t, card);
  connection.send('000101');
  connection.send('000400cb3fff');
  t.is(await connection.nextHex(), '6f00');
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
  const peer = await FakeVpcd.start(port);
  t.teardown(async () => {
    await link.close();
    await peer.stop();
  });
  const first = await peer.connection(0, 1000);
  first.socket.destroy(); // pcscd went away
  const second = await peer.connection(1, 1000);
  second.send('000104');
  t.is(await second.nextHex(), hexOf(TEST_ATR));
  t.is(connects, 2);
});

test('close() waits for the APDU in flight, then leaves and stops reconnecting', async (t) => {
  const card = new EchoCard();
  card.delayMs = 150;
  const { peer, connection, link } = await setup(t, card);
  connection.send('000400cb3fff');
  await sleep(20); // the APDU is with the card now
  const closed = link.close();
  t.is(await connection.nextHex(), hexOf(GET_DATA_ANSWER) + '9000', 'the answer still arrives');
  await connection.waitEnded();
  await closed;
  t.false(link.connected);
  await sleep(300);
  t.is(peer.accepted.length, 1, 'no reconnection after close()');
});

test('refuses a non-loopback host and bad ports', (t) => {
  const card = new EchoCard();
  t.throws(() => new VpcdLink({ card, port: 35963, host: '192.0.2.1' }), { instanceOf: TpmvscError });
  t.throws(() => new VpcdLink({ card, port: 0 }), { instanceOf: TpmvscError });
  t.throws(() => new VpcdLink({ card, port: 70000 }), { instanceOf: TpmvscError });
});

test("'powered' fires once the ATR after a power-on or reset is answered, not on presence polls", async (t) => {
  const { connection, link } = await setup(t);
  let powered = 0;
  link.on('powered', () => powered++);
  connection.send('000104');
  t.is(await connection.nextHex(), hexOf(TEST_ATR));
  t.is(powered, 0, 'a presence poll (GET ATR without power-on) is not a power-up');
  connection.send('000101');
  connection.send('000400cb3fff');
  t.regex((await connection.nextHex())!, /9000$/);
  t.is(powered, 0, 'the power-on alone is not enough: the driver has not read the ATR yet');
  connection.send('000104');
  t.is(await connection.nextHex(), hexOf(TEST_ATR));
  t.is(powered, 1, 'the reply to the GET ATR after the power-on is out before the event');
  connection.send('000104');
  t.is(await connection.nextHex(), hexOf(TEST_ATR));
  t.is(powered, 1, 'later polls do not repeat it');
  connection.send('000102' + '000104');
  t.is(await connection.nextHex(), hexOf(TEST_ATR));
  t.is(powered, 2, 'a reset is followed by an ATR read too');
});
