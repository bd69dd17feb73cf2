/**
 * A software TPM (swtpm) process on loopback, for machines without a TPM and for tests.
 *
 *   swtpm socket --tpm2 --server type=tcp,port=P,bindaddr=127.0.0.1
 *                --ctrl type=tcp,port=P+1,bindaddr=127.0.0.1 --tpmstate dir=D
 *                --flags not-need-init,startup-clear
 *
 * A clean stop sends TPM2_Shutdown(CLEAR) first: swtpm counts a stop without it as an
 * unclean shutdown, which costs a dictionary-attack failure at the next start.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createServer, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface SwtpmProcessOptions {
  /** swtpm's state directory (NVChip etc.); must exist, 0700. */
  stateDir: string;
  /** Data port; the control port is port + 1. Default: a free pair. */
  port?: number;
  extraArgs?: readonly string[];
  /**
   * Its own process group, so a terminal's Ctrl-C reaches only the parent, which then stops
   * it in order (TPM2_Shutdown first). Default false.
   */
  ownProcessGroup?: boolean;
}

export interface SwtpmProcess {
  readonly port: number;
  readonly tcti: string;
  readonly pid: number | undefined;
  /** TPM2_Shutdown(CLEAR), then swtpm's own stop command; waits for the exit. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash or power loss would. */
  kill(): Promise<void>;
}

/** TPM2_Shutdown(TPM_SU_CLEAR) in the simulator framing: u32 SEND_COMMAND | u8 locality | u32 size | command. */
const SHUTDOWN_FRAME = Buffer.from('00000008' + '00' + '0000000c' + '80010000000c000001450000', 'hex');
/** Response: u32 size | 10-byte response header | u32 acknowledgement. */
const SHUTDOWN_RESPONSE_BYTES = 4 + 10 + 4;

function listenable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** Two consecutive free loopback ports (data P, control P+1). */
export async function freePortPair(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => {
        const address = server.address();
        server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
      });
    });
    if (port > 0 && port < 65535 && (await listenable(port + 1))) return port;
  }
  throw new Error('no free pair of loopback ports');
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    socket.once('error', () => resolve(false));
    socket.connect(port, '127.0.0.1', () => {
      socket.destroy();
      resolve(true);
    });
  });
}

/** Best effort: a TPM that does not answer within 3 s is stopped anyway. */
function sendShutdown(port: number): Promise<void> {
  return new Promise((resolve) => {
    const socket = new Socket();
    let received = 0;
    const done = (): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve();
    };
    const timer = setTimeout(done, 3000);
    socket.once('error', done);
    socket.on('data', (chunk: Buffer) => {
      received += chunk.length;
      if (received >= SHUTDOWN_RESPONSE_BYTES) done();
    });
    socket.connect(port, '127.0.0.1', () => socket.write(SHUTDOWN_FRAME));
  });
}

export async function startSwtpmProcess(options: SwtpmProcessOptions): Promise<SwtpmProcess> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = options.port ?? (await freePortPair());
    const child: ChildProcess = spawn(
      'swtpm',
      [
        'socket', '--tpm2',
        '--server', `type=tcp,port=${port},bindaddr=127.0.0.1`,
        '--ctrl', `type=tcp,port=${port + 1},bindaddr=127.0.0.1`,
        '--tpmstate', `dir=${options.stateDir}`,
        '--flags', 'not-need-init,startup-clear',
        ...(options.extraArgs ?? []),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], detached: options.ownProcessGroup ?? false },
    );
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', (error) => (stderr += error.message));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    let alive = true;
    void exited.then(() => (alive = false));
    for (let i = 0; i < 300 && alive; i++) {
      if (await canConnect(port)) {
        // Another process may own the port (a race between the probe and swtpm's bind): then
        // this swtpm fails its bind and exits at once. Only a child alive a moment later counts.
        await sleep(50);
        if (!alive) break;
        return {
          port,
          tcti: `swtpm:host=127.0.0.1,port=${port}`,
          get pid() {
            return child.pid;
          },
          stop: async () => {
            if (!alive) return;
            await sendShutdown(port);
            await run('swtpm_ioctl', ['--tcp', `127.0.0.1:${port + 1}`, '-s'], { timeout: 5000 }).catch(() => undefined);
            const force = setTimeout(() => child.kill('SIGKILL'), 5000);
            await exited;
            clearTimeout(force);
          },
          kill: async () => {
            if (!alive) return;
            child.kill('SIGKILL');
            await exited;
          },
        };
      }
      await sleep(10);
    }
    if (alive) child.kill('SIGKILL');
    await exited;
    // A port taken between the probe and swtpm's bind: try another pair.
    if (options.port !== undefined || !/address|in use|bind/i.test(stderr)) {
      throw new Error(`swtpm did not start: ${stderr.trim() || 'no output'}`);
    }
  }
  throw new Error('swtpm did not start: no free port pair');
}
