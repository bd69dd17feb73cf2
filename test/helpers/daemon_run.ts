/**
 * Runs the real tpmvscd on a test's swtpm without pcscd (a daemon with no cards opens no
 * vpcd link): starts it, waits until it is ready or exits, then ends it by PID. For tests of
 * what the daemon does at start (TPM passwords, DA policy, option checks). Run as root, the
 * daemon installs the vpcd guard's table for its (unused) reader ports: removed afterwards.
 *
 *   const run = await runDaemonOnce({ tcti: swtpm.tcti, args: ['--owner-auth-file', file] });
 *   t.true(run.ready, run.log);
 */
import { spawn } from 'node:child_process';
import { chmod, chown, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readerPortRange, removeVpcdGuard } from '../../daemon/vpcd_guard.js';
import { findFreePortRange } from './pcscd.js';
import { REPO, projectProgram } from './stack.js';

export interface DaemonRun {
  /** It logged "ready:" (and was then stopped with SIGTERM). */
  ready: boolean;
  /** Exit code: 0 after a clean stop, the daemon's own code when it refused to start. */
  code: number | null;
  /** Everything it wrote to stderr and stdout. */
  log: string;
}

export interface DaemonRunOptions {
  tcti: string;
  stateDir?: string;
  args?: string[];
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** Run as this user instead (setpriv, no supplementary groups); the work directory becomes theirs. */
  runAs?: { uid: number; gid: number };
}

export async function runDaemonOnce(options: DaemonRunOptions): Promise<DaemonRun> {
  const workDir = await mkdtemp(join(tmpdir(), 'tpmvsc-daemon-'));
  if (options.runAs) {
    await chown(workDir, options.runAs.uid, options.runAs.gid);
    await chmod(workDir, 0o700);
  }
  // Free ports outside the ephemeral range, for the vpcd address the daemon is given (it connects to none).
  const vpcdPort = await findFreePortRange(2);
  try {
    const node = options.runAs
      ? ['setpriv', `--reuid=${options.runAs.uid}`, `--regid=${options.runAs.gid}`, '--clear-groups', '--', process.execPath]
      : [process.execPath];
    const args = [
      ...node.slice(1),
      ...projectProgram('daemon/main'),
      '--tcti', options.tcti,
      '--state-dir', options.stateDir ?? join(workDir, 'state'),
      '--socket', join(workDir, 'control.sock'),
      '--vpcd', `127.0.0.1:${vpcdPort}`,
      '--readers', '1',
      ...(options.args ?? []),
    ];
    const child = spawn(node[0]!, args, { cwd: REPO, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    let ready = false;
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const onOutput = (chunk: Buffer): void => {
      log += chunk.toString();
      if (!ready && log.includes('ready:')) {
        ready = true;
        child.kill('SIGTERM');
      }
    };
    child.stdout.on('data', onOutput);
    child.stderr.on('data', onOutput);
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 30_000);
    const code = await exited;
    clearTimeout(timer);
    return { ready, code, log };
  } finally {
    await rm(workDir, { recursive: true, force: true });
    if (process.geteuid?.() === 0) await removeVpcdGuard(readerPortRange(vpcdPort, 1)).catch(() => undefined);
  }
}
