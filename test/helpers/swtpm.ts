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
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';

const run = promisify(execFile);

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

/** Two consecutive free loopback ports (data P, control P+1). */
async function freePortPair(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const p = await new Promise<number>((resolve, reject) => {
      const s = createServer();
      s.once('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const port = (s.address() as { port: number }).port;
        s.close(() => resolve(port));
      });
    });
    if (p >= 65535) continue;
    const ok = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(p + 1, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (ok) return p;
  }
  throw new Error('no free port pair on 127.0.0.1');
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket();
    s.once('error', () => resolve(false));
    s.connect(port, '127.0.0.1', () => {
      s.destroy();
      resolve(true);
    });
  });
}

/** Sends TPM2_Shutdown(CLEAR) over a fresh data connection (best effort). */
function sendShutdown(port: number): Promise<void> {
  // u32 TPM_SEND_COMMAND | u8 locality | u32 len | 80 01 00000000c 00000145 0000
  const cmd = Buffer.from('80010000000c000001450000', 'hex');
  const frame = Buffer.concat([Buffer.from([0, 0, 0, 8, 0, 0, 0, 0, cmd.length]), cmd]);
  return new Promise((resolve) => {
    const s = new Socket();
    const done = (): void => {
      clearTimeout(timer);
      s.destroy();
      resolve();
    };
    const timer = setTimeout(done, 3000);
    let got = 0;
    s.once('error', done);
    s.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= 18) done();
    });
    s.connect(port, '127.0.0.1', () => s.write(frame));
  });
}

export async function startSwtpm(options: SwtpmOptions = {}): Promise<SwtpmInstance> {
  const ownDir = !options.stateDir;
  const stateDir = options.stateDir ?? (await mkdtemp(join(tmpdir(), 'tpmvsc-swtpm-')));
  let port = 0;
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let stopped = false;

  const launch = async (): Promise<void> => {
    for (let attempt = 0; attempt < 5; attempt++) {
      if (!port || attempt > 0) port = await freePortPair();
      const c = spawn('swtpm', [
        'socket', '--tpm2',
        '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`,
        '--ctrl', `type=tcp,port=${port + 1},bindaddr=127.0.0.1`,
        '--tpmstate', `dir=${stateDir}`,
        '--flags', 'not-need-init,startup-clear',
        ...(options.extraArgs ?? []),
      ], { stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      c.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
      let alive = true;
      exited = new Promise<void>((resolve) => c.once('exit', () => { alive = false; resolve(); }));
      c.once('error', () => undefined);
      for (let i = 0; i < 200 && alive; i++) {
        if (await canConnect(port)) {
          // Another process may own the port (race between probe and bind): then our swtpm
          // fails its bind and exits at once. Only a child still alive after a grace period counts.
          await sleep(50);
          if (!alive) break;
          child = c;
          return;
        }
        await sleep(10);
      }
      if (alive) c.kill('SIGKILL');
      await exited;
      if (!/address|in use|bind/i.test(stderr) && attempt > 1) throw new Error(`swtpm did not start: ${stderr.trim()}`);
    }
    throw new Error('swtpm did not start');
  };

  const stopProcess = async (): Promise<void> => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    await sendShutdown(port);
    try {
      await run('swtpm_ioctl', ['--tcp', `127.0.0.1:${port + 1}`, '-s'], { timeout: 5000 });
    } catch {
      // fall through to the signal below
    }
    const t = setTimeout(() => c.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
    child = undefined;
  };

  await launch();

  const inst: SwtpmInstance = {
    get tcti() { return `swtpm:host=127.0.0.1,port=${port}`; },
    get port() { return port; },
    get ctrlPort() { return port + 1; },
    stateDir,
    get pid() { return child?.pid; },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopProcess();
      if (ownDir) await rm(stateDir, { recursive: true, force: true });
    },
    async kill9() {
      const c = child;
      if (!c || c.exitCode !== null) return;
      c.kill('SIGKILL');
      await exited;
      child = undefined;
    },
    async restart() {
      await stopProcess();
      const keep = port;
      // same ports if still free, else new ones
      port = keep;
      await launch();
    },
  };
  return inst;
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
