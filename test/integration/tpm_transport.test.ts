/**
 * Transport robustness: misbehaving fake TPM servers on loopback give typed errors within the
 * timeout; RETRY resubmission; leftover flushing; reconnection after an swtpm restart or crash.
 */
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startSwtpm, startSwtpmProxy, startRecordedTpm } from '../helpers/swtpm.js';
import {
  HANDLE_RANGE, Tpm, TPM_ALG, TPM_CC, TPM_ECC, TpmError, TpmTransportError, eccKeyTemplate, openTransport, sealedDataTemplate,
} from '../../tpm/index.js';

/** A GetRandom(8) command. */
const GET_RANDOM = Buffer.from('80010000000c0000017b0008', 'hex');

/** A fake TPM: `behave` decides what happens when a complete command frame arrives. */
async function fakeTpm(behave: (socket: Socket, frame: Buffer) => void): Promise<{ tcti: string; server: Server; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const server = createServer((s) => {
    sockets.add(s);
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 9 && buf.length >= 9 + buf.readUInt32BE(5)) {
        const frame = buf;
        buf = Buffer.alloc(0);
        behave(s, frame);
      }
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as { port: number }).port;
  return {
    tcti: `swtpm:host=127.0.0.1,port=${port}`,
    server,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function framed(resp: Buffer, ack = 0): Buffer {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(resp.length, 0);
  const tail = Buffer.alloc(4);
  tail.writeUInt32BE(ack, 0);
  return Buffer.concat([head, resp, tail]);
}

const OK_RANDOM = Buffer.from('80010000001400000000000801020304050607 08'.replace(/ /g, ''), 'hex');

const cases: { name: string; behave: (s: Socket, f: Buffer) => void; want: TpmTransportError['code'] }[] = [
  { name: 'never answers', behave: () => undefined, want: 'TIMEOUT' },
  { name: 'truncated response then silence', behave: (s) => s.write(framed(OK_RANDOM).subarray(0, 12)), want: 'TIMEOUT' },
  { name: 'truncated response then close', behave: (s) => s.end(framed(OK_RANDOM).subarray(0, 12)), want: 'CLOSED' },
  { name: 'closes without answering', behave: (s) => s.destroy(), want: 'CLOSED' },
  { name: 'oversized length', behave: (s) => s.write(Buffer.from([0x00, 0x10, 0x00, 0x00, 1, 2, 3])), want: 'MALFORMED' },
  { name: 'garbage (HTTP)', behave: (s) => s.write('HTTP/1.1 400 Bad Request\r\n\r\n'), want: 'MALFORMED' },
  {
    name: 'header size disagrees with frame length',
    behave: (s) => {
      const r = Buffer.from(OK_RANDOM);
      r.writeUInt32BE(40, 2);
      s.write(framed(r));
    },
    want: 'MALFORMED',
  },
  { name: 'non-zero acknowledgement', behave: (s) => s.write(framed(OK_RANDOM, 1)), want: 'MALFORMED' },
  { name: 'bytes beyond the response', behave: (s) => s.write(Buffer.concat([framed(OK_RANDOM), Buffer.from([9, 9, 9])])), want: 'MALFORMED' },
  { name: 'response shorter than a header', behave: (s) => s.write(framed(Buffer.from([0x80, 1, 0, 0]))), want: 'MALFORMED' },
];

for (const c of cases) {
  test(`bad transport: ${c.name} -> ${c.want} within the timeout`, async (t) => {
    const fake = await fakeTpm(c.behave);
    t.teardown(() => fake.close());
    const transport = openTransport(fake.tcti);
    t.teardown(() => transport.close());
    const started = Date.now();
    const e = await t.throwsAsync(transport.transmit(GET_RANDOM, 1000), { instanceOf: TpmTransportError });
    t.is(e!.code, c.want);
    t.true(Date.now() - started < 3000);
  });
}

test('a good fake response passes the framing checks; the transport reconnects after a failure', async (t) => {
  let n = 0;
  const fake = await fakeTpm((s) => {
    if (n++ === 0) s.destroy();
    else s.write(framed(OK_RANDOM));
  });
  t.teardown(() => fake.close());
  const transport = openTransport(fake.tcti);
  t.teardown(() => transport.close());
  await t.throwsAsync(transport.transmit(GET_RANDOM, 1000), { instanceOf: TpmTransportError });
  const resp = await transport.transmit(GET_RANDOM, 1000);
  t.deepEqual(resp, OK_RANDOM);
  t.is(transport.connectionCount, 2);
});

test('Tpm on a dead port: OPEN_FAILED', async (t) => {
  const fake = await fakeTpm(() => undefined);
  const tcti = fake.tcti;
  await fake.close();
  const e = await t.throwsAsync(Tpm.open({ tcti }), { instanceOf: TpmTransportError });
  t.is(e!.code, 'OPEN_FAILED');
});

test('Tpm command on a silent TPM: TIMEOUT, then the next command works again', async (t) => {
  let silent = true;
  const fake = await fakeTpm((s) => {
    if (!silent) s.write(framed(OK_RANDOM));
  });
  t.teardown(() => fake.close());
  const tpm = await Tpm.open({ tcti: fake.tcti, timeoutMs: 300, flushLeftovers: false });
  t.teardown(() => tpm.close());
  const e = await t.throwsAsync(tpm.getRandom(8), { instanceOf: TpmTransportError });
  t.is(e!.code, 'TIMEOUT');
  silent = false;
  t.deepEqual(Buffer.from(await tpm.getRandom(8)), Buffer.from('0102030405060708', 'hex'));
});

test('TCTI parsing errors are typed; /dev/tpm0 is refused', (t) => {
  t.is(t.throws(() => openTransport('/dev/tpm0'), { instanceOf: TpmTransportError })!.code, 'NO_RESOURCE_MANAGER');
  t.is(t.throws(() => openTransport('device:/dev/tpm0'), { instanceOf: TpmTransportError })!.code, 'NO_RESOURCE_MANAGER');
  t.is(t.throws(() => openTransport('mssim:port=1'), { instanceOf: TpmTransportError })!.code, 'TCTI_SYNTAX');
  t.is(t.throws(() => openTransport('swtpm:port=99999'), { instanceOf: TpmTransportError })!.code, 'TCTI_SYNTAX');
  t.is(t.throws(() => openTransport('swtpm:host=10.0.0.1'), { instanceOf: TpmTransportError })!.code, 'TCTI_SYNTAX');
});

test('RETRY / TESTING / YIELDED are resubmitted (bounded)', async (t) => {
  const sw = await startSwtpm();
  t.teardown(() => sw.stop());
  const proxy = await startSwtpmProxy(sw);
  t.teardown(() => proxy.close());
  const warnings = [0x922, 0x90a, 0x908];
  let injected = 0;
  proxy.intercept = (cmd) => {
    if (cmd.readUInt32BE(6) !== TPM_CC.GetRandom || injected >= warnings.length) return undefined;
    const r = Buffer.from('80010000000a00000000', 'hex');
    r.writeUInt32BE(warnings[injected++]!, 6);
    return r;
  };
  const tpm = await Tpm.open({ tcti: proxy.tcti, maxRetries: 5 });
  t.teardown(() => tpm.close());
  t.is((await tpm.getRandom(16)).length, 16);
  t.is(injected, 3);
  t.is(proxy.exchanges.filter((x) => x.command.readUInt32BE(6) === TPM_CC.GetRandom).length, 4);

  proxy.intercept = (cmd) => (cmd.readUInt32BE(6) === TPM_CC.GetRandom ? Buffer.from('80010000000a00000922', 'hex') : undefined);
  const e = await t.throwsAsync(tpm.getRandom(16), { instanceOf: TpmError });
  t.is(e!.rcName, 'TPM_RC_RETRY');
});

test('leftover objects and sessions of a vanished client are flushed at connect', async (t) => {
  const sw = await startSwtpm();
  t.teardown(() => sw.stop());
  const transport = openTransport(sw.tcti);
  const crashed = await Tpm.open({ transport });
  const srk = await crashed.storageRoot();
  await crashed.load(srk, await crashed.create(srk, eccKeyTemplate(TPM_ECC.NIST_P256)));
  await crashed.create(srk, sealedDataTemplate(), { userAuth: Buffer.from('a'), data: Buffer.from('b') }); // opens a salted session
  await transport.close(); // the client "dies" without flushing

  const look = await Tpm.open({ tcti: sw.tcti, flushLeftovers: false });
  t.is((await look.getHandles(HANDLE_RANGE.TRANSIENT)).length, 2);
  t.is((await look.getHandles(HANDLE_RANGE.HMAC_SESSION)).length, 1);
  await look.close();

  const fresh = await Tpm.open({ tcti: sw.tcti });
  t.deepEqual(await fresh.getHandles(HANDLE_RANGE.TRANSIENT), []);
  t.deepEqual(await fresh.getHandles(HANDLE_RANGE.HMAC_SESSION), []);
  // all three object slots are usable again
  const s = await fresh.storageRoot();
  const a = await fresh.load(s, await fresh.create(s, eccKeyTemplate(TPM_ECC.NIST_P256)));
  const b = await fresh.load(s, await fresh.create(s, eccKeyTemplate(TPM_ECC.NIST_P256)));
  await fresh.flushContext(a.handle);
  await fresh.flushContext(b.handle);
  await fresh.close();
  t.deepEqual(await (async () => {
    const check = await Tpm.open({ tcti: sw.tcti, flushLeftovers: false });
    const h = await check.getHandles(HANDLE_RANGE.TRANSIENT);
    await check.close();
    return h;
  })(), [], 'close() flushes the SRK and sessions');
});

test('swtpm restart and crash: typed error or transparent reconnect; epoch increments; salted session restarts', async (t) => {
  const sw = await startSwtpm();
  t.teardown(() => sw.stop());
  const tpm = await Tpm.open({ tcti: sw.tcti, timeoutMs: 5000 });
  t.teardown(() => tpm.close());
  const pin = Buffer.from('1234');
  const srk = await tpm.storageRoot();
  const blob = await tpm.create(srk, sealedDataTemplate(), { userAuth: pin, data: Buffer.from('sealed') });
  const epoch0 = tpm.epoch;

  await sw.restart();
  // the first command after the restart may see the dead connection; afterwards it reconnects
  await tpm.getRandom(1).catch((e: unknown) => t.true(e instanceof TpmTransportError));
  const srk2 = await tpm.storageRoot();
  t.true(tpm.epoch > epoch0);
  t.deepEqual(Buffer.from(srk2.name), Buffer.from(srk.name), 'the SRK is deterministic');
  const obj = await tpm.load(srk2, blob);
  t.deepEqual(Buffer.from(await tpm.unseal(obj, { auth: pin })), Buffer.from('sealed'));
  await tpm.flushContext(obj.handle);

  await sw.kill9();
  const e = await t.throwsAsync(tpm.getRandom(1), { instanceOf: TpmTransportError });
  t.true(['OPEN_FAILED', 'CLOSED', 'IO'].includes(e!.code), e!.message);
  await sw.restart();
  await tpm.getRandom(1).catch(() => undefined);
  const sig = await tpm.sign(await tpm.load(await tpm.storageRoot(), await tpm.create(await tpm.storageRoot(), eccKeyTemplate(TPM_ECC.NIST_P256), { userAuth: pin })), Buffer.alloc(32), { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { auth: pin });
  t.is(sig.sigAlg, TPM_ALG.ECDSA);
});

test('a shared session the TPM forgot is replaced transparently', async (t) => {
  const { proxy, tpm } = await startRecordedTpm(t);
  const pin = Buffer.from('pin');
  const srk = await tpm.storageRoot();
  const sealed = await tpm.load(srk, await tpm.create(srk, sealedDataTemplate(), { userAuth: pin, data: Buffer.from('still here') }));
  const sessionsBefore = await tpm.getHandles(HANDLE_RANGE.HMAC_SESSION);
  t.is(sessionsBefore.length, 1);
  let injected = false;
  proxy.intercept = (cmd) => {
    if (injected || cmd.readUInt32BE(6) !== TPM_CC.Unseal) return undefined;
    injected = true;
    return Buffer.from('80010000000a00000918', 'hex'); // TPM_RC_REFERENCE_S0: session 0 unknown
  };
  t.deepEqual(Buffer.from(await tpm.unseal(sealed, { auth: pin })), Buffer.from('still here'));
  t.true(injected);
  const sessionsAfter = await tpm.getHandles(HANDLE_RANGE.HMAC_SESSION);
  t.is(sessionsAfter.length, 1, 'the stale session was flushed, one fresh session is open');
  await tpm.flushContext(sealed.handle);
});

test('device transport: a missing device is OPEN_FAILED; a file that never answers is TIMEOUT', async (t) => {
  const missing = openTransport('device:/dev/tpmrm97');
  const e = await t.throwsAsync(missing.transmit(GET_RANDOM, 500), { instanceOf: TpmTransportError });
  t.is(e!.code, 'OPEN_FAILED');
  await missing.close();
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-dev-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const silent = openTransport({ kind: 'device', path: join(dir, 'fake-tpmrm') });
  await writeFile(join(dir, 'fake-tpmrm'), '');
  const started = Date.now();
  const e2 = await t.throwsAsync(silent.transmit(GET_RANDOM, 300), { instanceOf: TpmTransportError });
  t.is(e2!.code, 'TIMEOUT');
  t.true(Date.now() - started < 2000);
  await silent.close();
});
