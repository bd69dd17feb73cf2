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
 * Runs until Ctrl-C, then stops what it started (and only that).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { access, constants, mkdir, readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startSwtpmProcess, type SwtpmProcess } from '../tpm/swtpm_process.js';
import { registerReaders, readerName, DEFAULT_BASE_PORT, DEFAULT_FRIENDLY_NAME, VPCD_DEFAULT_PORT, type ReaderNaming } from '../daemon/reader_config.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const PCSCD_SOCKET = '/run/pcscd/pcscd.comm';
const DEMO_READERS = 2;

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function dataDirectory(): string {
  if (process.env.TPMVSC_START_DIR) return process.env.TPMVSC_START_DIR;
  const base = process.env.XDG_DATA_HOME || join(homedir(), '.local', 'share');
  return join(base, 'tpmvsc');
}

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

async function usableDevice(path: string): Promise<boolean> {
  try {
    await access(path, constants.R_OK | constants.W_OK);
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

function runToEnd(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.once('error', reject);
    child.once('exit', (code) => resolve({ code: code ?? 1, stdout }));
  });
}

async function main(): Promise<void> {
  // The daemon refuses to bring cards up on unguarded reader ports, and only root can guard them:
  // say so before starting anything.
  const allowUnprotected = /^(1|yes|true)$/i.test(process.env.TPMVSC_ALLOW_UNPROTECTED_VPCD ?? '');
  if (process.getuid?.() !== 0 && !allowUnprotected) {
    throw new Error('only root can guard the vpcd reader ports against other local users (README, "Who can reach a card"): ' +
      'run `sudo npm start`, or set TPMVSC_ALLOW_UNPROTECTED_VPCD=1 if you keep them off those ports another way');
  }
  const dataDir = dataDirectory();
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const stopActions: Array<() => Promise<void>> = [];
  const stopAll = async (): Promise<void> => {
    for (const action of stopActions.reverse()) await action().catch(() => undefined);
  };

  try {
    // 1. The TPM.
    let tcti = process.env.TPMVSC_TCTI;
    if (!tcti) {
      if (await usableDevice('/dev/tpmrm0')) {
        tcti = 'device:/dev/tpmrm0';
        say('TPM: /dev/tpmrm0');
      } else {
        const stateDir = join(dataDir, 'swtpm');
        await mkdir(stateDir, { recursive: true, mode: 0o700 });
        const swtpm: SwtpmProcess = await startSwtpmProcess({ stateDir });
        stopActions.push(() => swtpm.stop());
        tcti = swtpm.tcti;
        say(`TPM: no /dev/tpmrm0 here, so a software TPM (swtpm, state in ${stateDir}) on 127.0.0.1:${swtpm.port}`);
      }
    }

    // 2. pcscd and its readers.
    let readers: Readers;
    if (await reachable(PCSCD_SOCKET)) {
      readers = await installedReaders();
      say(`pcscd: already running; using readers "${readerName(0, readers.friendlyName, readers.naming)}" ... on port ${readers.basePort}`);
    } else {
      if (process.getuid?.() !== 0) {
        throw new Error('pcscd is not running and only root can start it: run `sudo npm start`, or start pcscd');
      }
      // TPMVSC_VPCD (host:port, as for tpmvscd) moves the readers off the default ports.
      const port = Number(/:(\d+)$/.exec(process.env.TPMVSC_VPCD ?? '')?.[1] ?? DEFAULT_BASE_PORT);
      readers = { basePort: port, count: DEMO_READERS, friendlyName: DEFAULT_FRIENDLY_NAME, naming: 'numbered' };
      const confDir = join(dataDir, 'reader.conf.d');
      await registerReaders({
        confDir,
        driverDir: join(dataDir, 'drivers'),
        readers: readers.count,
        basePort: readers.basePort,
        friendlyName: readers.friendlyName,
      });
      const pcscd = spawn('pcscd', ['--foreground', '--config', confDir], { stdio: ['ignore', 'ignore', 'pipe'] });
      stopActions.push(async () => {
        if (pcscd.exitCode !== null) return;
        pcscd.kill('SIGTERM');
        await new Promise((resolve) => pcscd.once('exit', resolve));
      });
      for (let i = 0; i < 100 && !(await reachable(PCSCD_SOCKET)); i++) await new Promise((r) => setTimeout(r, 50));
      say(`pcscd: started with readers "${readerName(0, readers.friendlyName)}" ...`);
    }

    // 3. The daemon (which guards the reader ports before it connects any).
    const socketPath = join(dataDir, 'control.sock');
    const env = { ...process.env, TPMVSC_SOCKET: socketPath };
    const daemon = spawn(
      process.execPath,
      [join(ROOT, 'dist/daemon/main.js'), '--tcti', tcti, '--state-dir', join(dataDir, 'state'), '--socket', socketPath,
        '--vpcd', `127.0.0.1:${readers.basePort}`, '--readers', String(readers.count), '--reader-name', readers.friendlyName,
        '--reader-naming', readers.naming],
      { stdio: ['ignore', 'inherit', 'pipe'], env: process.env },
    );
    stopActions.push(async () => {
      if (daemon.exitCode !== null) return;
      daemon.kill('SIGTERM');
      await new Promise((resolve) => daemon.once('exit', resolve));
    });
    await waitForLine(daemon, /ready:/, 60_000);

    // 4. A demo card when there is none.
    const cli = join(ROOT, 'dist/cli/main.js');
    const listCards = async (): Promise<Array<{ instance: string; reader: string }>> =>
      (JSON.parse((await runToEnd([cli, 'list', '--json'], env)).stdout) as { cards: Array<{ instance: string; reader: string }> }).cards;
    let cards = await listCards();
    if (cards.length === 0) {
      const created = await runToEnd(
        [cli, 'create', '/name', 'Demo', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/PUK', 'DEFAULT', '/generate'],
        env,
      );
      if (created.code !== 0) throw new Error('the demo card could not be created');
      cards = await listCards();
    }
    const card = cards[0]!;
    say('');
    say(`Card ready: ${card.instance} in reader "${card.reader}"`);
    say('PIN 12345678, PUK 12345678, admin (management) key 010203040506070801020304050607080102030405060708');
    say('These are the well-known defaults: every local account can reach the card (pcscd\'s socket is open to all),');
    say('so anyone on this machine can use its keys. A demo only: for real keys create a card with');
    say('  /AdminKey RANDOM /PIN PROMPT /PUK PROMPT');
    say('Try:');
    say(`  yubico-piv-tool -r '${card.reader}' -a status`);
    say(`  ykman --reader '${card.reader}' piv info`);
    say('  opensc-tool -l');
    say('  pkcs11-tool --module /usr/lib/x86_64-linux-gnu/opensc-pkcs11.so -L');
    say(`  TPMVSC_SOCKET=${socketPath} node ${cli} list`);
    say('Ctrl-C stops everything started here.');

    await new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
      daemon.once('exit', () => resolve());
    });
  } finally {
    await stopAll();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`npm start: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
