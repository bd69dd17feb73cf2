#!/usr/bin/env node
/**
 * tpmvscmgr: the admin CLI of tpmvsc, with the syntax of Windows' tpmvscmgr.exe.
 * The work is done by run_cli.ts; this file only wires it to the process.
 */
import { runCli } from './run_cli.js';

// A reader that goes away (`tpmvscmgr status | head -1`): stop quietly, as a program killed by
// SIGPIPE would (exit 141) unless the command had already finished; a create cut off this way
// is rolled back by the daemon, and must not look like a success.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
    process.exit(process.exitCode ?? 141);
  });
}

const interrupt = new AbortController();
// Ctrl-C outside a terminal prompt: drop the connection (the daemon rolls back) and exit 130.
// The timer covers a wait that no signal reaches (a PROMPT line read from a pipe).
process.once('SIGINT', () => {
  interrupt.abort();
  setTimeout(() => {
    process.stderr.write('tpmvscmgr: interrupted; nothing was created\n');
    process.exit(130);
  }, 1000).unref();
});

process.exitCode = await runCli(process.argv.slice(2), {
  stdin: process.stdin,
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  signal: interrupt.signal,
});
