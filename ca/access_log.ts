/**
 * The CA's access log: one JSON line per request, written when the exchange is over.
 *
 *   {"time": ISO-8601, "peer": "127.0.0.1", "forwardedFor": "203.0.113.7", "client": "ek:<hex>" | null,
 *    "method": "POST", "route": "/v1/challenge" | "/v1/certificate" | "other", "status": 429 | null,
 *    "result": "ok" | the refusal's message, "ms": 3, "issued": "<certificate serial>"}
 *
 * peer is the TCP peer: on loopback or behind a reverse proxy it is not the client. forwardedFor
 * is the X-Forwarded-For header exactly as received (untrusted; there only to match the
 * proxy's own log). client is the EK, once the request got that far (enrolment_limits.ts).
 * status null: the client left before the answer. Never a body, a challenge id, a credential or
 * a certificate.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { finished } from 'node:stream/promises';

export interface AccessLogLine {
  time: string;
  peer: string | null;
  forwardedFor?: string;
  client: string | null;
  method: string;
  route: string;
  /** null when the client left before the answer. */
  status: number | null;
  result: string;
  ms: number;
  issued?: string;
}

export interface AccessLog {
  write(line: AccessLogLine): void;
  close(): Promise<void>;
}

/** Appends to `path` (created 0600), or writes to stdout when no path is given. */
export function openAccessLog(path: string | undefined): AccessLog {
  if (path === undefined) {
    return { write: (line) => void process.stdout.write(`${JSON.stringify(line)}\n`), close: async () => undefined };
  }
  const stream: WriteStream = createWriteStream(path, { flags: 'a', mode: 0o600 });
  return {
    write: (line) => void stream.write(`${JSON.stringify(line)}\n`),
    close: async () => {
      stream.end();
      await finished(stream);
    },
  };
}
