/**
 * The whole product on loopback for end-to-end tests: a private swtpm, a private pcscd
 * (own mount namespace) with the project's readers, tpmvscd on both, and tpmvscmgr to
 * drive it. Every process is started here and ended here by PID.
 *
 *   const stack = await startStack({ readers: 4 });
 *   const { stdout } = await stack.cli(['create', '/name', 'A', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/generate']);
 *   execFile('opensc-tool', ['-l'], { env: stack.env });
 *   await stack.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startSwtpm, type SwtpmInstance } from './swtpm.js';
import { startPcscd, type PcscdInstance } from './pcscd.js';
import { callDaemon, RequestAborted } from '../../cli/control_client.js';

/**
 * This file runs from source (tests, through tsx) or compiled into dist/ (`npm run bench`).
 * REPO is the source root either way; programs of the project start the same way as this file:
 * compiled JavaScript when this is compiled, TypeScript through tsx otherwise.
 */
const COMPILED = import.meta.url.endsWith('.js');
export const REPO = fileURLToPath(new URL(COMPILED ? '../../..' : '../..', import.meta.url));

/** Node arguments that run one of the project's programs, e.g. projectProgram('daemon/main'). */
export function projectProgram(path: string): string[] {
  return COMPILED ? [join(REPO, 'dist', `${path}.js`)] : ['--import', 'tsx', join(REPO, `${path}.ts`)];
}
export const READER_FRIENDLY_NAME = 'TPM Virtual Smart Card';
/** FRIENDLYNAME of the vsmartcard-vpcd package's own reader configuration. */
export const STOCK_FRIENDLY_NAME = 'Virtual PCD';

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface StackOptions {
  readers?: number;
  /**
   * A prepared swtpm state directory (e.g. provisioned with EK certificates by
   * test/helpers/swtpm_ek.ts); the caller removes it. Default: a fresh empty TPM.
   */
  swtpmStateDir?: string;
  /** Extra tpmvscd arguments, e.g. ['--attestation-ca', url]. */
  daemonArgs?: string[];
  /**
   * Readers named like the vsmartcard-vpcd package's own pair ("Virtual PCD 00 00"): pcscd
   * and the daemon both use plain FRIENDLYNAMEs (one block). Default: the project's numbered names.
   */
  stockReaderNames?: boolean;
  /** Extra arguments for node itself when it runs tpmvscd (e.g. --cpu-prof to profile the daemon). */
  daemonNodeArgs?: string[];
  /**
   * A command that execs its arguments, to run tpmvscd under (e.g. unshare ... sh -c '...; exec "$@"');
   * it must exec, so the daemon keeps the PID the stack knows.
   */
  daemonPrefix?: string[];
  /** pcscd's socket mode and group as a pcscd.socket drop-in sets them (test/helpers/pcscd.ts); default 0666. */
  pcscdSocketAccess?: { mode: number; gid: number };
}

export interface Stack {
  swtpm: SwtpmInstance;
  pcscd: PcscdInstance;
  /** Environment for PC/SC clients (opensc-tool, yubico-piv-tool, pkcs11-tool...). */
  env: NodeJS.ProcessEnv;
  stateDir: string;
  socketPath: string;
  /** PID of the running daemon. */
  readonly daemonPid: number;
  /** The daemon's stderr so far. */
  daemonLog(): string;
  /** Runs tpmvscmgr with these arguments (and stdin text), against this stack's daemon. */
  cli(args: string[], options?: { input?: string; env?: NodeJS.ProcessEnv }): Promise<CommandResult>;
  /** Runs any program with the PC/SC environment of this stack. */
  run(program: string, args: string[], options?: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<CommandResult>;
  /**
   * Starts tpmvscd again; extraArgs go after StackOptions.daemonArgs (e.g. ['--owner-auth-file', f]).
   * Resolves once every card is in its reader, unless waitForCards is false (pcscd down, ports taken).
   */
  startDaemon(extraArgs?: string[], options?: { waitForCards?: boolean }): Promise<void>;
  /** SIGTERM and wait. */
  stopDaemon(): Promise<void>;
  /** SIGKILL and wait (crash simulation). */
  killDaemon(): Promise<void>;
  stop(): Promise<void>;
}

/** How long one 'status' request may take (it reads each card's retry counters from the TPM). */
const STATUS_ANSWER_MS = 10_000;

/**
 * "ready:" means the control socket answers, not that pcscd shows the cards yet: vpcd picks up
 * a new link at its next poll. A client started right after a restart would find the reader
 * empty, so wait until the daemon reports every card in its reader (vpcd asked its ATR).
 */
async function waitForCardsInReaders(socketPath: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // Each request is bounded too: a daemon that accepts and never answers must not hang the test.
    const status = await callDaemon({ op: 'status' }, { socketPath, signal: AbortSignal.timeout(STATUS_ANSWER_MS) }).catch((error: unknown) => {
      if (error instanceof RequestAborted) throw new Error(`tpmvscd did not answer 'status' within ${STATUS_ANSWER_MS} ms (waiting for its cards to be in their readers after a start)`);
      throw error;
    });
    const absent = status.cards.filter((card) => card.link.state !== 'present');
    if (absent.length === 0) return;
    if (Date.now() > deadline) {
      throw new Error(`cards not in their readers ${timeoutMs} ms after the daemon started: ${absent.map((card) => `${card.reader}: ${card.link.state} ${card.link.problem ?? ''}`).join('; ')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Runs a program to completion, collecting its output; never throws on a non-zero exit. */
export function runProgram(
  program: string,
  args: string[],
  options: { input?: string; env?: NodeJS.ProcessEnv; cwd?: string; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { env: options.env ?? process.env, cwd: options.cwd ?? REPO, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    // A program that exits without reading its stdin makes this write fail with EPIPE:
    // that is the program's choice, not a test failure (its exit code tells).
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** Resolves when the child has exited; fails after `timeoutMs`, naming what was awaited. */
function waitExit(child: ChildProcess, what: string, timeoutMs = 30_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} (PID ${child.pid}) did not exit within ${timeoutMs} ms`)), timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const readers = options.readers ?? 4;
  const naming = options.stockReaderNames ? 'plain' : 'numbered';
  const friendlyName = options.stockReaderNames ? STOCK_FRIENDLY_NAME : READER_FRIENDLY_NAME;
  if (options.stockReaderNames && readers > 2) throw new RangeError('stock reader names come in one block of two readers');
  const workDir = await mkdtemp(join(tmpdir(), 'tpmvsc-stack-'));
  const stateDir = join(workDir, 'state');
  const socketPath = join(workDir, 'control.sock');
  const swtpm = await startSwtpm(options.swtpmStateDir ? { stateDir: options.swtpmStateDir } : {});
  let pcscd: PcscdInstance;
  try {
    pcscd = await startPcscd({ readers, friendlyName, naming, ...(options.pcscdSocketAccess ? { socketAccess: options.pcscdSocketAccess } : {}) });
  } catch (error) {
    await swtpm.stop();
    throw error;
  }
  // Clients that load every p11-kit module (openssl's pkcs11 engine through p11-kit-proxy,
  // p11tool, gnutls-cli) also load Debian's tpm2-pkcs11: keep its store out of the real HOME
  // and point it at no TPM (its default would probe port 2321, maybe another test's swtpm).
  const tpm2Pkcs11Store = join(workDir, 'tpm2-pkcs11-store');
  await mkdir(tpm2Pkcs11Store, { mode: 0o700 });
  const env: NodeJS.ProcessEnv = {
    ...pcscd.env, TPMVSC_SOCKET: socketPath,
    TPM2_PKCS11_STORE: tpm2Pkcs11Store, TPM2_PKCS11_TCTI: `device:${join(workDir, 'no-such-tpm')}`, TSS2_LOG: 'all+NONE',
  };
  let daemon: ChildProcess | undefined;
  let daemonLog = '';

  const startDaemon = async (extraArgs: string[] = [], { waitForCards = true }: { waitForCards?: boolean } = {}): Promise<void> => {
    const [program, ...prefixArgs] = [...(options.daemonPrefix ?? []), process.execPath];
    const child = spawn(
      program!,
      [...prefixArgs, ...(options.daemonNodeArgs ?? []), ...projectProgram('daemon/main'), '--tcti', swtpm.tcti, '--state-dir', stateDir, '--socket', socketPath,
        '--vpcd', `127.0.0.1:${pcscd.basePort}`, '--readers', String(readers), '--reader-name', friendlyName, '--reader-naming', naming, ...(options.daemonArgs ?? []), ...extraArgs],
      { cwd: REPO, env: process.env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    daemon = child;
    // Only this start's output counts: an earlier start's "ready:" must not make this one look ready.
    const logStart = daemonLog.length;
    child.stdout?.on('data', (chunk: Buffer) => (daemonLog += chunk.toString()));
    const ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`tpmvscd did not start:\n${daemonLog}`)), 30_000);
      child.stderr?.on('data', (chunk: Buffer) => {
        daemonLog += chunk.toString();
        if (daemonLog.slice(logStart).includes('ready:')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`tpmvscd exited with ${String(code)}:\n${daemonLog}`));
      });
    });
    await ready;
    if (waitForCards) await waitForCardsInReaders(socketPath, 15_000);
  };

  const stopDaemon = async (signal: NodeJS.Signals): Promise<void> => {
    const child = daemon;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    child.kill(signal);
    await waitExit(child, `tpmvscd after ${signal}`);
  };

  try {
    await startDaemon();
  } catch (error) {
    await pcscd.stop();
    await swtpm.stop();
    await rm(workDir, { recursive: true, force: true });
    throw error;
  }

  return {
    swtpm,
    pcscd,
    env,
    stateDir,
    socketPath,
    get daemonPid() {
      return daemon?.pid ?? 0;
    },
    daemonLog: () => daemonLog,
    cli: (args, cliOptions = {}) =>
      runProgram(process.execPath, [...projectProgram('cli/main'), ...args], {
        input: cliOptions.input ?? '',
        env: { ...env, ...cliOptions.env },
      }),
    run: (program, args, runOptions = {}) =>
      runProgram(program, args, { ...runOptions, env: { ...env, ...runOptions.env } }),
    startDaemon,
    stopDaemon: () => stopDaemon('SIGTERM'),
    killDaemon: () => stopDaemon('SIGKILL'),
    stop: async () => {
      await stopDaemon('SIGTERM');
      await pcscd.stop();
      await swtpm.stop();
      await rm(workDir, { recursive: true, force: true });
    },
  };
}
