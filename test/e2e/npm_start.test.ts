/**
 * The README's first command, as a new user runs it: `npm start` with HOME set to an empty
 * directory (no ~/.npmrc, no npm cache, no ~/.local/share/tpmvsc) and no route to the internet
 * (a network namespace of its own with only lo up; pcscd in a private mount namespace). It
 * must reach "Card ready", answer yubico-piv-tool, stop everything on Ctrl-C and come back on
 * a restart; both times are printed (speed goals live in bench/, not in assertions). The
 * daemon's vpcd guard (nftables) stays in that namespace: a connect there as nobody is refused.
 *
 * Offline also means native builds: node-gyp downloads Node's headers unless told where they
 * are, which a fresh HOME does not say. The second test rebuilds pcsclite in such a namespace
 * through scripts/setup.sh (which must point node-gyp at this node's own headers), and shows
 * that the same rebuild without it fails there.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guardTableName, readerPortRange } from '../../daemon/vpcd_guard.js';
import { DEFAULT_BASE_PORT } from '../../daemon/reader_config.js';
import { EXIT } from '../../common/errors.js';
import { REPO, runProgram, type CommandResult } from '../helpers/stack.js';

const AS_NOBODY = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--'];

/** What a fresh login shell has: no npm_* (an outer `npm test` exports its config), no TPMVSC_*. */
function freshEnvironment(home: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { HOME: home, PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' };
  if (process.env.TERM) env.TERM = process.env.TERM;
  return env;
}

/** bash in a new network namespace (lo up, nothing else) and a private /run/pcscd. */
function offlineShell(script: string, env: NodeJS.ProcessEnv, cwd: string): ChildProcess {
  return spawn(
    'unshare',
    ['--net', '--mount', '--propagation', 'private', 'bash', '-c',
      `ip link set lo up && mkdir -p /run/pcscd && mount -t tmpfs tpmvsc-start /run/pcscd && ${script}`],
    // Its own process group: Ctrl-C goes to the group, as a terminal sends it.
    { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true },
  );
}

interface StartRun {
  shell: ChildProcess;
  output: () => string;
  readyAfterMs: number;
  /** npm's exit: code 0, or SIGINT (npm ends itself with the signal its script got). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

async function npmStart(home: string): Promise<StartRun> {
  const began = performance.now();
  const shell = offlineShell('exec npm start', freshEnvironment(home), REPO);
  let output = '';
  shell.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  shell.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => shell.once('exit', (code, signal) => resolve({ code, signal })));
  const deadline = Date.now() + 240_000;
  while (!output.includes('Ctrl-C stops everything') && Date.now() < deadline && shell.exitCode === null) {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return { shell, output: () => output, readyAfterMs: performance.now() - began, exited };
}

/** Processes whose command line mentions `text` (what npm start started under the test's HOME). */
async function processesMentioning(text: string): Promise<string[]> {
  const found: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    const commandLine = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (commandLine.includes(text)) found.push(`${entry} ${commandLine.replace(/\0/g, ' ')}`);
  }
  return found;
}

/**
 * After a failed assertion: Ctrl-C as a user would, then SIGKILL, then whatever npm start had
 * started under this HOME (its children have process groups of their own).
 */
async function stopAfterFailure(run: StartRun, home: string): Promise<void> {
  if (run.shell.exitCode === null && run.shell.signalCode === null) {
    process.kill(-run.shell.pid!, 'SIGINT');
    const stopped = await Promise.race([run.exited.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 30_000))]);
    if (!stopped) process.kill(-run.shell.pid!, 'SIGKILL');
  }
  for (const line of await processesMentioning(home)) process.kill(Number(line.split(' ')[0]), 'SIGKILL');
}

test.serial("the README's npm start, offline with an empty HOME: Card ready, Ctrl-C stops everything, a restart comes back", async (t) => {
  t.timeout(600_000);
  if (!existsSync(join(REPO, 'dist/scripts/start.js'))) {
    t.fail('dist/ is missing: npm test builds it first (tsc -b)');
    return;
  }
  const home = await mkdtemp(join(tmpdir(), 'tpmvsc-home-'));
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const readme = await readFile(join(REPO, 'README.md'), 'utf8');

  const times: string[] = [];
  for (const which of ['first start', 'restart']) {
    const run = await npmStart(home);
    t.teardown(() => stopAfterFailure(run, home));
    const output = run.output();
    t.true(output.includes('Card ready: ROOT\\SMARTCARDREADER\\0000'), `${which}:\n${output}`);
    t.true(output.includes('software TPM'), 'no /dev/tpmrm0 here: the embedded swtpm is used');
    t.regex(output, /tpmvscd: vpcd guard: table inet tpmvsc_vpcd_/, 'the daemon guarded its reader ports');
    if (which === 'first start') {
      // The demo card has the well-known secrets: npm start says so next to them, and warns as create does.
      t.regex(output, /well-known defaults: every local account can reach the card/);
      t.regex(output, /^warning: \/AdminKey DEFAULT .*use \/AdminKey RANDOM or PROMPT$/m);
    }

    // The guard is in place in npm start's network namespace: another user's connect is refused.
    const inNamespace = ['nsenter', `--net=/proc/${run.shell.pid}/ns/net`, '--'];
    const table = await runProgram(inNamespace[0]!, [...inNamespace.slice(1), '/usr/sbin/nft', 'list', 'table', ...guardTableName(readerPortRange(DEFAULT_BASE_PORT, 2)).split(' ')]);
    t.is(table.code, 0, table.stderr);
    const probe = `import socket\ns = socket.socket()\ntry:\n  s.connect(("127.0.0.1", ${DEFAULT_BASE_PORT})); print("connected")\nexcept OSError as e: print(e.errno)`;
    const asNobody = await runProgram(inNamespace[0]!, [...inNamespace.slice(1), ...AS_NOBODY, '/usr/bin/python3', '-c', probe]);
    t.is(asNobody.stdout.trim(), '111', `a connect as nobody is refused (ECONNREFUSED): ${asNobody.stdout}${asNobody.stderr}`);
    times.push(`${which} ${(run.readyAfterMs / 1000).toFixed(1)} s`);
    t.log(`${which}: Card ready after ${(run.readyAfterMs / 1000).toFixed(1)} s${/Ready after .*/.exec(output)?.[0] ? ` (${/Ready after .*/.exec(output)![0]})` : ''}`);

    // The data directory is the README's, under the empty HOME; the command printed to inspect
    // the card is the one the README gives.
    const dataDir = join(home, '.local/share/tpmvsc');
    const printed = /TPMVSC_SOCKET=(\S+) node \S+dist\/cli\/main\.js (\w+)/.exec(output);
    const documented = /TPMVSC_SOCKET=(\S+) node dist\/cli\/main\.js (\w+)/.exec(readme);
    t.truthy(printed, 'npm start prints how to run tpmvscmgr');
    t.truthy(documented, 'the README says how to run tpmvscmgr');
    t.is(printed?.[1], join(dataDir, 'control.sock'));
    t.is(documented?.[1], '~/.local/share/tpmvsc/control.sock');
    t.is(printed?.[2], documented?.[2], 'npm start and the README name the same tpmvscmgr command');

    // The card answers a real client, through the namespace's pcscd.
    const env = { ...process.env, PCSCLITE_CSOCK_NAME: `/proc/${run.shell.pid}/root/run/pcscd/pcscd.comm` };
    const status = await runProgram('yubico-piv-tool', ['-r', 'TPM Virtual Smart Card', '-a', 'status'], { env });
    t.is(status.code, 0, status.stderr);
    t.regex(status.stdout, /PIN tries left:\s+5/);

    // Ctrl-C, as a terminal sends it: to the whole foreground process group.
    process.kill(-run.shell.pid!, 'SIGINT');
    const exit = await run.exited;
    t.true(exit.code === 0 || exit.signal === 'SIGINT', `npm start ended with ${JSON.stringify(exit)}:\n${run.output()}`);
    const lastLine = run.output().trim().split('\n').at(-1);
    t.is(lastLine, `npm start: Ctrl-C: stopped tpmvscd, pcscd and swtpm (started by npm start); its TPM and cards stay in ${dataDir}`);
    t.regex(run.output(), /tpmvscd: SIGTERM: stopping/, 'the daemon was stopped by npm start, not by the terminal');
    t.deepEqual(await processesMentioning(home), [], 'nothing npm start started is left running');
  }
  t.log(`npm start, offline, fresh HOME (printed, not asserted): ${times.join(', ')}`);
});

/** A copy of the project's install with pcsclite's native build removed, as --ignore-scripts leaves it. */
async function projectWithoutNativeBuild(dir: string): Promise<void> {
  await mkdir(join(dir, 'scripts'));
  for (const file of ['package.json', 'package-lock.json', 'scripts/setup.sh', 'scripts/native_build_env.sh']) {
    await cp(join(REPO, file), join(dir, file), { preserveTimestamps: true });
  }
  await cp(join(REPO, 'node_modules'), join(dir, 'node_modules'), { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
  await rm(join(dir, 'node_modules/pcsclite/build'), { recursive: true, force: true });
}

function runOffline(script: string, env: NodeJS.ProcessEnv, cwd: string): Promise<CommandResult> {
  return new Promise((resolve) => {
    const shell = offlineShell(script, env, cwd);
    let stdout = '';
    let stderr = '';
    shell.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    shell.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => process.kill(-shell.pid!, 'SIGKILL'), 300_000);
    shell.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, stdout, stderr });
    });
  });
}

test.serial('offline with an empty HOME, setup.sh builds pcsclite against the installed Node headers; without them node-gyp goes online and fails', async (t) => {
  t.timeout(600_000);
  const work = await mkdtemp(join(tmpdir(), 'tpmvsc-native-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const home = join(work, 'home');
  const controlHome = join(work, 'control-home');
  const project = join(work, 'project');
  for (const dir of [home, controlHome, project]) await mkdir(dir);
  await projectWithoutNativeBuild(project);
  const env = freshEnvironment(home);

  // The control: node-gyp as npm runs it with a fresh HOME, without setup.sh's setting.
  const online = await runOffline('npm rebuild pcsclite 2>&1', freshEnvironment(controlHome), project);
  t.not(online.code, 0, 'node-gyp needed the network for the headers');
  t.regex(online.stdout, /nodejs\.org|ENETUNREACH|EAI_AGAIN|getaddrinfo|headers/i, online.stdout);
  t.false(existsSync(join(project, 'node_modules/pcsclite/build/Release/pcsclite.node')));

  const setup = await runOffline('bash scripts/setup.sh 2>&1', env, project);
  t.is(setup.code, 0, setup.stdout);
  t.true(existsSync(join(project, 'node_modules/pcsclite/build/Release/pcsclite.node')), 'pcsclite was built');
  t.false(existsSync(join(home, '.cache/node-gyp')), 'no headers were downloaded into the fresh HOME');
  // The module it built loads in this node.
  const load = await runProgram(process.execPath, ['-e', "require('pcsclite'); console.log('loaded')"], { cwd: project });
  t.is(load.stdout.trim(), 'loaded', load.stderr);
});

test('npm start as another user than root stops at once with one line naming the fix', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'tpmvsc-start-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const result = await runProgram(AS_NOBODY[0]!, [...AS_NOBODY.slice(1), process.execPath, 'dist/scripts/start.js'], {
    env: { ...process.env, TPMVSC_START_DIR: dataDir, TPMVSC_TCTI: '' },
  });
  t.not(result.code, EXIT.ok);
  t.is(result.stderr.trim().split('\n').length, 1, result.stderr);
  t.regex(result.stderr, /^npm start: only root can guard the vpcd reader ports .*sudo npm start.*TPMVSC_ALLOW_UNPROTECTED_VPCD=1/);
  t.is(result.stdout, '', 'nothing was started');
});
