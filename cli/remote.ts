/**
 * /machine <name>: runs the command on another computer's tpmvscd, through that computer's own
 * tpmvscmgr, over ssh (the channel Linux admins and fleet tools already trust):
 *
 *   admin's tpmvscmgr ──ssh -T── target's `tpmvscmgr --remote-session <command>` ── target's tpmvscd
 *
 * - PROMPT secrets are asked here, on the admin's terminal, and sent as lines on the channel's
 *   stdin; the remote command line only says PROMPT (it is built by remote_arguments.ts and
 *   shell-quoted word by word, since ssh hands the remote shell one string).
 * - ssh keeps the terminal for its own prompts (password, passphrase, host key): it reads them
 *   from /dev/tty, never from the pipe that carries our secrets.
 * - The target's progress lines, errors, stdout (also /json) and exit code come back as they are.
 *   Its first stderr line is a marker (remote_session.ts): lines before it are ssh's, and when
 *   there is no marker, ssh or the target's shell failed: that becomes one line with
 *   REMOTE_UNREACHABLE (exit 10) or REMOTE_NOT_INSTALLED (exit 11).
 * - Ctrl-C closes the channel's stdin (and ssh itself if it lingers): the target sees its stdin
 *   end, drops its daemon connection, and the daemon rolls a create back.
 */
import { spawn } from 'node:child_process';
import { TpmvscError } from '../common/errors.js';
import type { CliIo } from './cli_io.js';
import { RequestAborted } from './control_client.js';
import { createSecretReader, type SecretReader } from './prompt.js';
import { remoteArguments, secretLines, type MachineCommand } from './remote_arguments.js';
import { REMOTE_SESSION_MARKER, REMOTE_SESSION_OPTION } from './remote_session.js';
import { shellCommandLine } from './shell_quote.js';
import { parseSshDestination, type SshDestination } from './ssh_destination.js';

/** The target's tpmvscmgr finished: tpmvscmgr exits with its code (its output already went through). */
export class RemoteExit extends Error {
  constructor(readonly exitCode: number) {
    super(`the remote tpmvscmgr exited with ${exitCode}`);
    this.name = 'RemoteExit';
  }
}

/** ssh's own exit status for its failures (the remote command's status otherwise). */
const SSH_FAILED = 255;
/** After Ctrl-C, how long the target gets to roll back and answer before ssh is ended. */
const ABORT_GRACE_MS = 5000;

/** The ssh argv: no pty (the target must read lines, not a terminal), no forwarding, then `--`. */
export function sshArguments(destination: SshDestination, remoteWords: readonly string[], env: NodeJS.ProcessEnv): string[] {
  const config = env.TPMVSC_SSH_CONFIG ? ['-F', env.TPMVSC_SSH_CONFIG] : [];
  return [
    '-T', '-x', '-a',
    '-o', 'LogLevel=ERROR',
    ...config,
    '--',
    destination.destination,
    shellCommandLine(['tpmvscmgr', REMOTE_SESSION_OPTION, ...remoteWords]),
  ];
}

/** A line from ssh or the remote shell, fit for one error line. */
function cleanLine(line: string): string {
  return line.replace(/[^\x20-\x7e]/g, '?').replace(/^ssh: /, '').trim().slice(0, 200);
}

/** Why there was no remote session: one line with a documented exit code. */
export function failureWithoutSession(host: string, exit: number | null, signal: NodeJS.Signals | null, sshLines: readonly string[]): TpmvscError {
  const last = [...sshLines].reverse().map(cleanLine).find((line) => line.length > 0);
  if (exit === SSH_FAILED || exit === null) {
    const reason = last ?? (signal ? `ssh was ended by ${signal}` : 'ssh failed');
    return new TpmvscError('REMOTE_UNREACHABLE', `${host}: ${reason}`);
  }
  // The login worked but tpmvscmgr did not start: the shell's "not found" (127), not executable (126)...
  return new TpmvscError('REMOTE_NOT_INSTALLED', `${host}: tpmvscmgr did not start${last ? ` (${last})` : ` (exit ${exit})`}`);
}

/** Runs the command on command.machine; never returns normally: throws RemoteExit or a TpmvscError. */
export async function runRemote(command: MachineCommand & { machine: string }, io: CliIo): Promise<never> {
  const destination = parseSshDestination(command.machine);
  let secretReader: SecretReader | undefined;
  const reader = (): SecretReader => (secretReader ??= createSecretReader(io.stdin, io.stderr));
  let secrets: string[];
  try {
    secrets = await secretLines(command, reader);
  } finally {
    secretReader?.close();
  }
  if (io.signal.aborted) throw new RequestAborted();

  const child = spawn('ssh', sshArguments(destination, remoteArguments(command), io.env), {
    env: io.env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  // ssh may exit before reading what we write (it failed): its exit status tells.
  child.stdin.on('error', () => undefined);
  if (secrets.length > 0) child.stdin.write(`${secrets.join('\n')}\n`);
  secrets.fill('');
  // stdin stays open: its end tells the target to abort.

  let sessionStarted = false;
  const sshLines: string[] = [];
  let partial = '';
  const onStderrLine = (line: string): void => {
    if (sessionStarted) {
      io.stderr.write(`${line}\n`);
    } else if (line === REMOTE_SESSION_MARKER) {
      sessionStarted = true;
      // Whatever came before (a login notice) is the target's to say.
      for (const early of sshLines) io.stderr.write(`${early}\n`);
      sshLines.length = 0;
    } else if (sshLines.length < 50) {
      sshLines.push(line);
    }
  };
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    partial += chunk;
    let newline: number;
    while ((newline = partial.indexOf('\n')) >= 0) {
      onStderrLine(partial.slice(0, newline).replace(/\r$/, ''));
      partial = partial.slice(newline + 1);
    }
  });
  child.stdout.on('data', (chunk: Buffer) => io.stdout.write(chunk));

  let graceTimer: NodeJS.Timeout | undefined;
  const onAbort = (): void => {
    child.stdin.end();
    graceTimer = setTimeout(() => child.kill('SIGTERM'), ABORT_GRACE_MS);
    graceTimer.unref();
  };
  io.signal.addEventListener('abort', onAbort, { once: true });

  const outcome = await new Promise<{ exit: number | null; signal: NodeJS.Signals | null } | { error: Error }>((resolve) => {
    child.once('error', (error) => resolve({ error }));
    child.once('close', (exit, signal) => resolve({ exit, signal }));
  });
  io.signal.removeEventListener('abort', onAbort);
  clearTimeout(graceTimer);
  child.stdin.destroy();
  if (partial.length > 0) onStderrLine(partial);

  if ('error' in outcome) {
    const code = (outcome.error as NodeJS.ErrnoException).code ?? outcome.error.message;
    throw new TpmvscError('REMOTE_UNREACHABLE', `cannot run ssh on this computer (${code}); install openssh-client`);
  }
  const { exit, signal } = outcome;
  if (sessionStarted && exit !== null && exit !== SSH_FAILED) throw new RemoteExit(exit);
  if (io.signal.aborted) throw new RequestAborted();
  if (sessionStarted) {
    const last = sshLines.map(cleanLine).filter((line) => line.length > 0).at(-1);
    throw new TpmvscError('REMOTE_UNREACHABLE', `${destination.host}: the connection was lost${last ? ` (${last})` : ''}`);
  }
  throw failureWithoutSession(destination.host, exit, signal, sshLines);
}

/** A parsed command that names another computer. */
export function targetsMachine(command: { command: string; machine?: string | null }): command is MachineCommand & { machine: string } {
  return ['create', 'destroy', 'list', 'status', 'unblock'].includes(command.command) && typeof command.machine === 'string';
}
