/**
 * Private network namespaces for the vpcd guard tests: the guard's nftables rules (and any
 * sysctl a test changes) live and die with the namespace, never touching the machine's.
 *
 *   const netns = await startNetworkNamespace();
 *   await netns.run('/usr/sbin/nft', ['list', 'tables']);     // runs inside, through nsenter
 *   await netns.stop();
 *
 * Inside: loopback up, and an extra interface with EXTRA_ADDRESS, a local address that is not
 * loopback (a dummy interface; a bridge where the kernel has no dummy driver, as here).
 * The namespace is held by a small shell that exits when our stdin closes, so it never outlives
 * the test process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { runProgram, type CommandResult } from './stack.js';

export const EXTRA_ADDRESS = '10.231.0.1';

/** Shell commands that set a fresh namespace up (run by root inside it). */
export const NAMESPACE_SETUP =
  'ip link set lo up && ' +
  '{ ip link add tpmvsc-extra type dummy 2>/dev/null || ip link add tpmvsc-extra type bridge; } && ' +
  `ip addr add ${EXTRA_ADDRESS}/24 dev tpmvsc-extra && ip link set tpmvsc-extra up`;

/** Prefix that runs a program as nobody (no groups): the unprivileged local user of every attack. */
export const AS_NOBODY = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--'];

export interface NetworkNamespace {
  /** Prefix that runs a program inside: nsenter --net=/proc/<holder>/ns/net --. */
  readonly enter: string[];
  /** Runs a program inside to completion. */
  run(program: string, args: string[], options?: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number }): Promise<CommandResult>;
  /** Starts a long-running program inside; end it with kill(). */
  spawn(program: string, args: string[]): ChildProcess;
  stop(): Promise<void>;
}

export async function startNetworkNamespace(): Promise<NetworkNamespace> {
  const holder = spawn('unshare', ['--net', '--', 'sh', '-c', `${NAMESPACE_SETUP} && echo ready && exec cat >/dev/null`], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  holder.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const lines = createInterface({ input: holder.stdout })[Symbol.asyncIterator]();
  const first = await Promise.race([
    lines.next(),
    new Promise<never>((_, reject) => holder.once('exit', (code) => reject(new Error(`network namespace setup failed (${String(code)}): ${stderr}`)))),
  ]);
  if (first.value !== 'ready') throw new Error(`network namespace setup failed: ${stderr}`);
  const enter = ['nsenter', `--net=/proc/${holder.pid}/ns/net`, '--'];
  const exited = new Promise<void>((resolve) => holder.once('exit', () => resolve()));
  return {
    enter,
    run: (program, args, options = {}) => runProgram(enter[0]!, [...enter.slice(1), program, ...args], options),
    spawn: (program, args) => spawn(enter[0]!, [...enter.slice(1), program, ...args], { stdio: ['pipe', 'pipe', 'pipe'] }),
    stop: async () => {
      holder.stdin.end();
      await exited;
    },
  };
}
