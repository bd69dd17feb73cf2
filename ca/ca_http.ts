/**
 * The CA's HTTP front (node:http, JSON). Plain HTTP on loopback by default; put a TLS reverse
 * proxy in front to serve other machines (docs/ATTESTATION.md). Bodies over 64 KiB, wrong
 * methods, paths or content are refused with 4xx and {"error": "..."}.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { CERTIFICATE_PATH, CHALLENGE_PATH } from '../attestation/ca_protocol.js';
import { CaRefusal } from './ca_error.js';
import type { CaService } from './ca_service.js';

const MAX_BODY = 64 * 1024;

function send(response: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
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

export function createCaServer(service: CaService, log: (line: string) => void): Server {
  const server = createServer(async (request, response) => {
    try {
      if (request.method !== 'POST') throw new CaRefusal(405, 'use POST');
      const body = await readJson(request);
      if (request.url === CHALLENGE_PATH) return send(response, 200, service.challenge(body));
      if (request.url === CERTIFICATE_PATH) return send(response, 200, await service.certificate(body));
      throw new CaRefusal(404, 'unknown path');
    } catch (error) {
      if (error instanceof CaRefusal) {
        log(`refused ${request.method} ${String(request.url).slice(0, 60)}: ${error.status} ${error.message}`);
        return send(response, error.status, { error: error.message });
      }
      log(`error ${request.method} ${String(request.url).slice(0, 60)}: ${error instanceof Error ? error.message : String(error)}`);
      return send(response, 500, { error: 'internal error' });
    }
  });
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  return server;
}
