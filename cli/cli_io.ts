/**
 * What a tpmvscmgr command may touch: its streams, its environment and the Ctrl-C signal.
 * main.ts passes the process's; tests pass their own.
 */
import type { Writable } from 'node:stream';
import type { TerminalInput } from './prompt.js';

export interface CliIo {
  stdin: TerminalInput;
  stdout: Writable;
  stderr: Writable;
  env: NodeJS.ProcessEnv;
  /** Aborted on Ctrl-C (SIGINT): an in-flight request is dropped and the daemon rolls back. */
  signal: AbortSignal;
}

/** Writes one line. */
export function writeLine(stream: Writable, line: string): void {
  stream.write(`${line}\n`);
}
