/**
 * The CA's HTTP front (node:http, JSON). Plain HTTP on loopback by default; put a TLS reverse
 * proxy in front to serve other machines (docs/ATTESTATION.md). Bodies over 64 KiB, wrong
 * methods, paths or content are refused with 4xx and {"error": "..."}; 429 and 503 carry
 * Retry-After. Every request gets one access-log line (access_log.ts).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { CERTIFICATE_PATH, CHALLENGE_PATH } from '../attestation/ca_protocol.js';
import { CaRefusal } from './ca_error.js';
import type { CaService, RequestNote } from './ca_service.js';
import type { AccessLog } from './access_log.js';

const MAX_BODY = 64 * 1024;

function send(response: ServerResponse, status: number, body: unknown, retryAfterSeconds?: number): void {
  const text = JSON.stringify(body);
  response.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...(retryAfterSeconds === undefined ? {} : { 'retry-after': String(retryAfterSeconds) }),
  });
  response.end(text);
}

async function readJson(request: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new CaRefusal(413, 'request body too large');
    chunks.push(chunk as Buffer);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new CaRefusal(400, 'the body is not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new CaRefusal(400, 'the body must be a JSON object');
  return parsed as Record<string, unknown>;
}

const ROUTES = new Set([CHALLENGE_PATH, CERTIFICATE_PATH]);

export function createCaServer(service: CaService, access: AccessLog, log: (line: string) => void): Server {
  const server = createServer(async (request, response) => {
    const started = performance.now();
    const note: RequestNote = {};
    let result = 'ok';
    // 'close' comes for every request, also one whose client left before the answer.
    response.once('close', () => {
      const forwarded = request.headers['x-forwarded-for'];
      const answered = response.writableFinished;
      access.write({
        time: new Date().toISOString(),
        peer: request.socket.remoteAddress ?? null,
        ...(typeof forwarded === 'string' ? { forwardedFor: forwarded.slice(0, 200) } : {}),
        client: note.client ?? null,
        method: String(request.method).slice(0, 10),
        route: ROUTES.has(String(request.url)) ? String(request.url) : 'other',
        status: answered ? response.statusCode : null,
        result: answered ? result : 'the client left before the answer',
        ms: Math.round(performance.now() - started),
        ...(note.issued ? { issued: note.issued } : {}),
      });
    });
    try {
      if (request.method !== 'POST') throw new CaRefusal(405, 'use POST');
      const body = await readJson(request);
      if (request.url === CHALLENGE_PATH) return send(response, 200, service.challenge(body, note));
      if (request.url === CERTIFICATE_PATH) return send(response, 200, await service.certificate(body, note));
      throw new CaRefusal(404, 'unknown path');
    } catch (error) {
      if (error instanceof CaRefusal) {
        result = error.message;
        return send(response, error.status, { error: error.message }, error.retryAfterSeconds);
      }
      result = 'internal error';
      log(`error ${String(request.method).slice(0, 10)} ${String(request.url).slice(0, 60)}: ${error instanceof Error ? error.message : String(error)}`);
      return send(response, 500, { error: 'internal error' });
    }
  });
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  return server;
}
