/**
 * The target's side of /machine. The admin's tpmvscmgr runs, over ssh,
 *
 *   tpmvscmgr --remote-session <command> <switches...>
 *
 * and this hidden first option changes three things:
 * - the first stderr line is REMOTE_SESSION_MARKER: the admin's side then knows that ssh logged
 *   in and found tpmvscmgr, and that every later stderr line is ours (earlier ones are ssh's own);
 * - PROMPT secrets are always read one line each from stdin (the ssh channel), never from a terminal;
 * - stdin reaching its end aborts the command like Ctrl-C: the admin pressed Ctrl-C or the
 *   connection died, so a create in flight drops its daemon connection and the daemon rolls it back.
 *   (The admin's side keeps the channel's stdin open until this process exits.)
 */
import { PassThrough } from 'node:stream';
import type { CliIo } from './cli_io.js';

export const REMOTE_SESSION_OPTION = '--remote-session';
/** Versioned so a future protocol change can be told apart. */
export const REMOTE_SESSION_MARKER = 'tpmvscmgr-remote-session: 1';

/** Runs one command as the target of /machine; `run` is runCli (passed in to avoid an import cycle). */
export async function runRemoteSession(
  argv: readonly string[],
  io: CliIo,
  run: (argv: readonly string[], io: CliIo) => Promise<number>,
): Promise<number> {
  io.stderr.write(`${REMOTE_SESSION_MARKER}\n`);
  // The channel may be gone when we answer: a failed write must not crash before the rollback.
  io.stdout.on('error', () => undefined);
  io.stderr.on('error', () => undefined);

  const channelClosed = new AbortController();
  const onParentAbort = (): void => channelClosed.abort();
  io.signal.addEventListener('abort', onParentAbort, { once: true });

  // The command reads its secret lines from this copy; the real stdin is watched for its end.
  const secrets = new PassThrough();
  secrets.on('error', () => undefined);
  const input = io.stdin;
  const onData = (chunk: Buffer | string): void => {
    if (!secrets.destroyed && !secrets.writableEnded) secrets.write(chunk);
  };
  const onEnd = (): void => {
    if (!secrets.destroyed && !secrets.writableEnded) secrets.end();
    channelClosed.abort();
  };
  input.on('data', onData);
  input.once('end', onEnd);
  input.once('close', onEnd);
  input.once('error', onEnd);

  try {
    return await run(argv, { ...io, stdin: secrets, signal: channelClosed.signal });
  } finally {
    io.signal.removeEventListener('abort', onParentAbort);
    input.off('data', onData);
    input.off('end', onEnd);
    input.off('close', onEnd);
    // Stop reading so the process can exit while the admin's side still holds the channel open.
    input.pause();
    input.destroy();
  }
}
