/**
 * The ControlServer at the protocol level: raw lines on its socket.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { lstat, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test, { type ExecutionContext } from 'ava';
import { DEFAULT_PIN_POLICY, PROGRESS, type CreateRequest, type CreateResult } from '../../common/control_protocol.js';
import { TpmvscError } from '../../common/errors.js';
import { CONTROL_CHANNEL, ControlServer, type ControlServerOptions } from '../../daemon/control_server.js';
import { makeStaleSocket, RecordingCardManager, startTestDaemon } from './cli_test_daemon.js';

const CREATE: CreateRequest = {
  op: 'create',
  name: 'Card',
  adminKeyHex: '0A0B0C0D0E0F10111213141516171819202122232425262F',
  adminKeyRandom: false,
  pin: 'Pin#Sec9',
  puk: null,
  pinPolicy: DEFAULT_PIN_POLICY,
  generate: false,
  pinLifetime: null,
  attestation: null,
};

function connect(socketPath: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ path: socketPath });
    socket.once('connect', () => resolve(socket));
    socket.once('error', reject);
  });
}

/** A ControlServer with these options on a socket in a fresh temp dir, closed and removed at the test's end. */
async function serverFor(t: ExecutionContext, options: Omit<ControlServerOptions, 'socketPath'>): Promise<ControlServer> {
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-srv-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const server = new ControlServer({ socketPath: join(dir, 'c.sock'), ...options });
  await server.listen();
  t.teardown(() => server.close());
  return server;
}

/** Sends raw text and returns every line the server sends before it closes. */
async function exchange(socketPath: string, text: string | Buffer): Promise<Array<Record<string, unknown>>> {
  const socket = await connect(socketPath);
  let received = '';
  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => (received += chunk));
  socket.write(text);
  await new Promise<void>((resolve) => socket.once('close', () => resolve()));
  return received
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

test('a create streams progress lines, then {ok:true,result}', async (t) => {
  const daemon = await startTestDaemon();
  t.teardown(() => daemon.stop());
  const lines = await exchange(daemon.socketPath, `${JSON.stringify(CREATE)}\n`);
  t.deepEqual(lines, [
    { progress: PROGRESS.initializing },
    { progress: PROGRESS.creatingReader },
    { progress: PROGRESS.created },
    { ok: true, result: { instance: 'ROOT\\SMARTCARDREADER\\0000', reader: 'TPM Virtual Smart Card 00 00' } },
  ]);
});

const badRequests: Array<{ name: string; text: string | Buffer; code: string; message: RegExp }> = [
  { name: 'not JSON', text: 'hello\n', code: 'BAD_REQUEST', message: /not a JSON object on one line/ },
  { name: 'unknown op', text: '{"op":"format"}\n', code: 'BAD_REQUEST', message: /"op" must be/ },
  { name: 'unknown field', text: `${JSON.stringify({ ...CREATE, debug: true })}\n`, code: 'BAD_REQUEST', message: /unknown field "debug"/ },
  { name: 'bad hex', text: `${JSON.stringify({ ...CREATE, adminKeyHex: 'xyz' })}\n`, code: 'BAD_REQUEST', message: /48 hexadecimal/ },
  { name: 'short PIN', text: `${JSON.stringify({ ...CREATE, pin: '123' })}\n`, code: 'PIN_POLICY', message: /PIN must be exactly 8/ },
  { name: 'bad policy', text: `${JSON.stringify({ ...CREATE, pinPolicy: { ...DEFAULT_PIN_POLICY, maxLength: 200 } })}\n`, code: 'BAD_REQUEST', message: /maxlen/ },
  { name: 'bad instance', text: '{"op":"destroy","instance":"ROOT\\\\SMARTCARDREADER\\\\X"}\n', code: 'BAD_REQUEST', message: /"instance" must be/ },
  { name: 'attestation', text: `${JSON.stringify({ ...CREATE, attestation: 'AIK_MAYBE' })}\n`, code: 'BAD_REQUEST', message: /"attestation" must be null, "AIK_AND_CERT" or "AIK_ONLY"/ },
  { name: 'oversized line', text: `{"op":"list","x":"${'a'.repeat(20_000)}`, code: 'BAD_REQUEST', message: /request line is longer than 16384 bytes/ },
  { name: 'oversized line with its newline', text: `{"op":"list"${' '.repeat(20_000)}}\n`, code: 'BAD_REQUEST', message: /request line is longer than 16384 bytes/ },
  { name: 'unknown card', text: '{"op":"destroy","instance":"ROOT\\\\SMARTCARDREADER\\\\0004"}\n', code: 'NOT_FOUND', message: /ROOT\\SMARTCARDREADER\\0004/ },
];

for (const row of badRequests) {
  test(`bad request: ${row.name} -> one error line, no card touched, no secret echoed`, async (t) => {
    const daemon = await startTestDaemon();
    t.teardown(() => daemon.stop());
    const lines = await exchange(daemon.socketPath, row.text);
    t.is(lines.length, 1);
    const answer = lines[0] as { ok: boolean; error: { code: string; message: string } };
    t.false(answer.ok);
    t.is(answer.error.code, row.code);
    t.regex(answer.error.message, row.message);
    t.false(answer.error.message.includes(CREATE.adminKeyHex) || answer.error.message.includes(CREATE.pin));
    t.is(daemon.cards.createRequests.length, 0);
  });
}

test('a request that never ends its line times out with BAD_REQUEST', async (t) => {
  const server = await serverFor(t, { cards: new RecordingCardManager(), requestTimeoutMs: 300 });
  const lines = await exchange(server.socketPath, '{"op":');
  t.like(lines[0], { ok: false, error: { code: 'BAD_REQUEST', message: 'Invalid request: no complete request line within 0.3 s of connecting' } });
});

test('the request deadline counts from connect(): trickling bytes does not extend it', async (t) => {
  const server = await serverFor(t, { cards: new RecordingCardManager(), requestTimeoutMs: 500 });
  const socket = await connect(server.socketPath);
  let received = '';
  socket.setEncoding('utf8').on('data', (chunk: string) => (received += chunk));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => undefined);
  let sent = 0;
  for (const character of '{"op":"list"                              }') {
    if (received !== '') break;
    socket.write(character);
    sent += 1;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await closed;
  t.true(sent < 40, `cut after ${sent} bytes`);
  t.like(JSON.parse(received.split('\n')[0]!), { ok: false, error: { code: 'BAD_REQUEST', message: 'Invalid request: no complete request line within 0.5 s of connecting' } });
});

test('connections over the per-user limit are refused with TOO_MANY_CONNECTIONS; root is not held to the total', async (t) => {
  const server = await serverFor(t, { cards: new RecordingCardManager(), maxConnections: 1, maxConnectionsPerUser: 3 });
  // This test runs as root: three idle connections fit (the total of 1 is for other users), a fourth does not.
  const idle = await Promise.all([1, 2, 3].map(() => connect(server.socketPath)));
  t.teardown(() => idle.forEach((socket) => socket.destroy()));
  const lines = await exchange(server.socketPath, '{"op":"list"}\n');
  t.deepEqual(lines, [
    { ok: false, error: { code: 'TOO_MANY_CONNECTIONS', message: 'tpmvscd has too many open control connections: 3 from this user (--max-control-connections-per-user); try again when they have finished' } },
  ]);
  idle[0]!.destroy();
  await new Promise((resolve) => setTimeout(resolve, 100));
  t.deepEqual(await exchange(server.socketPath, '{"op":"list"}\n'), [{ ok: true, result: [] }]);
});

test('a create slower than the request timeout is not cut: the timeout ends with the request line', async (t) => {
  const cards = new RecordingCardManager();
  const create = cards.create.bind(cards);
  cards.create = async (request, progress, signal) => {
    await new Promise((resolve) => setTimeout(resolve, 1000));
    return create(request, progress, signal);
  };
  const server = await serverFor(t, { cards, requestTimeoutMs: 200 });
  const lines = await exchange(server.socketPath, `${JSON.stringify(CREATE)}\n`);
  t.like(lines.at(-1), { ok: true, result: { instance: 'ROOT\\SMARTCARDREADER\\0000' } });
});

test('an unexpected error is INTERNAL with a generic message; the detail goes to the diagnostics channel', async (t) => {
  const daemon = await startTestDaemon();
  t.teardown(() => daemon.stop());
  daemon.cards.failCreate = new RangeError('disk on fire at /var/lib/tpmvsc');
  const events: unknown[] = [];
  const listener = (message: unknown): void => void events.push(message);
  subscribe(CONTROL_CHANNEL, listener);
  t.teardown(() => unsubscribe(CONTROL_CHANNEL, listener));
  const lines = await exchange(daemon.socketPath, `${JSON.stringify(CREATE)}\n`);
  t.deepEqual(lines.at(-1), { ok: false, error: { code: 'INTERNAL', message: 'Internal error: see the daemon log' } });
  t.true(events.some((event) => (event as { event: string; message?: string }).event === 'internal-error' && (event as { message: string }).message.includes('disk on fire')));
  const serialised = JSON.stringify(events);
  t.false(serialised.includes(CREATE.pin) || serialised.includes(CREATE.adminKeyHex), 'no secret published');
  daemon.cards.failCreate = new TpmvscError('TPM_LOCKOUT');
  const typed = await exchange(daemon.socketPath, `${JSON.stringify(CREATE)}\n`);
  t.deepEqual(typed.at(-1), { ok: false, error: { code: 'TPM_LOCKOUT', message: 'The TPM is in dictionary-attack lockout' } });
});

test('a client that disconnects during create aborts the signal (roll-back)', async (t) => {
  const daemon = await startTestDaemon();
  t.teardown(() => daemon.stop());
  daemon.cards.hangCreate = true;
  const socket = await connect(daemon.socketPath);
  socket.write(`${JSON.stringify(CREATE)}\n`);
  for (let i = 0; i < 200 && !daemon.cards.events.includes('create-start'); i++) await new Promise((r) => setTimeout(r, 10));
  socket.destroy();
  for (let i = 0; i < 200 && daemon.cards.rolledBack === 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.is(daemon.cards.rolledBack, 1);
  // The server is still healthy.
  const lines = await exchange(daemon.socketPath, '{"op":"list"}\n');
  t.deepEqual(lines, [{ ok: true, result: [] }]);
});

test('create and destroy are serialised; list is answered meanwhile', async (t) => {
  const log: string[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const cards = new RecordingCardManager();
  const slowCreate = async (request: CreateRequest): Promise<CreateResult> => {
    inFlight += 1;
    maxInFlight = Math.max(maxInFlight, inFlight);
    log.push(`start ${request.name}`);
    await new Promise((resolve) => setTimeout(resolve, 400));
    log.push(`end ${request.name}`);
    inFlight -= 1;
    return { instance: 'ROOT\\SMARTCARDREADER\\0000', reader: 'r' };
  };
  cards.create = (request) => slowCreate(request);
  const server = await serverFor(t, { cards });
  const creates = ['A', 'B', 'C'].map((name) => exchange(server.socketPath, `${JSON.stringify({ ...CREATE, name })}\n`));
  await new Promise((resolve) => setTimeout(resolve, 50));
  const list = await exchange(server.socketPath, '{"op":"list"}\n');
  t.true(log.length < 6, 'list was answered while creates were still queued');
  t.deepEqual(list, [{ ok: true, result: [] }]);
  await Promise.all(creates);
  t.is(maxInFlight, 1);
  t.is(log.length, 6);
  for (let i = 0; i < 6; i += 2) t.is(log[i]!.replace('start', 'end'), log[i + 1]);
});

test('listen replaces a stale socket file but refuses a live one and a non-socket file', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-srv-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const socketPath = join(dir, 'run', 'control.sock');
  const first = new ControlServer({ socketPath, cards: new RecordingCardManager(), adminGroup: 'tpmvsc-test-none' });
  await first.listen();
  t.is((await lstat(socketPath)).mode & 0o777, 0o660);
  t.is((await lstat(join(dir, 'run'))).mode & 0o777, 0o755, 'no admin group: parent 0755');
  const second = new ControlServer({ socketPath, cards: new RecordingCardManager() });
  await t.throwsAsync(() => second.listen(), { message: /another daemon already listens/ });
  // A crashed daemon leaves its socket file behind.
  await first.close();
  makeStaleSocket(socketPath);
  t.true((await lstat(socketPath)).isSocket());
  const third = new ControlServer({ socketPath, cards: new RecordingCardManager() });
  await third.listen();
  t.teardown(() => third.close());
  t.deepEqual(await exchange(socketPath, '{"op":"list"}\n'), [{ ok: true, result: [] }]);

  const filePath = join(dir, 'plain', 'control.sock');
  await mkdir(join(dir, 'plain'));
  await writeFile(filePath, 'not a socket');
  await t.throwsAsync(() => new ControlServer({ socketPath: filePath, cards: new RecordingCardManager() }).listen(), { message: /is not a socket/ });
});
