/**
 * Reads the one request line of a control connection (common/control_protocol.ts):
 *
 *   <UTF-8 JSON, at most MAX_REQUEST_LINE_BYTES bytes> 0x0A
 *
 * The limit holds however the bytes arrive: one chunk holding a long line and its newline is
 * refused like a long line spread over many chunks, and nothing past the limit is kept (at most
 * the limit, plus the chunk being looked at). Bytes after the newline are not read here.
 */
import type { Socket } from 'node:net';
import { TpmvscError } from '../common/errors.js';

const NEWLINE = 0x0a;

/** The client closed its connection before its request was complete: nobody to answer. */
export class ClientGone extends Error {
  constructor() {
    super('the client closed the connection');
    this.name = 'ClientGone';
  }
}

export interface RequestLineLimits {
  /** The longest line accepted, newline excluded. */
  maxBytes: number;
  /** The line must be complete this long after the connection was accepted; then BAD_REQUEST. */
  timeoutMs: number;
  /** When the connection was accepted (Date.now()). */
  connectedAt: number;
}

function seconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(3))} s`;
}

/**
 * Resolves with the line (without its newline), or rejects with BAD_REQUEST (too long, too late,
 * or the connection ended first) or ClientGone. The socket is paused again when it settles.
 */
export function readRequestLine(socket: Socket, limits: RequestLineLimits): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (outcome: { line: string } | { error: Error }): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', onClose);
      socket.pause();
      if ('line' in outcome) resolve(outcome.line);
      else reject(outcome.error);
    };
    const onData = (chunk: Buffer): void => {
      const newline = chunk.indexOf(NEWLINE);
      const lineBytes = size + (newline >= 0 ? newline : chunk.length);
      if (lineBytes > limits.maxBytes) {
        return finish({ error: new TpmvscError('BAD_REQUEST', `the request line is longer than ${limits.maxBytes} bytes`) });
      }
      if (newline < 0) {
        chunks.push(chunk);
        size += chunk.length;
        return;
      }
      chunks.push(chunk.subarray(0, newline));
      finish({ line: Buffer.concat(chunks, lineBytes).toString('utf8') });
    };
    const onEnd = (): void => finish({ error: new TpmvscError('BAD_REQUEST', 'the connection ended before a complete request line') });
    const onClose = (): void => finish({ error: new ClientGone() });
    const timer = setTimeout(
      () => finish({ error: new TpmvscError('BAD_REQUEST', `no complete request line within ${seconds(limits.timeoutMs)} of connecting`) }),
      Math.max(0, limits.connectedAt + limits.timeoutMs - Date.now()),
    );
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', onClose);
    socket.resume();
  });
}
