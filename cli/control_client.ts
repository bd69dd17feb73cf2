/**
 * The client side of the control protocol (common/control_protocol.ts): one connection per
 * request, newline-delimited JSON. Progress lines go to a callback; the final line resolves
 * (ok) or rejects with the daemon's TpmvscError code and message.
 *
 * Aborting the signal (Ctrl-C) closes the connection: the daemon then rolls back a create.
 */
import { createConnection } from 'node:net';
import { DEFAULT_CONTROL_SOCKET, type ControlRequest, type ControlResult } from '../common/control_protocol.js';
import { TpmvscError, isErrorCode, type ErrorCode } from '../common/errors.js';
import { daemonNotRunning } from './daemon_not_running.js';

export type ResultOf<Op extends ControlRequest['op']> = Extract<ControlResult, { op: Op }>['value'];

export interface ControlCallOptions {
  socketPath: string;
  /** Called with each progress line of a create. */
  onProgress?: (line: string) => void;
  /** Aborting closes the connection and rejects with RequestAborted. */
  signal?: AbortSignal;
}

/** A failure reported by the daemon: its code, and its message verbatim. */
export class DaemonError extends TpmvscError {
  constructor(code: ErrorCode, message: string) {
    super(code);
    this.message = message;
    this.name = 'DaemonError';
  }
}

/** The caller aborted the request (Ctrl-C). */
export class RequestAborted extends Error {
  constructor() {
    super('request aborted');
    this.name = 'RequestAborted';
  }
}

/** The longest line the daemon may send (a status of 16 cards fits easily). */
const MAX_LINE_BYTES = 1 << 20;

/** --socket, else TPMVSC_SOCKET, else /run/tpmvsc/control.sock. */
export function resolveSocketPath(fromArguments: string | undefined, env: NodeJS.ProcessEnv): string {
  return fromArguments ?? (env.TPMVSC_SOCKET || DEFAULT_CONTROL_SOCKET);
}

function connectionError(error: NodeJS.ErrnoException, socketPath: string): TpmvscError {
  switch (error.code) {
    case 'ENOENT':
    case 'ECONNREFUSED':
    case 'ENOTDIR':
      return daemonNotRunning(socketPath, { cause: error });
    case 'EACCES':
    case 'EPERM':
      return new TpmvscError('NOT_PERMITTED', `cannot open ${socketPath}`, { cause: error });
    default:
      return new TpmvscError('INTERNAL', `control socket ${socketPath}: ${error.code ?? error.message}`, { cause: error });
  }
}

/** Sends one request and waits for its final line. */
export function callDaemon<Op extends ControlRequest['op']>(
  request: Extract<ControlRequest, { op: Op }>,
  options: ControlCallOptions,
): Promise<ResultOf<Op>> {
  const { socketPath, onProgress, signal } = options;
  return new Promise<unknown>((resolve, reject) => {
    if (signal?.aborted) return reject(new RequestAborted());
    const socket = createConnection({ path: socketPath });
    let settled = false;
    let received = '';
    const settle = (outcome: { value: unknown } | { error: Error }): void => {
      if (settled) return;
      settled = true;
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      if ('error' in outcome) reject(outcome.error);
      else resolve(outcome.value);
    };
    const onAbort = (): void => settle({ error: new RequestAborted() });
    signal?.addEventListener('abort', onAbort, { once: true });

    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write(`${JSON.stringify(request)}\n`));
    socket.on('error', (error: NodeJS.ErrnoException) => {
      settle({ error: received === '' && error.code !== 'EPIPE' ? connectionError(error, socketPath) : new TpmvscError('INTERNAL', 'the daemon closed the connection', { cause: error }) });
    });
    socket.on('close', () => settle({ error: new TpmvscError('INTERNAL', 'the daemon closed the connection without an answer') }));
    socket.on('data', (chunk: string) => {
      received += chunk;
      if (received.length > MAX_LINE_BYTES) return settle({ error: new TpmvscError('INTERNAL', 'the daemon sent an oversized answer') });
      let newline: number;
      while (!settled && (newline = received.indexOf('\n')) >= 0) {
        const line = received.slice(0, newline);
        received = received.slice(newline + 1);
        handleLine(line);
      }
    });

    function handleLine(line: string): void {
      let message: unknown;
      try {
        message = JSON.parse(line);
      } catch {
        return settle({ error: new TpmvscError('INTERNAL', 'the daemon sent a line that is not JSON') });
      }
      if (typeof message !== 'object' || message === null) {
        return settle({ error: new TpmvscError('INTERNAL', 'the daemon sent an unexpected line') });
      }
      const fields = message as Record<string, unknown>;
      if (typeof fields.progress === 'string') {
        onProgress?.(fields.progress);
        return;
      }
      if (fields.ok === true) return settle({ value: fields.result });
      if (fields.ok === false && typeof fields.error === 'object' && fields.error !== null) {
        const { code, message: text } = fields.error as Record<string, unknown>;
        if (isErrorCode(code) && typeof text === 'string') return settle({ error: new DaemonError(code, text) });
      }
      settle({ error: new TpmvscError('INTERNAL', 'the daemon sent an unexpected line') });
    }
    // The daemon answers each op with that op's result type (control_protocol.ts ControlResult).
  }) as Promise<ResultOf<Op>>;
}
