/**
 * The control socket of the real tpmvscd cannot be exhausted: idle connections from members of
 * the tpmvsc group (other uids, through setpriv) are held to the per-user and total limits while
 * root and other members keep being served, an outsider's connections are refused unread,
 * oversized request lines are refused whatever their chunking and cost the daemon no memory, and
 * a connection that sends no complete request in time is closed, while PROMPT secrets typed
 * slower than that still create a card. The daemon's open fds (/proc/PID/fd) stay bounded.
 *
 * The daemon runs in its own mount namespace whose /etc/group has a `tpmvsc` group at a free gid,
 * so nothing on the host changes; attackers and members get that gid through setpriv.
 */
import { execFileSync, spawn } from 'node:child_process';
import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createConnection, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import test from 'ava';
import { DEFAULT_CONTROL_LIMITS } from '../../daemon/control_connection_limits.js';
import { startControlFlood, type ControlFlood, type FloodReport } from '../helpers/control_flood.js';
import { projectProgram, REPO, runProgram, startStack, type CommandResult, type Stack } from '../helpers/stack.js';

const { maxConnections, maxConnectionsPerUser } = DEFAULT_CONTROL_LIMITS;
/** Refusals the server keeps open for a moment (control_server.ts), plus a few fds of slack. */
const LINGERING_REFUSALS = 32;
const SLACK = 6;

/** A uid or gid number that /etc/passwd (or /etc/group) does not know, from `from` up. */
function unusedId(database: 'passwd' | 'group', from: number, taken: Set<number> = new Set()): number {
  for (let id = from; id < from + 1000; id += 1) {
    if (taken.has(id)) continue;
    try {
      execFileSync('getent', [database, String(id)], { stdio: 'ignore' });
    } catch {
      return id;
    }
  }
  throw new Error(`no free ${database} id from ${from}`);
}

let stack: Stack;
let workDir: string | undefined;
let tpmvscGid: number;
const memberUids: number[] = [];

/** setpriv as `uid` with `gid` as its only group (the brief's unprivileged attacker, `nobody` or a numbered uid). */
function as(uid: number | string, gid: number | string): string[] {
  return ['setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--'];
}

function cliAs(uid: number | string, gid: number | string, args: string[]): Promise<CommandResult> {
  const [program, ...prefix] = as(uid, gid);
  return runProgram(program!, [...prefix, process.execPath, ...projectProgram('cli/main'), ...args], { env: { ...stack.env, TPMVSC_SOCKET: stack.socketPath } });
}

async function openFds(): Promise<number> {
  return (await readdir(`/proc/${stack.daemonPid}/fd`)).length;
}

async function residentKiB(): Promise<number> {
  const status = await readFile(`/proc/${stack.daemonPid}/status`, 'utf8');
  return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)![1]);
}

/** Polls until the daemon holds at most `limit` fds (+ 2 for a vpcd or TPM reconnect) once it closed the connections. */
async function fdsSettleTo(before: number, timeoutMs = 10_000): Promise<number> {
  const limit = before + 2;
  const start = Date.now();
  let count = await openFds();
  while (count > limit && Date.now() - start < timeoutMs) {
    await sleep(100);
    count = await openFds();
  }
  return count;
}

function refusedCount(report: FloodReport): number {
  return Object.values(report.answered).reduce((sum, n) => sum + n, 0) + report.failed;
}

async function restartDaemon(args: string[]): Promise<void> {
  await stack.stopDaemon();
  await stack.startDaemon(args);
}

test.before(async () => {
  tpmvscGid = unusedId('group', 61000);
  const taken = new Set<number>();
  for (let i = 0; i < 7; i += 1) {
    const uid = unusedId('passwd', 61000, taken);
    taken.add(uid);
    memberUids.push(uid);
  }
  workDir = await mkdtemp(join(tmpdir(), 'tpmvsc-limits-'));
  const groupFile = join(workDir, 'group');
  await writeFile(groupFile, `${await readFile('/etc/group', 'utf8')}tpmvsc:x:${tpmvscGid}:\n`);
  stack = await startStack({
    readers: 2,
    // /etc/group with the tpmvsc group, for the daemon's eyes only; the file can go once mounted.
    daemonPrefix: ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'mount --bind "$0" /etc/group && exec "$@"', groupFile],
  });
  // The stack's directory is 0700: let other uids reach the socket (whose own mode then decides).
  await chmod(dirname(stack.socketPath), 0o711);
  const created = await stack.cli(['create', '/quiet', '/name', 'Owner', '/AdminKey', 'DEFAULT']);
  if (created.code !== 0) throw new Error(created.stderr);
  await restartDaemon(['--control-request-timeout', '300']);
});

test.after.always(async () => {
  await stack?.stop();
  if (workDir) await rm(workDir, { recursive: true, force: true });
});

test.serial('the socket belongs to the tpmvsc group of the daemon and a member is served', async (t) => {
  const { stdout } = await runProgram('stat', ['-c', '%a %g', stack.socketPath]);
  t.is(stdout.trim(), `660 ${tpmvscGid}`);
  const listed = await cliAs(memberUids[0]!, tpmvscGid, ['list']);
  t.is(listed.code, 0, listed.stderr);
  t.regex(listed.stdout, /Owner/);
});

test.serial('one member holding idle connections is stopped at the per-user limit; root and other members are served', async (t) => {
  const before = await openFds();
  const flood = await startControlFlood({ socketPath: stack.socketPath, connections: 200, as: as('nobody', tpmvscGid) });
  t.teardown(() => flood.stop());
  t.log('flood of 200 as nobody:', JSON.stringify(flood.report), `daemon fds ${before} before`);
  t.is(flood.report.open, maxConnectionsPerUser, 'the daemon holds exactly the per-user limit');
  t.is(refusedCount(flood.report), 200 - maxConnectionsPerUser);
  t.true((flood.report.answered.TOO_MANY_CONNECTIONS ?? 0) >= 1, JSON.stringify(flood.report));
  const during = await openFds();
  t.log(`daemon fds during the flood: ${during}`);
  t.true(during <= before + maxConnectionsPerUser + LINGERING_REFUSALS + SLACK, `${during} fds`);

  const byRoot = await stack.cli(['list']);
  t.is(byRoot.code, 0, byRoot.stderr);
  t.regex(byRoot.stdout, /Owner/);
  const byMember = await cliAs(memberUids[0]!, tpmvscGid, ['list']);
  t.is(byMember.code, 0, byMember.stderr);
  t.regex(byMember.stdout, /Owner/);
  const byFlooder = await cliAs('nobody', tpmvscGid, ['list']);
  t.is(byFlooder.code, 1);
  t.is(
    byFlooder.stderr,
    `tpmvscmgr: tpmvscd has too many open control connections: ${maxConnectionsPerUser} from this user (--max-control-connections-per-user); try again when they have finished\n`,
  );

  await flood.stop();
  const after = await fdsSettleTo(before);
  t.true(after <= before + 2, `fds back to ${after} (from ${before})`);
  t.is((await cliAs('nobody', tpmvscGid, ['list'])).code, 0, 'the flooder is served again once its connections are gone');
});

test.serial('members together are stopped at the total; root is still served', async (t) => {
  const before = await openFds();
  const floods: ControlFlood[] = [];
  t.teardown(() => Promise.all(floods.map((flood) => flood.stop())).then(() => undefined));
  const flooders = memberUids.slice(1, 6);
  for (const uid of flooders) floods.push(await startControlFlood({ socketPath: stack.socketPath, connections: 20, as: as(uid, tpmvscGid) }));
  const open = floods.reduce((sum, flood) => sum + flood.report.open, 0);
  t.log('5 members x 20:', floods.map((flood) => JSON.stringify(flood.report)).join(' '));
  t.is(open, maxConnections, 'the daemon holds exactly the total limit');
  const during = await openFds();
  t.log(`daemon fds: ${before} before, ${during} during`);
  t.true(during <= before + maxConnections + LINGERING_REFUSALS + SLACK, `${during} fds`);

  const byRoot = await stack.cli(['list']);
  t.is(byRoot.code, 0, byRoot.stderr);
  t.regex(byRoot.stdout, /Owner/);
  const byAnother = await cliAs(memberUids[6]!, tpmvscGid, ['list']);
  t.is(byAnother.code, 1);
  t.regex(byAnother.stderr, new RegExp(`^tpmvscmgr: tpmvscd has too many open control connections: ${maxConnections} from all users \\(--max-control-connections\\)`));

  await Promise.all(floods.map((flood) => flood.stop()));
  t.true((await fdsSettleTo(before)) <= before + 2);
  t.is((await cliAs(memberUids[6]!, tpmvscGid, ['list'])).code, 0);
});

test.serial("an outsider's connections are refused without being read, even with the socket file opened to all", async (t) => {
  await chmod(stack.socketPath, 0o666);
  t.teardown(() => chmod(stack.socketPath, 0o660));
  const before = await openFds();
  const flood = await startControlFlood({ socketPath: stack.socketPath, connections: 200, as: as('nobody', 'nogroup') });
  t.teardown(() => flood.stop());
  t.log('flood of 200 as nobody:nogroup:', JSON.stringify(flood.report));
  t.is(flood.report.open, 0, 'no connection of an outsider is held');
  t.true((flood.report.answered.NOT_PERMITTED ?? 0) >= 1);
  t.deepEqual(Object.keys(flood.report.answered).filter((code) => code !== 'NOT_PERMITTED' && code !== 'TOO_MANY_CONNECTIONS'), []);
  const during = await openFds();
  t.true(during <= before + maxConnectionsPerUser + LINGERING_REFUSALS + SLACK, `${during} fds`);
  const outsider = await cliAs('nobody', 'nogroup', ['list']);
  t.is(outsider.code, 3);
  t.is((await stack.cli(['list'])).code, 0);
  await flood.stop();
  t.true((await fdsSettleTo(before)) <= before + 2);
});

/** Connects as root (an authorized caller), writes `chunks` with `gapMs` between them, returns the answer and how much was written by then. */
async function sendRaw(chunks: Iterable<Buffer | string>, gapMs = 0): Promise<{ answer: Record<string, unknown> | undefined; writtenBeforeAnswer: number }> {
  const socket: Socket = createConnection({ path: stack.socketPath });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve());
    socket.once('error', reject);
  });
  socket.on('error', () => undefined);
  let received = '';
  let written = 0;
  let writtenBeforeAnswer = -1;
  const answered = new Promise<void>((resolve) => {
    socket.setEncoding('utf8').on('data', (chunk: string) => {
      received += chunk;
      if (received.includes('\n')) {
        if (writtenBeforeAnswer < 0) writtenBeforeAnswer = written;
        resolve();
      }
    });
    socket.once('close', () => resolve());
  });
  for (const chunk of chunks) {
    if (writtenBeforeAnswer >= 0 || socket.destroyed) break;
    socket.write(chunk);
    written += chunk.length;
    if (gapMs > 0) await sleep(gapMs);
  }
  await answered;
  socket.destroy();
  const line = received.split('\n')[0];
  return { answer: line ? (JSON.parse(line) as Record<string, unknown>) : undefined, writtenBeforeAnswer };
}

const TOO_LONG = { ok: false, error: { code: 'BAD_REQUEST', message: 'Invalid request: the request line is longer than 16384 bytes' } };

test.serial('an oversized line is refused whether its newline comes in the same chunk or never', async (t) => {
  // A valid list request padded past the limit, newline included, in one write (one read on the daemon's side).
  const padded = `{"op":"list"${' '.repeat(20_000)}}\n`;
  t.deepEqual((await sendRaw([padded])).answer, TOO_LONG);
  // The same request within the limit is answered.
  const fits = await sendRaw([`{"op":"list"${' '.repeat(16_000)}}\n`]);
  t.like(fits.answer, { ok: true });
  // 1 KiB at a time, no newline ever: refused once past the limit, not when the client stops.
  function* kibibytes(): Generator<string> {
    yield '{"op":"list","x":"';
    for (let i = 0; i < 4096; i += 1) yield 'a'.repeat(1024);
  }
  const split = await sendRaw(kibibytes(), 5);
  t.deepEqual(split.answer, TOO_LONG);
  t.log(`split line refused after the client wrote ${split.writtenBeforeAnswer} bytes`);
  t.true(split.writtenBeforeAnswer > 16_384 && split.writtenBeforeAnswer < 1024 * 1024, String(split.writtenBeforeAnswer));
});

test.serial('oversized lines cost the daemon no memory', async (t) => {
  const line = Buffer.alloc(8 * 1024 * 1024, 'a');
  line[line.length - 1] = 0x0a;
  // Warm up once (first-use allocations), then measure.
  await sendRaw([line]);
  const before = await residentKiB();
  const answers = await Promise.all(Array.from({ length: 16 }, () => sendRaw([line])));
  for (const { answer } of answers) t.deepEqual(answer, TOO_LONG);
  await sleep(500);
  const after = await residentKiB();
  t.log(`daemon RSS ${before} KiB before, ${after} KiB after 16 lines of 8 MiB`);
  // Buffering them would take 128 MiB; a few read buffers in flight is all they may cost.
  t.true(after - before < 32 * 1024, `${after - before} KiB more`);
  t.is((await stack.cli(['list'])).code, 0);
});

test.serial('a connection without a complete request is closed at the timeout, trickling bytes or not; slow PROMPT secrets still create', async (t) => {
  await restartDaemon(['--control-request-timeout', '2']);
  t.teardown(() => restartDaemon(['--control-request-timeout', '300']));
  const before = await openFds();
  const timedOut = { ok: false, error: { code: 'BAD_REQUEST', message: 'Invalid request: no complete request line within 2 s of connecting' } };
  const idleStart = Date.now();
  t.deepEqual((await sendRaw([])).answer, timedOut);
  const idleMs = Date.now() - idleStart;
  // One byte every 200 ms for 20 s: the deadline counts from connect(), activity does not extend it.
  const trickleStart = Date.now();
  const trickle = await sendRaw('{"op":"list"'.padEnd(100, ' '), 200);
  const trickleMs = Date.now() - trickleStart;
  t.deepEqual(trickle.answer, timedOut);
  t.log(`idle connection closed after ${idleMs} ms, trickling one after ${trickleMs} ms (${trickle.writtenBeforeAnswer} bytes)`);
  t.true(trickle.writtenBeforeAnswer < 100, 'cut before the trickle ended');
  t.true((await fdsSettleTo(before)) <= before + 2);

  // tpmvscmgr reads every PROMPT secret before it connects: typing slower than the timeout is fine.
  const child = spawn(process.execPath, [...projectProgram('cli/main'), 'create', '/name', 'Slow', '/AdminKey', 'PROMPT', '/PIN', 'PROMPT'], {
    cwd: REPO,
    env: { ...stack.env, TPMVSC_SOCKET: stack.socketPath },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
  await sleep(3000);
  child.stdin.write('0102030405060708010203040506070801020304050607AA\n');
  await sleep(3000);
  child.stdin.end('Slow#Pin\n');
  t.is(await exited, 0, output);
  t.regex(output, /ROOT\\SMARTCARDREADER\\0001/);
  const destroyed = await stack.cli(['destroy', '/quiet', '/instance', 'ROOT\\SMARTCARDREADER\\0001']);
  t.is(destroyed.code, 0, destroyed.stderr);
});
