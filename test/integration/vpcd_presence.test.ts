/**
 * Presence is proven, not assumed, and the link is bounded, through the real stack (swtpm,
 * pcscd + the stock vpcd driver, tpmvscd, tpmvscmgr):
 *   - a connection vpcd does not serve (it serves another connection on the same port and
 *     keeps ours in its accept queue) is reported in `status` and the log, and `create` into
 *     such a reader fails with one line naming the cause, leaving nothing behind;
 *   - a fake vpcd listener (root, standing for an impostor that got through) flooding the
 *     daemon, quickly and slowly, leaves it alive with flat memory, and the card is back
 *     within 2 s of the real pcscd's return.
 */
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import test from 'ava';

import { encodeFrame, FrameReader } from '../../daemon/frame_reader.js';
import { defaultAtr } from '../../applet/piv_applet.js';
import { TEST_ATR } from '../helpers/echo_card.js';
import { startStack, type Stack } from '../helpers/stack.js';
import { vaultTpmObjects } from '../helpers/vault_tpm_objects.js';

const CREATE = ['create', '/name', 'Card', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/generate'];

/**
 * Another card in a reader slot, connected to vpcd before ours: answers GET ATR, so vpcd keeps
 * serving it (and keeps the daemon's connection waiting in its accept queue).
 */
async function squat(port: number): Promise<{ served: Promise<void>; leave: () => void }> {
  const socket = net.connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  const reader = new FrameReader();
  let markServed!: () => void;
  const served = new Promise<void>((resolve) => (markServed = resolve));
  socket.on('data', (chunk: Buffer) => {
    reader.push(chunk);
    for (let frame = reader.next(); frame; frame = reader.next()) {
      if (frame.length === 1 && frame[0] === 0x04) {
        socket.write(encodeFrame(TEST_ATR));
        markServed();
      } else if (frame.length > 1) socket.write(encodeFrame(Uint8Array.of(0x6d, 0x00)));
    }
  });
  await new Promise((resolve) => socket.once('connect', resolve));
  return { served, leave: () => socket.destroy() };
}

interface StatusJson {
  cards: Array<{ instance: string; connected: boolean; link: { state: string; since: string; problem: string | null } }>;
}

async function cardStatus(stack: Stack): Promise<StatusJson['cards'][number] | undefined> {
  const { stdout } = await stack.cli(['status', '--json']);
  return (JSON.parse(stdout) as StatusJson).cards[0];
}

async function waitFor<T>(probe: () => Promise<T | undefined>, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`${what} not within ${timeoutMs} ms`);
    await sleep(50);
  }
}

test.serial('create into a reader vpcd does not serve fails in one line and leaves nothing; the slot is free again', async (t) => {
  const stack = await startStack({ readers: 2 });
  t.teardown(() => stack.stop());
  const squatter = await squat(stack.pcscd.port(0));
  t.teardown(() => squatter.leave());
  await squatter.served;

  const failed = await stack.cli(CREATE);
  t.is(failed.code, 1, failed.stderr);
  const lastLine = failed.stderr.trim().split('\n').at(-1)!;
  t.regex(lastLine, /^tpmvscmgr: The new card did not appear in its reader; nothing was kept: reader ".* 00 00" \(vpcd port \d+\): connected, not served by vpcd/);
  t.log(lastLine);
  t.deepEqual(JSON.parse((await stack.cli(['list', '--json'])).stdout), { cards: [] });
  t.deepEqual(readdirOrEmpty(join(stack.stateDir, 'cards')), [], 'no card file');
  await stack.stopDaemon();
  t.deepEqual(await vaultTpmObjects(stack), [], 'no TPM object');
  await stack.startDaemon();

  squatter.leave();
  const created = await stack.cli(CREATE);
  t.is(created.code, 0, created.stderr);
  t.is(created.stdout.trim().split('\n').at(-1), 'ROOT\\SMARTCARDREADER\\0000', 'the same slot, free again');
});

function readdirOrEmpty(path: string): string[] {
  try {
    return readdirSync(path);
  } catch {
    return [];
  }
}

test.serial('a card whose connection vpcd does not serve shows "connected, not served by vpcd" in status and the log, then comes back', async (t) => {
  const stack = await startStack({ readers: 2 });
  t.teardown(() => stack.stop());
  t.is((await stack.cli(CREATE)).code, 0);
  await stack.stopDaemon();
  const squatter = await squat(stack.pcscd.port(0));
  t.teardown(() => squatter.leave());
  await squatter.served;
  const logStart = stack.daemonLog().length;
  // The squatter holds the reader: the card cannot be in it, so do not wait for that.
  await stack.startDaemon([], { waitForCards: false });

  const unserved = await waitFor(async () => {
    const card = await cardStatus(stack);
    return card?.link.state === 'unserved' ? card : undefined;
  }, 8000, 'the unserved state');
  t.like(unserved, { connected: false, link: { state: 'unserved' } });
  t.regex(unserved.link.problem ?? '', /not served by vpcd/);
  const human = await stack.cli(['status']);
  t.regex(human.stdout, /reader: +TPM Virtual Smart Card 0 00 00 \(.*not served by vpcd.*, since \S+\)/);
  t.log(human.stdout.split('\n')[2]);
  await sleep(3000);
  const log = stack.daemonLog().slice(logStart);
  t.is(log.match(/"event":"unserved"/g)?.length, 1, `one log line however many retries:\n${log}`);

  squatter.leave();
  const back = await waitFor(async () => {
    const card = await cardStatus(stack);
    return card?.connected ? card : undefined;
  }, 5000, 'the card back in its reader');
  t.like(back, { link: { state: 'present', problem: null } });
  t.regex(stack.daemonLog().slice(logStart), /"event":"served"/);
});

/** The daemon's resident memory, in MB. */
function rssMb(pid: number): number {
  const kb = Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
  return kb / 1024;
}

/**
 * Listens on the reader's port in pcscd's place and floods every connection the daemon makes:
 * 'quick' writes GET ATR frames as fast as the socket takes them, 'slow' one 1 KB command
 * every 5 ms, never reading a reply, 'partial' trickles the bytes of one 64 KB frame.
 */
async function impostor(port: number, mode: 'quick' | 'slow' | 'partial'): Promise<{ connections: () => number; stop: () => Promise<void> }> {
  const sockets = new Set<net.Socket>();
  let connections = 0;
  const quick = Buffer.concat(Array.from({ length: 20_000 }, () => Buffer.from('000104', 'hex')));
  const slow = encodeFrame(Buffer.concat([Buffer.from('00cb3fff', 'hex'), Buffer.alloc(1020, 0x5c)]));
  const server = net.createServer((socket) => {
    connections++;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    const timers: NodeJS.Timeout[] = [];
    socket.on('close', () => timers.forEach(clearInterval));
    if (mode === 'quick') {
      const pump = () => {
        while (!socket.destroyed && socket.write(quick));
      };
      socket.on('drain', pump);
      pump();
    } else if (mode === 'slow') {
      timers.push(setInterval(() => socket.write(slow), 5));
    } else {
      socket.write(Buffer.from('ffff', 'hex'));
      timers.push(setInterval(() => socket.write(Buffer.alloc(64, 0x41)), 2));
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve());
  });
  return {
    connections: () => connections,
    stop: async () => {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

test.serial('a fake vpcd flooding the daemon, quickly and slowly: alive, memory flat, card back within 2 s of pcscd', async (t) => {
  const stack = await startStack({ readers: 2 });
  t.teardown(() => stack.stop());
  t.is((await stack.cli(CREATE)).code, 0);
  const pid = stack.daemonPid;
  await stack.pcscd.stopPcscd();
  await sleep(500);
  const before = rssMb(pid);
  let peak = before;
  for (const mode of ['quick', 'slow', 'partial'] as const) {
    const fake = await impostor(stack.pcscd.port(0), mode);
    const end = Date.now() + 3000;
    while (Date.now() < end) {
      peak = Math.max(peak, rssMb(pid));
      await sleep(100);
    }
    t.log(`${mode}: ${fake.connections()} connections, daemon RSS ${before.toFixed(0)} -> peak ${peak.toFixed(0)} MB`);
    t.true(fake.connections() >= 1);
    await fake.stop();
  }
  t.is((await stack.cli(['list', '--json'])).code, 0, 'the daemon still answers');
  const after = rssMb(pid);
  t.log(`daemon RSS before ${before.toFixed(1)} MB, peak ${peak.toFixed(1)} MB, after ${after.toFixed(1)} MB`);
  // Node's heap and buffer pools move by a few MB with garbage collection; a queue that grows
  // with the flood moved 270 MB in 2 s. 32 MB leaves room for the first and none for the second.
  t.true(peak - before < 32, `peak ${peak.toFixed(1)} MB against ${before.toFixed(1)} MB`);

  await stack.pcscd.startPcscd();
  const started = Date.now();
  const atr = Buffer.from(defaultAtr()).toString('hex');
  let printed = '';
  while (Date.now() - started < 5000) {
    printed = (await stack.run('opensc-tool', ['-r', '0', '-a'])).stdout.trim().replaceAll(':', '').toLowerCase();
    if (printed === atr) break;
    await sleep(50);
  }
  const elapsed = Date.now() - started;
  t.log(`card back ${elapsed} ms after pcscd`);
  t.is(printed, atr);
  t.true(elapsed < 2000, `card back after ${elapsed} ms`);
});
