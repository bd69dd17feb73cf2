/**
 * `npm start`: a working virtual smart card on this machine in one command.
 *
 * - TPM: /dev/tpmrm0 when this user can use it, else a private swtpm whose state
 *   lives under the user's data directory (so the demo card survives restarts).
 *   TPMVSC_TCTI overrides the choice.
 * - pcscd: when none runs, starts one (without --auto-exit) with the project's readers; when
 *   one runs, uses the readers that `tpmvscd register-readers` installed (or the stock vpcd reader).
 * - tpmvscd on both, a demo card when there is none, copy-paste commands to use it. The
 *   daemon guards the reader ports (daemon/vpcd_guard.ts), which takes root: as another user
 *   npm start stops with one line naming the fix, unless TPMVSC_ALLOW_UNPROTECTED_VPCD=1.
 * Runs until Ctrl-C, then stops what it started (and only that) and says so in one line.
 *
 * Speed (a restart should reach "Card ready" within 5 s): swtpm and pcscd start side by side,
 * the daemon as soon as the TPM answers, and the control requests go from this process (no
 * tpmvscmgr process per request). When it takes longer, it prints where the time went,
 * including scripts/start.sh's setup and build (TPMVSC_START_STEPS).
 * Children run in their own process groups: a terminal's Ctrl-C reaches only this process,
 * which stops the daemon first, then pcscd, then swtpm (after TPM2_Shutdown).
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { access, constants, mkdir, readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startSwtpmProcess } from '../tpm/swtpm_process.js';
import { registerReaders, readerName, DEFAULT_BASE_PORT, DEFAULT_FRIENDLY_NAME, VPCD_DEFAULT_PORT, type ReaderNaming } from '../daemon/reader_config.js';
import { callDaemon } from '../cli/control_client.js';
import { DEFAULT_ADMIN_KEY_HEX } from '../cli/admin_key.js';
import { DEFAULT_PIN, DEFAULT_PIN_POLICY, DEFAULT_PUK } from '../common/pin_rules.js';
import { START_READERS, startDirectory } from '../common/start_directory.js';
import type { CardSummary } from '../common/control_protocol.js';
import { openPcsc } from '../common/pcsc_client.js';
import { wellKnownSecretWarnings } from '../cli/well_known_secret_warnings.js';
import { parseReaders, parseVpcdAddress, parseYesNo } from '../daemon/config.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PCSCD_SOCKET = '/run/pcscd/pcscd.comm';
/** "Card ready" within this long when the card exists (a restart), or when it is created (a first start). */
const RESTART_GOAL_MS = 5_000;
const FIRST_START_GOAL_MS = 30_000;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

/**
 * How long ago the `npm start` process above this one began (npm's own start-up is part of
 * what a user waits for), from /proc: undefined when not started by npm.
 */
async function msSinceNpmBegan(): Promise<number | undefined> {
  const USER_HZ = 100; // the unit of /proc/PID/stat's start time on Linux
  try {
    const uptimeSeconds = Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
    let pid = process.ppid;
    for (let depth = 0; depth < 4 && pid > 1; depth++) {
      // pid (comm) state ppid ... field 22: start time in ticks since boot
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (/^npm\b/.test((await readFile(`/proc/${pid}/comm`, 'utf8')).trim())) {
        return (uptimeSeconds - Number(fields[19]) / USER_HZ) * 1000;
      }
      pid = Number(fields[1]);
    }
  } catch {
    // no /proc, or an ancestor ended: nothing to add
  }
  return undefined;
}

/** Named durations, printed when the start missed its goal. */
class StepTimes {
  private readonly steps: Array<[string, number]> = [];

  /** Steps timed before this process (scripts/start.sh: "setup=412,build=1650"). */
  constructor(earlier: string | undefined) {
    for (const entry of (earlier ?? '').split(',')) {
      const match = /^(\w+)=(\d+)$/.exec(entry);
      if (match) this.steps.push([match[1]!, Number(match[2])]);
    }
  }

  add(name: string, ms: number): void {
    this.steps.push([name, ms]);
  }

  async time<T>(name: string, step: () => Promise<T>): Promise<T> {
    const began = performance.now();
    try {
      return await step();
    } finally {
      this.steps.push([name, performance.now() - began]);
    }
  }

  /** Everything before this process: npm's start-up when known, else setup and build. */
  async total(sinceHereMs: number): Promise<number> {
    const beforeHere = this.steps.filter(([name]) => name === 'setup' || name === 'build').reduce((sum, [, ms]) => sum + ms, 0);
    const sinceNpm = await msSinceNpmBegan();
    if (sinceNpm === undefined) return beforeHere + sinceHereMs;
    const npmMs = sinceNpm - sinceHereMs - beforeHere;
    if (npmMs > 0) this.steps.unshift(['npm', npmMs]);
    return sinceNpm;
  }

  describe(): string {
    return this.steps.map(([name, ms]) => `${name} ${(ms / 1000).toFixed(1)} s`).join(', ') + ' (swtpm and pcscd start side by side)';
  }
}

/** The order of stopping: the daemon leaves its readers and the TPM first, swtpm goes last. */
const STOP_ORDER = ['tpmvscd', 'pcscd', 'swtpm'] as const;
type StartedName = (typeof STOP_ORDER)[number];

/** What this run started; once stopping began, a late start is stopped at once. */
class StartedProcesses {
  private readonly entries: Array<{ name: StartedName; stop: () => Promise<void> }> = [];
  private stopping = false;

  async add(name: StartedName, stop: () => Promise<void>): Promise<void> {
    if (this.stopping) return stop().catch(() => undefined);
    this.entries.push({ name, stop });
  }

  /** Stops everything, in STOP_ORDER; returns the names of what was stopped. */
  async stopAll(): Promise<string[]> {
    this.stopping = true;
    const names: string[] = [];
    this.entries.sort((a, b) => STOP_ORDER.indexOf(a.name) - STOP_ORDER.indexOf(b.name));
    for (const entry of this.entries) {
      await entry.stop().catch(() => undefined);
      names.push(entry.name);
    }
    return names;
  }
}

/** SIGTERM to a child of ours, and wait for its exit. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await exited;
}

const SIGNAL_LABELS: Record<'SIGINT' | 'SIGTERM' | 'SIGHUP', string> = { SIGINT: 'Ctrl-C', SIGTERM: 'SIGTERM', SIGHUP: 'terminal closed (SIGHUP)' };

const englishList = (items: string[]): string => (items.length < 2 ? items.join('') : `${items.slice(0, -1).join(', ')} and ${items.at(-1)!}`);

function reachable(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function accessible(path: string, mode: number): Promise<boolean> {
  try {
    await access(path, mode);
    return true;
  } catch {
    return false;
  }
}

interface Readers {
  basePort: number;
  count: number;
  friendlyName: string;
  naming: ReaderNaming;
}

/** Readers of a pcscd that already runs: ours if register-readers installed them, else the stock vpcd pair. */
async function installedReaders(): Promise<Readers> {
  try {
    const config = await readFile('/etc/reader.conf.d/tpmvsc', 'utf8');
    const ports = [...config.matchAll(/DEVICENAME\s+\/dev\/null:(\d+)/g)].map((match) => Number(match[1]));
    // register-readers writes "NAME <block>" (numbered), or NAME alone with --reader-naming plain.
    const friendly = /FRIENDLYNAME\s+"(.*)"/.exec(config)?.[1] ?? `${DEFAULT_FRIENDLY_NAME} 0`;
    const numbered = /^(.*) \d+$/.exec(friendly);
    if (ports.length > 0) {
      const count = ports.length * 2;
      const basePort = Math.min(...ports);
      return numbered ? { basePort, count, friendlyName: numbered[1]!, naming: 'numbered' } : { basePort, count, friendlyName: friendly, naming: 'plain' };
    }
  } catch {
    // not installed: fall through to the stock reader
  }
  // vsmartcard-vpcd's own /etc/reader.conf.d/vpcd: FRIENDLYNAME "Virtual PCD", no block number.
  return { basePort: VPCD_DEFAULT_PORT, count: 2, friendlyName: 'Virtual PCD', naming: 'plain' };
}

function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${String(pattern)}:\n${seen}`)), timeoutMs);
    const onData = (chunk: Buffer): void => {
      seen += chunk.toString();
      process.stderr.write(chunk);
      if (pattern.test(seen)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stderr?.on('data', onData);
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited with ${String(code)}:\n${seen}`));
    });
  });
}

/** The TPM: /dev/tpmrm0 when usable, else a private swtpm. Returns the TCTI. */
async function startTpm(dataDir: string, started: StartedProcesses): Promise<string> {
  if (process.env.TPMVSC_TCTI) return process.env.TPMVSC_TCTI;
  if (await accessible('/dev/tpmrm0', constants.R_OK | constants.W_OK)) {
    say('TPM: /dev/tpmrm0');
    return 'device:/dev/tpmrm0';
  }
  const stateDir = join(dataDir, 'swtpm');
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const swtpm = await startSwtpmProcess({ stateDir, ownProcessGroup: true });
  await started.add('swtpm', () => swtpm.stop());
  say(`TPM: no /dev/tpmrm0 here, so a software TPM (swtpm, state in ${stateDir}) on 127.0.0.1:${swtpm.port}`);
  return swtpm.tcti;
}

/** A program on the PATH, or in /usr/sbin and /sbin (pcscd's place, not on every user's PATH). */
async function findProgram(name: string): Promise<string> {
  for (const dir of [...(process.env.PATH ?? '').split(':').filter(Boolean), '/usr/sbin', '/sbin']) {
    if (await accessible(join(dir, name), constants.X_OK)) return join(dir, name);
  }
  throw new Error(`${name} is not installed (not on the PATH, nor in /usr/sbin): bash scripts/setup.sh installs it`);
}

/** spawn() that resolves once the child runs and rejects when it cannot start (no crash on 'error'). */
function spawnChild(program: string, args: string[], options: SpawnOptions): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, options);
    child.once('spawn', () => resolve(child));
    child.on('error', (error) => reject(new Error(`${program} could not start: ${error.message}`)));
  });
}

/** Starts pcscd with the readers chosen by main(); resolves once its socket answers. */
async function startPcscd(dataDir: string, readers: Readers, started: StartedProcesses): Promise<void> {
  const confDir = join(dataDir, 'reader.conf.d');
  await registerReaders({
    confDir,
    driverDir: join(dataDir, 'drivers'),
    readers: readers.count,
    basePort: readers.basePort,
    friendlyName: readers.friendlyName,
  });
  const pcscd = await spawnChild(await findProgram('pcscd'), ['--foreground', '--config', confDir], { stdio: ['ignore', 'ignore', 'pipe'], detached: true });
  await started.add('pcscd', () => stopChild(pcscd));
  for (let i = 0; i < 200 && !(await reachable(PCSCD_SOCKET)); i++) {
    if (pcscd.exitCode !== null) throw new Error(`pcscd exited with ${String(pcscd.exitCode)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
  say(`pcscd: started with ${readers.count} readers "${readerName(0, readers.friendlyName)}" ...`);
}

/** "Card ready" means a PC/SC client can use the card now: pcscd shows it in its reader. */
async function waitForCardInReader(reader: string, timeoutMs: number): Promise<void> {
  const pcsc = openPcsc();
  try {
    await pcsc.waitForReader(reader, timeoutMs);
    await pcsc.waitForCard(reader, true, timeoutMs);
  } finally {
    pcsc.close();
  }
}

async function main(): Promise<void> {
  // The daemon refuses to bring cards up on unguarded reader ports, and only root can guard them:
  // say so before starting anything.
  // The daemon's own parsers: npm start reads its variables exactly as tpmvscd does.
  const allowText = process.env.TPMVSC_ALLOW_UNPROTECTED_VPCD;
  const allowUnprotected = parseYesNo(allowText ? { value: allowText, source: 'TPMVSC_ALLOW_UNPROTECTED_VPCD' } : undefined);
  if (process.getuid?.() !== 0 && !allowUnprotected) {
    throw new Error('only root can guard the vpcd reader ports against other local users (README, "Who can reach a card"): ' +
      'run `sudo npm start`, or set TPMVSC_ALLOW_UNPROTECTED_VPCD=1 if you keep them off those ports another way');
  }
  const times = new StepTimes(process.env.TPMVSC_START_STEPS);
  times.add('node start-up', performance.now()); // performance.now() counts from this process's start
  const dataDir = startDirectory();
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const started = new StartedProcesses();
  let pcscdKept = false;

  // Ctrl-C (also a second one), SIGTERM or a closed terminal: stop what was started, in order.
  const interrupted = new Promise<keyof typeof SIGNAL_LABELS>((resolve) => {
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => resolve(signal));
  });
  // Whatever fails unexpectedly, what was started (in process groups of their own) is stopped.
  process.on('uncaughtException', (error) => {
    process.stderr.write(`npm start: ${error.message}\n`);
    void finish('failed', 1);
  });
  const finish = async (how: string, exitCode: number): Promise<never> => {
    const stopped = await started.stopAll();
    const kept = pcscdKept ? '; the pcscd that was already running keeps running' : '';
    const what = stopped.length > 0 ? `stopped ${englishList(stopped)} (started by npm start)` : 'nothing to stop';
    say(`npm start: ${how}: ${what}${kept}; its TPM and cards stay in ${dataDir}`);
    process.exit(exitCode);
  };

  const run = async (): Promise<ChildProcess> => {
    // 1. The readers: those of a pcscd that runs, else the ones of the pcscd started here.
    let readers: Readers;
    const pcscdRuns = await reachable(PCSCD_SOCKET);
    if (pcscdRuns) {
      pcscdKept = true;
      readers = await installedReaders();
      say(`pcscd: already running; using readers "${readerName(0, readers.friendlyName, readers.naming)}" ... on port ${readers.basePort}`);
    } else {
      if (process.getuid?.() !== 0) {
        throw new Error('pcscd is not running and only root can start it: run `sudo npm start`, or start pcscd');
      }
      // TPMVSC_VPCD (host:port, as for tpmvscd) moves the readers off the default ports (470...);
      // TPMVSC_READERS (as for tpmvscd) sets how many.
      const { TPMVSC_VPCD: vpcd, TPMVSC_READERS: readerCount } = process.env;
      const port = vpcd ? parseVpcdAddress(vpcd, 'TPMVSC_VPCD').port : DEFAULT_BASE_PORT;
      const count = readerCount ? parseReaders(readerCount, 'TPMVSC_READERS') : START_READERS;
      readers = { basePort: port, count, friendlyName: DEFAULT_FRIENDLY_NAME, naming: 'numbered' };
    }

    // 2. The TPM and pcscd side by side; the daemon as soon as the TPM answers.
    const pcscdReady = pcscdRuns ? Promise.resolve() : times.time('pcscd', () => startPcscd(dataDir, readers, started));
    pcscdReady.catch(() => undefined); // awaited below; a failure must not go unhandled meanwhile
    const tcti = await times.time('swtpm', () => startTpm(dataDir, started));

    // 3. The daemon (which guards the reader ports before it connects any).
    const socketPath = join(dataDir, 'control.sock');
    const daemon = await times.time('tpmvscd', async () => {
      const child = await spawnChild(
        process.execPath,
        [join(ROOT, 'dist/daemon/main.js'), '--tcti', tcti, '--state-dir', join(dataDir, 'state'), '--socket', socketPath,
          '--vpcd', `127.0.0.1:${readers.basePort}`, '--readers', String(readers.count), '--reader-name', readers.friendlyName,
          '--reader-naming', readers.naming],
        { stdio: ['ignore', 'inherit', 'pipe'], env: process.env, detached: true },
      );
      await started.add('tpmvscd', () => stopChild(child));
      await waitForLine(child, /ready:/, 60_000);
      return child;
    });
    await pcscdReady;

    // 4. A demo card when there is none, in its reader.
    let cards: CardSummary[] = await callDaemon({ op: 'list' }, { socketPath });
    let created = false;
    if (cards.length === 0) {
      await times.time('demo card', () =>
        callDaemon(
          {
            op: 'create', name: 'Demo', adminKeyHex: DEFAULT_ADMIN_KEY_HEX, adminKeyRandom: false, pin: DEFAULT_PIN, puk: DEFAULT_PUK,
            pinPolicy: DEFAULT_PIN_POLICY, pinLifetime: null, generate: true, attestation: null,
          },
          { socketPath, onProgress: (line) => process.stderr.write(`${line}\n`) },
        ),
      );
      // As tpmvscmgr create would: the demo card's secrets are the well-known ones.
      for (const line of wellKnownSecretWarnings({ adminKey: 'DEFAULT', pin: 'DEFAULT', puk: 'DEFAULT' })) process.stderr.write(`${line}\n`);
      created = true;
      cards = await callDaemon({ op: 'list' }, { socketPath });
    }
    const card = cards[0]!;
    await times.time('card in reader', () => waitForCardInReader(card.reader, 20_000));
    const cli = join(ROOT, 'dist/cli/main.js');
    say('');
    say(`Card ready: ${card.instance} in reader "${card.reader}"`);
    say(`PIN ${DEFAULT_PIN}, PUK ${DEFAULT_PUK}, admin (management) key ${DEFAULT_ADMIN_KEY_HEX}`);
    say('These are the well-known defaults: every local account can reach the card (pcscd\'s socket is open to all),');
    say('so anyone on this machine can use its keys. A demo only: for real keys create a card with');
    say('  /AdminKey RANDOM /PIN PROMPT /PUK PROMPT');
    say('Try:');
    say(`  yubico-piv-tool -r '${card.reader}' -a status`);
    say(`  ykman --reader '${card.reader}' piv info`);
    say('  opensc-tool -l');
    say('  pkcs11-tool --module /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so -L');
    say(`  TPMVSC_SOCKET=${socketPath} node ${cli} status`);
    const tookMs = await times.total(performance.now());
    const goalMs = created ? FIRST_START_GOAL_MS : RESTART_GOAL_MS;
    if (tookMs > goalMs) say(`Ready after ${(tookMs / 1000).toFixed(1)} s (goal ${goalMs / 1000} s): ${times.describe()}`);
    say('Ctrl-C stops everything started here.');
    return daemon;
  };

  let daemon: ChildProcess;
  try {
    const outcome = await Promise.race([run(), interrupted]);
    if (typeof outcome === 'string') return finish(`${SIGNAL_LABELS[outcome]} while starting`, 130);
    daemon = outcome;
  } catch (error) {
    process.stderr.write(`npm start: ${error instanceof Error ? error.message : String(error)}\n`);
    return finish('failed', 1);
  }
  const daemonExited = new Promise<string>((resolve) => daemon.once('exit', (code, signal) => resolve(`tpmvscd exited (${signal ?? code})`)));
  const ended = await Promise.race([interrupted, daemonExited]);
  if (ended in SIGNAL_LABELS) return finish(SIGNAL_LABELS[ended as keyof typeof SIGNAL_LABELS], 0);
  return finish(ended, 1);
}

main().catch((error: unknown) => {
  process.stderr.write(`npm start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
