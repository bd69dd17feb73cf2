/**
 * The vpcd guard (daemon/vpcd_guard.ts) against the attacks of issue #12, run for real, each in
 * a private network namespace so the nftables rules stay there: swtpm, pcscd + vpcd (own mount
 * namespace), tpmvscd as root, the card owner logging in and signing with pyscard, and an
 * attacker running as nobody (setpriv) on every local address (127.0.0.1, other 127/8 addresses,
 * 0.0.0.0, an extra interface's address). The attack scenarios themselves are in
 * test/helpers/vpcd_attack_scenario.ts; the attacker in test/helpers/vpcd_attacker.py.
 *
 * The same attacker against a daemon started with --allow-unprotected-vpcd takes a free reader,
 * reads the owner's PIN and is vpcd to the daemon: the attacks are real and the checks can fail.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { EXIT } from '../../common/errors.js';
import { runDaemonOnce } from '../helpers/daemon_run.js';
import { AS_NOBODY, EXTRA_ADDRESS, NAMESPACE_SETUP, startNetworkNamespace, type NetworkNamespace } from '../helpers/netns.js';
import { projectProgram, REPO, runProgram, type CommandResult } from '../helpers/stack.js';
import { startSwtpm } from '../helpers/swtpm.js';
import type { AttackReport, OwnerReport } from '../helpers/vpcd_attack_scenario.js';

const NOBODY = 65534;
const NOGROUP = 65534;
/** A second unprivileged uid with no account: neither root nor the daemon's user. */
const STRANGER = ['setpriv', '--reuid=1234', '--regid=1234', '--clear-groups', '--'];
const ADDRESSES = ['127.0.0.1', '127.0.0.2', '127.77.1.9', '0.0.0.0', EXTRA_ADDRESS];
const ATTACKER = join(REPO, 'test/helpers/vpcd_attacker.py');
const NFT = '/usr/sbin/nft';

type Reports = Map<string, Record<string, unknown>>;

/** Runs one scenario of vpcd_attack_scenario.ts in a fresh network namespace; its REPORT lines by step. */
async function runScenario(name: string): Promise<{ reports: Reports; output: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-attack-'));
  try {
    const child = spawn('unshare', ['--net', '--', 'sh', '-c', `${NAMESPACE_SETUP} && exec "$@"`, 'sh',
      process.execPath, ...projectProgram('test/helpers/vpcd_attack_scenario'), name], {
      cwd: REPO,
      env: { ...process.env, TPMVSC_SCENARIO_DIR: dir },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    const reports: Reports = new Map();
    for (const line of output.split('\n')) {
      if (!line.startsWith('REPORT ')) continue;
      const parsed = JSON.parse(line.slice('REPORT '.length)) as { step: string } & Record<string, unknown>;
      reports.set(parsed.step, parsed);
    }
    if (code !== 0) throw new Error(`scenario ${name} exited with ${String(code)}:\n${output.slice(-4000)}`);
    return { reports, output };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Every connect of the attacker was refused at once (ECONNREFUSED), on every address and port, many times. */
function assertAllRefused(t: ExecutionContext, attacker: AttackReport, ports: number[], what: string): void {
  t.deepEqual(attacker.connected, [], `${what}: the attacker connected`);
  t.deepEqual(attacker.verify, [], `${what}: the attacker got a VERIFY`);
  t.is(attacker.frames, 0, `${what}: the attacker got vpcd frames`);
  for (const address of ADDRESSES) {
    for (const port of ports) {
      const outcome = attacker.attempts?.[`${address}:${port}`] ?? {};
      t.deepEqual(Object.keys(outcome), ['ECONNREFUSED'], `${what}: ${address}:${port} ${JSON.stringify(outcome)}`);
      t.true((outcome.ECONNREFUSED ?? 0) >= 3, `${what}: ${address}:${port} tried`);
    }
  }
}

function assertOwnerSigned(t: ExecutionContext, owner: OwnerReport, what: string): void {
  t.is(owner.verify, '9000', `${what}: owner login ${JSON.stringify(owner)}`);
  t.is(owner.sign, '9000', `${what}: owner signature ${JSON.stringify(owner)}`);
  t.true(owner.signatureValid, `${what}: the signature verifies with the card's public key`);
}

test('guarded: no hijack of an inserted card, no free reader taken before create, no port taken while the daemon restarts, nobody is vpcd while pcscd is down; the owner logs in and signs throughout', async (t) => {
  t.timeout(300_000);
  const { reports } = await runScenario('guarded');
  const step = (name: string) => reports.get(name) ?? t.fail(`no report for ${name}`);
  const setup = step('setup') as { ports: number[]; guardLog: string | null; table: boolean };
  t.true(setup.table, 'the daemon installed the table');
  t.regex(setup.guardLog ?? '', /vpcd guard: table inet tpmvsc_vpcd_\d+_\d+ lets only root connect/);
  const [port0, port1] = setup.ports as [number, number];

  // The attacker can reach a root listener outside the reader ports on every address.
  const reach = (step('reachability') as { attacker: AttackReport }).attacker;
  for (const address of ADDRESSES) t.true(reach.connected?.some((key) => key.startsWith(`${address}:`)), `nobody reaches ${address}`);

  assertOwnerSigned(t, (step('baseline') as { owner: OwnerReport }).owner, 'baseline');

  const hijack = step('hijack') as { knock: AttackReport; owner: OwnerReport; attacker: AttackReport };
  t.true(hijack.knock.error !== undefined || hijack.knock.answer !== undefined, `the 1-byte APDU went through pcscd: ${JSON.stringify(hijack.knock)}`);
  assertAllRefused(t, hijack.attacker, [port0], 'hijack');
  assertOwnerSigned(t, hijack.owner, 'hijack');

  const free = step('freeReader') as { create: { code: number; instance: string }; owner: OwnerReport; attacker: AttackReport };
  t.is(free.create.code, 0);
  t.is(free.create.instance, 'ROOT\\SMARTCARDREADER\\0001');
  assertAllRefused(t, free.attacker, [port1], 'free reader');
  assertOwnerSigned(t, free.owner, 'free reader');

  const restart = step('restart') as { tableAfterStop: boolean; tableAfterKill: boolean; owners: OwnerReport[]; attacker: AttackReport };
  t.true(restart.tableAfterStop, 'the table stays after SIGTERM');
  t.true(restart.tableAfterKill, 'the table stays after SIGKILL');
  assertAllRefused(t, restart.attacker, [port0, port1], 'restart');
  for (const owner of restart.owners) assertOwnerSigned(t, owner, 'after restarts');

  const impersonate = step('impersonate') as { attacker: AttackReport; owners: OwnerReport[] };
  t.deepEqual(impersonate.attacker.bound, { [`0.0.0.0:${port0}`]: 'listening', [`:::${port1}`]: 'listening' }, 'the attacker could listen (ports >= 1024)');
  t.deepEqual(impersonate.attacker.accepted, [], 'the daemon never completed a connection to the attacker');
  t.deepEqual(impersonate.attacker.received, []);
  for (const owner of impersonate.owners) assertOwnerSigned(t, owner, 'after pcscd came back');

  const pcscdRestart = step('pcscdRestart') as { restartMs: number; owner: OwnerReport };
  assertOwnerSigned(t, pcscdRestart.owner, 'after a pcscd restart');
  t.log(`card back ${pcscdRestart.owner.waitedMs} ms after pcscd's ports were listening again (restart took ${pcscdRestart.restartMs} ms)`);
  t.true((pcscdRestart.owner.waitedMs ?? Infinity) < 2000, 'the card is back within 2 s of pcscd');
});

test('unguarded (--allow-unprotected-vpcd): the same attacker takes a free reader, reads the owner\'s PIN and is vpcd to the daemon', async (t) => {
  t.timeout(300_000);
  const { reports } = await runScenario('unguarded');
  const setup = reports.get('setup') as { warning: string | null; table: boolean };
  t.false(setup.table, 'no guard table');
  t.regex(setup.warning ?? '', /WARNING: --allow-unprotected-vpcd: tpmvscd does NOT guard the vpcd reader ports/);

  const free = (reports.get('freeReader') as { attacker: AttackReport }).attacker;
  t.true((free.connected?.length ?? 0) > 0, 'the attacker connected to a free reader port');
  t.true((free.frames ?? 0) > 0, 'and vpcd talked to it as to a card');

  const hijack = reports.get('hijack') as { owner: OwnerReport; attacker: AttackReport };
  t.deepEqual(hijack.attacker.verify?.map((entry) => entry.data), [Buffer.from('12345678').toString('hex')], 'the attacker read the owner\'s PIN');
  t.not(hijack.owner.signatureValid, true, 'the owner got no real signature');

  const impersonate = (reports.get('impersonate') as { attacker: AttackReport }).attacker;
  t.true((impersonate.accepted?.length ?? 0) > 0, 'the daemon connected to the attacker');
  t.true(impersonate.received?.some((entry) => entry.sent.startsWith('00a40400') && entry.answer.endsWith('9000')), 'and its card answered the attacker');
});

/** tpmvscd started with these arguments (TPM on a port where none answers: a daemon past the guard stops at the TPM, exit 5). */
function daemonArgs(dir: string, pool: string[]): string[] {
  return [...projectProgram('daemon/main'), '--tcti', 'swtpm:host=127.0.0.1,port=1', '--state-dir', join(dir, 'state'), '--socket', join(dir, 'control.sock'), ...pool];
}

async function daemonIn(netns: NetworkNamespace, user: string[], dir: string, pool: string[]): Promise<CommandResult> {
  return netns.run(user[0] ?? process.execPath, [...user.slice(1), ...(user.length ? [process.execPath] : []), ...daemonArgs(dir, pool)], { timeoutMs: 60_000 });
}

/**
 * A directory the daemon may keep its record in (root's, 0755, which every user can read), with
 * a state directory nobody owns.
 */
async function recordDirectory(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-guard-'));
  await chmod(dir, 0o755);
  await mkdir(join(dir, 'state'), { mode: 0o700 });
  await chown(join(dir, 'state'), NOBODY, NOGROUP);
  return dir;
}

const POOL = ['--vpcd', '127.0.0.1:470', '--readers', '2'];

/** A private network namespace and a record directory, both removed when the test ends. */
async function guardNamespace(t: ExecutionContext): Promise<{ netns: NetworkNamespace; dir: string }> {
  const netns = await startNetworkNamespace();
  const dir = await recordDirectory();
  t.teardown(async () => {
    await netns.stop();
    await rm(dir, { recursive: true, force: true });
  });
  return { netns, dir };
}

/** `tpmvscd guard-vpcd --daemon-user nobody` as root in the namespace, its record in `dir`. */
function guardVpcd(netns: NetworkNamespace, dir: string, pool: string[], socket = 'control.sock'): Promise<CommandResult> {
  return netns.run(process.execPath, [...projectProgram('daemon/main'), 'guard-vpcd', '--daemon-user', 'nobody', '--socket', join(dir, socket), ...pool]);
}

test('a daemon that cannot establish the guard brings no card up: exit 12, one line naming the fix (as nobody without root\'s record; as root without CAP_NET_ADMIN)', async (t) => {
  const { netns, dir } = await guardNamespace(t);

  const asNobody = await daemonIn(netns, AS_NOBODY, dir, POOL);
  t.is(asNobody.code, EXIT.vpcdUnguarded, asNobody.stderr);
  t.is(asNobody.stderr.trim().split('\n').length, 1, asNobody.stderr);
  t.regex(asNobody.stderr, new RegExp(`^tpmvscd: The vpcd reader ports are not guarded against other local users: no guard record ${dir}/vpcd-guard-470-471.json: ` +
    `run "tpmvscd guard-vpcd --daemon-user 65534 --vpcd 127.0.0.1:470 --readers 2 --socket ${dir}/control.sock" as root`));
  t.regex(asNobody.stderr, /--allow-unprotected-vpcd/);

  const withoutNetAdmin = await daemonIn(netns, ['setpriv', '--bounding-set=-net_admin', '--inh-caps=-net_admin', '--'], dir, POOL);
  t.is(withoutNetAdmin.code, EXIT.vpcdUnguarded, withoutNetAdmin.stderr);
  t.is(withoutNetAdmin.stderr.trim().split('\n').length, 1, withoutNetAdmin.stderr);
  t.regex(withoutNetAdmin.stderr, /nft could not install the table inet tpmvsc_vpcd_470_471: .*(Operation not permitted|permission).*CAP_NET_ADMIN/i);
  t.is((await netns.run(NFT, ['list', 'tables'])).stdout, '', 'no table');
});

test('--allow-unprotected-vpcd (or TPMVSC_ALLOW_UNPROTECTED_VPCD=1): a daemon that cannot guard the ports starts, with a warning at every start', async (t) => {
  const swtpm = await startSwtpm();
  t.teardown(() => swtpm.stop());
  for (const run of [{ args: ['--allow-unprotected-vpcd'], env: process.env }, { args: [], env: { ...process.env, TPMVSC_ALLOW_UNPROTECTED_VPCD: '1' } }]) {
    const result = await runDaemonOnce({ tcti: swtpm.tcti, args: run.args, env: run.env, runAs: { uid: NOBODY, gid: NOGROUP } });
    t.true(result.ready, result.log);
    t.regex(result.log, /tpmvscd: WARNING: --allow-unprotected-vpcd: tpmvscd does NOT guard the vpcd reader ports \d+-\d+\. .*read the PIN/);
  }
});

test('guard-vpcd (the unit\'s root ExecStartPre) lets the daemon start as another user; a forged, mismatched, stale or foreign record is refused', async (t) => {
  const { netns, dir } = await guardNamespace(t);
  const guard = (pool: string[] = POOL) => guardVpcd(netns, dir, pool);
  const record = join(dir, 'vpcd-guard-470-471.json');

  const installed = await guard();
  t.is(installed.code, 0, installed.stderr);
  t.regex(installed.stdout, new RegExp(`lets only root and uid 65534 connect to ports 470-471 .*; record ${record}`));

  // Past the guard, the daemon stops at the TPM (none here): exit 5, not 12.
  const accepted = await daemonIn(netns, AS_NOBODY, dir, POOL);
  t.regex(accepted.stderr, /vpcd guard: table inet tpmvsc_vpcd_470_471, installed by root for ports 470-471, lets this daemon's uid 65534 through/);
  t.is(accepted.code, EXIT.tpm, accepted.stderr);

  const refusedWith = async (user: string[], pool: string[], want: RegExp): Promise<void> => {
    const result = await daemonIn(netns, user, dir, pool);
    t.is(result.code, EXIT.vpcdUnguarded, result.stderr);
    t.regex(result.stderr, want);
  };
  await refusedWith(AS_NOBODY, ['--vpcd', '127.0.0.1:470', '--readers', '4'], /no guard record .*vpcd-guard-470-473\.json/);
  await refusedWith(STRANGER, POOL, /does not let uid 1234 through/);

  const genuine = await readFile(record, 'utf8');
  // The daemon's user cannot make a root-owned file: a record it wrote itself is refused.
  await chown(record, NOBODY, NOGROUP);
  await refusedWith(AS_NOBODY, POOL, /was not written by root/);
  await chown(record, 0, 0);
  await writeFile(record, genuine.replace(/"ports":\[470,471\]/, '"ports":[470,473]'));
  await refusedWith(AS_NOBODY, POOL, /does not guard ports 470-471/);
  const otherId = (text: string) => text.replace(/"bootId":"[^"]+"/, '"bootId":"00000000-0000-0000-0000-000000000000"');
  const bootTime = Number(/"bootTime":(\d+)/.exec(genuine)?.[1]);
  await writeFile(record, otherId(genuine).replace(/"bootTime":\d+/, `"bootTime":${bootTime - 60}`));
  await refusedWith(AS_NOBODY, POOL, /is from an earlier boot/);
  await writeFile(record, otherId(genuine).replace(/,"bootTime":\d+/, ''));
  await refusedWith(AS_NOBODY, POOL, /is from an earlier boot/);
  // A unit with ProtectKernelTunables= inside a container sees the host's boot id beneath the
  // container's: the same kernel boot time is the same boot.
  await writeFile(record, otherId(genuine));
  const sameKernelBoot = await daemonIn(netns, AS_NOBODY, dir, POOL);
  t.is(sameKernelBoot.code, EXIT.tpm, `another boot id with this boot time is accepted: ${sameKernelBoot.stderr}`);
  await writeFile(record, genuine);
  await chmod(dir, 0o777);
  await refusedWith(AS_NOBODY, POOL, /can be written by group or others/);
  await chmod(dir, 0o755);
  // The record holds in the namespace it was written in only: outside it, the rules are not there.
  const outside = await runProgram(AS_NOBODY[0]!, [...AS_NOBODY.slice(1), process.execPath, ...daemonArgs(dir, POOL)]);
  t.is(outside.code, EXIT.vpcdUnguarded, outside.stderr);
  t.regex(outside.stderr, /was written in another network namespace/);
  t.is((await daemonIn(netns, AS_NOBODY, dir, POOL)).code, EXIT.tpm, 'the genuine record is accepted again');
});

/** The attacker in connect mode as `user` for `ms`, against the reader ports on every address. */
async function connectAs(netns: NetworkNamespace, user: string[], ports: string, ms = 800): Promise<AttackReport> {
  const command = [...user, '/usr/bin/python3', ATTACKER, 'connect', ADDRESSES.join(','), ports];
  const child = netns.spawn(command[0]!, command.slice(1));
  const output = await armed(child);
  await new Promise((resolve) => setTimeout(resolve, ms));
  child.stdin!.end();
  await new Promise((resolve) => child.once('exit', resolve));
  return JSON.parse(output.text.trim().split('\n').at(-1)!) as AttackReport;
}

/** Collects the attacker's stdout; resolves once it says "started" (python and setpriv start slowly on a busy machine). */
async function armed(child: ChildProcess): Promise<{ text: string }> {
  const output = { text: '' };
  child.stdout!.on('data', (chunk: Buffer) => (output.text += chunk.toString()));
  const deadline = Date.now() + 30_000;
  while (!output.text.startsWith('started') && Date.now() < deadline && child.exitCode === null) await new Promise((resolve) => setTimeout(resolve, 20));
  return output;
}

const ROOT_LISTENER = 'import socket, threading\n' +
  'def serve(port):\n  s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", port)); s.listen(8)\n' +
  '  while True:\n    c, _ = s.accept(); c.close()\n' +
  'for port in (470, 471): threading.Thread(target=serve, args=(port,), daemon=True).start()\nprint("listening", flush=True)\nthreading.Event().wait()\n';

const ROOT_CONNECT = 'import socket\ns = socket.socket(); s.settimeout(3)\ntry:\n  s.connect(("127.0.0.1", 470)); print("connected")\nexcept socket.timeout: print("timeout")\nexcept OSError as e: print(e.errno)\n';

test('the rules, measured: only root and the daemon\'s user connect, on every local address; a non-root listener never completes a handshake (also below 1024 with ip_unprivileged_port_start=0); tables of two pools coexist; re-installing is idempotent; a range in the ephemeral range is reserved', async (t) => {
  const { netns, dir } = await guardNamespace(t);
  const guard = (pool: string[], socket = 'control.sock') => guardVpcd(netns, dir, pool, socket);
  t.is((await guard(POOL)).code, 0);

  // vpcd stands-in: root listening on 0.0.0.0, ports 470 and 471.
  const listener = netns.spawn('/usr/bin/python3', ['-c', ROOT_LISTENER]);
  t.teardown(() => void listener.kill('SIGKILL'));
  await new Promise<void>((resolve) => listener.stdout!.once('data', () => resolve()));
  const daemonUser = await connectAs(netns, AS_NOBODY, '470,471');
  t.is(daemonUser.connected?.length, ADDRESSES.length * 2, `the daemon's user connects everywhere: ${JSON.stringify(daemonUser.attempts)}`);
  const stranger = await connectAs(netns, STRANGER, '470,471');
  t.deepEqual(stranger.connected, [], `another user connects nowhere: ${JSON.stringify(stranger.attempts)}`);
  t.true(Object.values(stranger.attempts ?? {}).every((outcome) => Object.keys(outcome).join() === 'ECONNREFUSED'));
  const root = await connectAs(netns, [], '470,471');
  t.is(root.connected?.length, ADDRESSES.length * 2, 'root (pcscd, a root daemon) connects everywhere');
  listener.kill('SIGKILL');
  await new Promise((resolve) => listener.once('exit', resolve));

  // A listener of another user on a reader port (a container's ip_unprivileged_port_start=0).
  const listenAs = async (): Promise<{ attacker: AttackReport; rootConnect: string }> => {
    const attacker = netns.spawn(STRANGER[0]!, [...STRANGER.slice(1), '/usr/bin/python3', ATTACKER, 'listen', '0.0.0.0:470']);
    const output = await armed(attacker);
    const rootConnect = (await netns.run('/usr/bin/python3', ['-c', ROOT_CONNECT])).stdout.trim();
    attacker.stdin!.end();
    await new Promise((resolve) => attacker.once('exit', resolve));
    return { attacker: JSON.parse(output.text.trim().split('\n').at(-1)!) as AttackReport, rootConnect };
  };
  t.is((await netns.run('sh', ['-c', 'echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start'])).code, 0);
  const lowered = await listenAs();
  t.deepEqual(lowered.attacker.bound, { '0.0.0.0:470': 'listening' }, 'with the sysctl at 0 anyone may bind port 470');
  t.is(lowered.rootConnect, 'timeout', 'but its SYN-ACK never leaves: the connect does not complete');
  t.deepEqual(lowered.attacker.accepted, []);
  t.is((await netns.run('sh', ['-c', 'echo 1024 > /proc/sys/net/ipv4/ip_unprivileged_port_start'])).code, 0);
  const privileged = await listenAs();
  t.deepEqual(privileged.attacker.bound, { '0.0.0.0:470': 'EACCES' }, 'below 1024 only root may listen');

  // Idempotent, and one table per pool.
  const before = (await netns.run(NFT, ['list', 'table', 'inet', 'tpmvsc_vpcd_470_471'])).stdout;
  t.is((await guard(POOL)).code, 0);
  const second = await guard(['--vpcd', '127.0.0.1:480', '--readers', '3'], 'second.sock');
  t.is(second.code, 0, second.stderr);
  t.regex(second.stdout, /ports 480-483/, 'a pool of 3 readers guards its whole last block');
  const tables = (await netns.run(NFT, ['list', 'tables'])).stdout.trim().split('\n');
  t.deepEqual(tables, ['table inet tpmvsc_vpcd_470_471', 'table inet tpmvsc_vpcd_480_483']);
  t.is((await netns.run(NFT, ['list', 'table', 'inet', 'tpmvsc_vpcd_470_471'])).stdout, before, 'the first pool\'s rules are untouched');

  // vpcd's own 35963 is in the ephemeral range: reserved, so no unprivileged client gets it as its source port.
  const ephemeral = await guard(['--vpcd', '127.0.0.1:35963', '--readers', '2'], 'third.sock');
  t.regex(ephemeral.stdout, /reserved from the ephemeral range/);
  t.is((await netns.run('cat', ['/proc/sys/net/ipv4/ip_local_reserved_ports'])).stdout.trim(), '35963-35964');
});
