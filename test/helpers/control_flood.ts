/**
 * An attacker that opens many idle connections to tpmvscd's control socket, as another uid.
 *
 *   const flood = await startControlFlood({ socketPath, connections: 200, as: ['setpriv', '--reuid=nobody', ...] });
 *   flood.report   // what the daemon did with them: still open, answered (by code), closed
 *   await flood.stop()
 *
 * Run as a program (`node --import tsx control_flood.ts SOCKET N`), it connects N times, sends
 * nothing, waits until the daemon's answers stop coming, prints one JSON report line, and holds
 * the connections that are still open until its stdin ends.
 */
import { spawn } from 'node:child_process';
import { createConnection, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

export interface FloodReport {
  connected: number;
  /** Connections the daemon neither answered nor closed: it is holding them. */
  open: number;
  /** Connections the daemon answered, by error code. */
  answered: Record<string, number>;
  /** Connections that failed to connect or were closed without an answer. */
  failed: number;
}

export interface ControlFlood {
  report: FloodReport;
  /** Closes every connection (ends the attacker process) and waits for it. */
  stop(): Promise<void>;
}

const QUIET_MS = 1500;
const SETTLE_LIMIT_MS = 20_000;

async function flood(socketPath: string, count: number): Promise<void> {
  const sockets: Socket[] = [];
  const answered: Record<string, number> = {};
  const silent = new Set<Socket>();
  let failed = 0;
  let connected = 0;
  let lastEvent = Date.now();
  for (let index = 0; index < count; index += 1) {
    const socket = createConnection({ path: socketPath });
    sockets.push(socket);
    let received = '';
    socket.setEncoding('utf8');
    const ok = await new Promise<boolean>((resolve) => {
      socket.once('connect', () => resolve(true));
      socket.once('error', () => resolve(false));
    });
    if (!ok) {
      failed += 1;
      continue;
    }
    connected += 1;
    silent.add(socket);
    socket.on('data', (chunk: string) => {
      received += chunk;
      const newline = received.indexOf('\n');
      if (newline < 0 || !silent.delete(socket)) return;
      lastEvent = Date.now();
      let code = 'UNPARSABLE';
      try {
        code = (JSON.parse(received.slice(0, newline)) as { error?: { code?: string } }).error?.code ?? 'OK';
      } catch {
        // counted as UNPARSABLE
      }
      answered[code] = (answered[code] ?? 0) + 1;
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      if (!silent.delete(socket)) return;
      lastEvent = Date.now();
      failed += 1;
    });
  }
  const started = Date.now();
  while (Date.now() - lastEvent < QUIET_MS && Date.now() - started < SETTLE_LIMIT_MS) await new Promise((resolve) => setTimeout(resolve, 100));
  const report: FloodReport = { connected, open: silent.size, answered, failed };
  process.stdout.write(`${JSON.stringify(report)}\n`);
  process.stdin.resume();
  process.stdin.once('end', () => {
    for (const socket of sockets) socket.destroy();
    process.exit(0);
  });
}

/** Starts the attacker (as the uid `as` switches to) and waits for its report. */
export async function startControlFlood(options: { socketPath: string; connections: number; as: readonly string[] }): Promise<ControlFlood> {
  const script = fileURLToPath(import.meta.url);
  const argv = [...options.as, process.execPath, '--import', 'tsx', script, options.socketPath, String(options.connections)];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'], cwd: fileURLToPath(new URL('../..', import.meta.url)) });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const first = await Promise.race([lines.next(), exited.then(() => ({ done: true as const, value: undefined }))]);
  if (first.done || first.value === undefined) throw new Error(`the control flood did not report:\n${stderr}`);
  return {
    report: JSON.parse(first.value) as FloodReport,
    async stop() {
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [socketPath, count] = process.argv.slice(2);
  if (!socketPath || !count) throw new Error('usage: control_flood.ts SOCKET CONNECTIONS');
  await flood(socketPath, Number(count));
}
