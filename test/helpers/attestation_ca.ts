/**
 * The project's attestation CA (tpmvsc-ca) for a test: the real program in a child process on
 * a free loopback port, ended by PID.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { REPO, projectProgram } from './stack.js';

export interface CaProcess {
  url: string;
  stateDir: string;
  /** Its stderr so far. */
  log(): string;
  /** Its stdout so far: the access log, unless --access-log sends it to a file. */
  accessLog(): string;
  pid: number;
  stop(): Promise<void>;
}

export async function startCaProcess(stateDir: string, ekRoots: string, extraArgs: string[] = []): Promise<CaProcess> {
  const child: ChildProcess = spawn(
    process.execPath,
    [...projectProgram('ca/main'), '--listen', '127.0.0.1:0', '--state-dir', stateDir, '--ek-roots', ekRoots, ...extraArgs],
    { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  let access = '';
  // Read stdout always: an unread pipe would fill and block the CA's (synchronous) log writes.
  child.stdout!.on('data', (chunk: Buffer) => (access += chunk.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`tpmvsc-ca did not start:\n${log}`)), 30_000);
    child.stderr!.on('data', (chunk: Buffer) => {
      log += chunk.toString();
      const match = /listening: (http:\/\/\S+)/.exec(log);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]!);
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`tpmvsc-ca exited with ${String(code)}:\n${log}`));
    });
  });
  return {
    url,
    stateDir,
    log: () => log,
    accessLog: () => access,
    pid: child.pid!,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    },
  };
}
