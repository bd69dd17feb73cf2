/**
 * Starts a private swtpm (TPM 2.0 simulator) for a test, on free loopback ports with its own
 * temporary state directory.
 *
 *   const sw = await startSwtpm();
 *   const tpm = await Tpm.open({ tcti: sw.tcti });
 *   ...
 *   await tpm.close();
 *   await sw.stop();          // Shutdown(CLEAR), swtpm_ioctl -s, wait for exit, remove the state dir
 *
 * swtpm serves one TCP client at a time: close your Tpm before running tpm2-tools against it.
 * `kill9()` simulates a crash (the state dir is kept so `restart()` can start again on the same
 * ports and state); `restart()` stops (cleanly) or after kill9 simply starts a new process.
 * Always call stop() in t.teardown / finally; it is safe to call twice.
 */
import { startSwtpmProcess, type SwtpmProcess } from '../../tpm/swtpm_process.js';
import { Tpm } from '../../tpm/index.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface SwtpmOptions {
  /** Reuse an existing state directory (it is not removed by stop()). */
  stateDir?: string;
  /** Extra swtpm flags (e.g. ['--log', 'level=20']). */
  extraArgs?: string[];
}

export interface SwtpmInstance {
  /** TCTI string for Tpm.open and tpm2-tools (-T). */
  tcti: string;
  port: number;
  ctrlPort: number;
  stateDir: string;
  pid: number | undefined;
  /** Clean stop: TPM2_Shutdown(CLEAR), swtpm_ioctl -s, wait for exit, remove the state dir. */
  stop(): Promise<void>;
  /** SIGKILL (crash simulation); state dir kept. */
  kill9(): Promise<void>;
  /** Stops cleanly if running (keeping the state) and starts again on the same ports and state. */
  restart(): Promise<void>;
}

export async function startSwtpm(options: SwtpmOptions = {}): Promise<SwtpmInstance> {
  const ownDir = !options.stateDir;
  const stateDir = options.stateDir ?? (await mkdtemp(join(tmpdir(), 'tpmvsc-swtpm-')));
  const extraArgs = options.extraArgs ?? [];
  let process: SwtpmProcess | undefined = await startSwtpmProcess({ stateDir, extraArgs });
  const port = process.port;
  let stopped = false;

  return {
    tcti: process.tcti,
    port,
    ctrlPort: port + 1,
    stateDir,
    get pid() {
      return process?.pid;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await process?.stop();
      process = undefined;
      if (ownDir) await rm(stateDir, { recursive: true, force: true });
    },
    async kill9() {
      await process?.kill();
      process = undefined;
    },
    async restart() {
      await process?.stop();
      // Same ports: clients keep their TCTI string.
      process = await startSwtpmProcess({ stateDir, extraArgs, port });
    },
  };
}

/** One command/response exchange seen by the proxy. */
export interface ProxyExchange {
  command: Buffer;
  response: Buffer;
}

export interface SwtpmProxy {
  /** TCTI string pointing at the proxy. */
  tcti: string;
  port: number;
  /** Every raw byte the client sent / received (framing included), in order. */
  sent: Buffer[];
  received: Buffer[];
  /** Parsed exchanges (TPM command and response bytes without simulator framing). */
  exchanges: ProxyExchange[];
  /**
   * Optional hook: return a TPM response (without framing) to answer a command yourself instead of
   * forwarding it (e.g. inject TPM_RC_RETRY).
   */
  intercept: ((command: Buffer) => Buffer | undefined) | undefined;
  close(): Promise<void>;
}

/**
 * A recording loopback proxy in front of an swtpm data port (simulator framing), for wire-secrecy
 * and fault-injection tests.
 */
export async function startSwtpmProxy(target: { port: number }): Promise<SwtpmProxy> {
  const sockets = new Set<Socket>();
  const proxy: SwtpmProxy = {
    tcti: '',
    port: 0,
    sent: [],
    received: [],
    exchanges: [],
    intercept: undefined,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server = createServer((client) => {
    sockets.add(client);
    const upstream = new Socket();
    sockets.add(upstream);
    let fromClient = Buffer.alloc(0);
    let fromTpm = Buffer.alloc(0);
    let current: Buffer | undefined;
    const toClient = (b: Buffer): void => {
      proxy.received.push(b);
      client.write(b);
    };
    client.on('data', (d: Buffer) => {
      proxy.sent.push(Buffer.from(d));
      fromClient = Buffer.concat([fromClient, d]);
      while (fromClient.length >= 9) {
        const len = fromClient.readUInt32BE(5);
        if (fromClient.length < 9 + len) break;
        const frame = fromClient.subarray(0, 9 + len);
        fromClient = fromClient.subarray(9 + len);
        const command = Buffer.from(frame.subarray(9));
        const injected = proxy.intercept?.(command);
        if (injected) {
          proxy.exchanges.push({ command, response: injected });
          const head = Buffer.alloc(4);
          head.writeUInt32BE(injected.length, 0);
          toClient(Buffer.concat([head, injected, Buffer.alloc(4)]));
        } else {
          current = command;
          upstream.write(frame);
        }
      }
    });
    upstream.on('data', (d: Buffer) => {
      fromTpm = Buffer.concat([fromTpm, d]);
      while (fromTpm.length >= 4) {
        const len = fromTpm.readUInt32BE(0);
        if (fromTpm.length < 8 + len) break;
        const frame = fromTpm.subarray(0, 8 + len);
        fromTpm = fromTpm.subarray(8 + len);
        proxy.exchanges.push({ command: current ?? Buffer.alloc(0), response: Buffer.from(frame.subarray(4, 4 + len)) });
        toClient(Buffer.from(frame));
      }
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
    client.on('error', end);
    upstream.on('error', end);
    upstream.connect(target.port, '127.0.0.1');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  proxy.port = (server.address() as { port: number }).port;
  proxy.tcti = `swtpm:host=127.0.0.1,port=${proxy.port}`;
  return proxy;
}

/**
 * A private swtpm behind a recording proxy, and a Tpm client talking through it: what the
 * wire-secrecy tests inspect. Everything is torn down with the test.
 */
export async function startRecordedTpm(t: { teardown(fn: () => unknown): void }): Promise<{ swtpm: SwtpmInstance; proxy: SwtpmProxy; tpm: Tpm }> {
  const swtpm = await startSwtpm();
  t.teardown(() => swtpm.stop());
  const proxy = await startSwtpmProxy(swtpm);
  t.teardown(() => proxy.close());
  const tpm = await Tpm.open({ tcti: proxy.tcti });
  t.teardown(() => tpm.close());
  return { swtpm, proxy, tpm };
}
