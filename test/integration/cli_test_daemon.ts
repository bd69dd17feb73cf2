/**
 * For the CLI and control-server tests: a ControlServer on a temp socket backed by a small
 * in-memory CardManagerApi (a test double of the daemon's card logic, never used in production),
 * and a runner for the REAL tpmvscmgr binary (node --import tsx cli/main.ts).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  PROGRESS,
  instanceId,
  type CardSummary,
  type CreateRequest,
  type CreateResult,
  type DaemonStatus,
} from '../../common/control_protocol.js';
import { TpmvscError } from '../../common/errors.js';
import { DEFAULT_PIN_LIFETIME, type PinLifetime } from '../../common/pin_lifetime.js';
import type { CardManagerApi } from '../../daemon/card_manager_api.js';
import { ControlServer } from '../../daemon/control_server.js';

export const REPO_ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)));
export const CLI_MAIN = join(REPO_ROOT, 'cli', 'main.ts');

export class RecordingCardManager implements CardManagerApi {
  readonly createRequests: CreateRequest[] = [];
  readonly cards = new Map<string, CardSummary>();
  readonly events: string[] = [];
  /** The cards created with their own verified-PIN lifetime. */
  readonly pinLifetimes = new Map<string, PinLifetime>();
  /** When set, create waits for the abort signal (to test Ctrl-C / disconnect roll-back). */
  hangCreate = false;
  rolledBack = 0;
  /** When set, create throws this. */
  failCreate: unknown = undefined;

  constructor(private readonly readers = 10) {}

  async create(request: CreateRequest, progress: (line: string) => void, signal: AbortSignal): Promise<CreateResult> {
    this.createRequests.push(request);
    this.events.push('create-start');
    progress(PROGRESS.initializing);
    progress(PROGRESS.creatingReader);
    if (this.failCreate !== undefined) throw this.failCreate;
    if (this.hangCreate) {
      await new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }));
      this.rolledBack += 1;
      this.events.push('create-rolled-back');
      throw new TpmvscError('CREATE_FAILED', 'aborted');
    }
    let slot = 0;
    while (this.cards.has(instanceId(slot))) slot += 1;
    if (slot >= this.readers) throw new TpmvscError('READER_LIMIT');
    await new Promise((resolve) => setTimeout(resolve, 20));
    progress(PROGRESS.created);
    const instance = instanceId(slot);
    const reader = `TPM Virtual Smart Card 0${Math.floor(slot / 2)} 0${slot % 2}`;
    if (request.pinLifetime) this.pinLifetimes.set(instance, request.pinLifetime);
    this.cards.set(instance, {
      instance,
      name: request.name,
      reader,
      slot,
      guid: request.generate ? '00112233445566778899aabbccddeeff' : null,
      serial: 1000 + slot,
      hasPuk: request.puk !== null,
      createdAt: '2024-01-01T00:00:00.000Z',
    });
    this.events.push('create-end');
    return { instance, reader };
  }

  async destroy(instance: string): Promise<void> {
    this.events.push('destroy');
    if (!this.cards.delete(instance)) throw new TpmvscError('NOT_FOUND', instance);
  }

  async list(): Promise<CardSummary[]> {
    return [...this.cards.values()];
  }

  async status(instance?: string): Promise<DaemonStatus> {
    const cards = [...this.cards.values()].filter((card) => instance === undefined || card.instance === instance);
    if (instance !== undefined && cards.length === 0) throw new TpmvscError('NOT_FOUND', instance);
    return {
      version: 'test',
      tcti: 'test-double',
      readers: this.readers,
      cards: cards.map((card) => ({
        ...card,
        connected: true,
        link: { state: 'present' as const, since: '2024-01-01T00:00:00.000Z', problem: null },
        pinTriesRemaining: 5,
        pinTriesTotal: 5,
        pukTriesRemaining: card.hasPuk ? 5 : null,
        pinLifetime: { ...(this.pinLifetimes.get(card.instance) ?? DEFAULT_PIN_LIFETIME), source: this.pinLifetimes.has(card.instance) ? 'card' : 'daemon default' },
        keys: [],
      })),
    };
  }
}

export interface TestDaemon {
  dir: string;
  socketPath: string;
  cards: RecordingCardManager;
  server: ControlServer;
  stop(): Promise<void>;
}

/** A ControlServer on a socket in a fresh temp dir; stop() closes it and removes the dir. */
export async function startTestDaemon(options: { adminGroup?: string; dir?: string } = {}): Promise<TestDaemon> {
  const dir = options.dir ?? (await mkdtemp(join(tmpdir(), 'tpmvsc-cli-')));
  const socketPath = join(dir, 'run', 'control.sock');
  const cards = new RecordingCardManager();
  const server = new ControlServer({ socketPath, cards, adminGroup: options.adminGroup ?? 'tpmvsc-test-none' });
  await server.listen();
  return {
    dir,
    socketPath,
    cards,
    server,
    async stop() {
      await server.close();
      if (!options.dir) await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface CliRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The argv the CLI process was started with (for "no secret in argv" checks). */
  argv: string[];
}

export interface CliRunOptions {
  stdin?: string;
  env?: NodeJS.ProcessEnv;
  /** Run as another user: a prefix like ['setpriv', '--reuid', 'x', ...]. */
  prefix?: string[];
  /** Called once the process has started, with its pid (e.g. to send SIGINT later). */
  onSpawn?: (pid: number) => void;
  timeoutMs?: number;
}

/** Node + tsx start-up is CPU-heavy: a few CLI processes at a time keep every run far from its timeout. */
const MAX_PARALLEL_CLI = 3;
let runningCli = 0;
const waitingCli: Array<() => void> = [];

async function withCliSlot<T>(task: () => Promise<T>): Promise<T> {
  if (runningCli >= MAX_PARALLEL_CLI) await new Promise<void>((resolve) => waitingCli.push(resolve));
  runningCli += 1;
  try {
    return await task();
  } finally {
    runningCli -= 1;
    waitingCli.shift()?.();
  }
}

/** Runs the real tpmvscmgr and collects its exit code and output. */
export function runCli(args: readonly string[], options: CliRunOptions = {}): Promise<CliRun> {
  return withCliSlot(() => spawnCli(args, options));
}

function spawnCli(args: readonly string[], options: CliRunOptions): Promise<CliRun> {
  const prefix = options.prefix ?? [];
  const argv = [...prefix, process.execPath, '--import', 'tsx', CLI_MAIN, ...args];
  return new Promise((resolvePromise, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd: REPO_ROOT,
      env: { ...process.env, TPMVSC_SOCKET: '', ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('error', reject);
    child.on('spawn', () => options.onSpawn?.(child.pid!));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolvePromise({ code, signal, stdout, stderr, argv });
    });
    if (options.stdin !== undefined) child.stdin.end(options.stdin);
    else child.stdin.end();
  });
}

/** Leaves a socket file nobody listens on (what a crashed daemon leaves): connect() gets ECONNREFUSED. */
export function makeStaleSocket(path: string): void {
  const result = spawnSync('python3', ['-c', 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])', path]);
  if (result.status !== 0) throw new Error(`could not make a stale socket: ${result.stderr}`);
}
