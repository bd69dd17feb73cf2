#!/usr/bin/env node
/**
 * tpmvsc-ca: the attestation CA that certifies card AIKs after TCG credential activation.
 *
 *   tpmvsc-ca --listen HOST:PORT --state-dir DIR --ek-roots DIR [--ek-allow-list FILE] [--access-log FILE]
 *             [--challenges-per-minute N] [--max-pending-per-ek N] [--max-pending N]
 *
 * State dir: ca-key.pem (0600), ca.pem, issued.jsonl (append-only log). It runs no TPM.
 * Access log (access_log.ts): stdout, or --access-log FILE.
 * Prints "listening: http://HOST:PORT" on stderr when ready (port 0 = a free port).
 */
import { join } from 'node:path';
import { once } from 'node:events';
import { loadOrCreateIdentity } from './ca_identity.js';
import { CaService } from './ca_service.js';
import { createCaServer } from './ca_http.js';
import { loadEkTrust } from './ek_trust.js';
import { DEFAULT_LIMITS, EnrolmentLimits, type EnrolmentLimitSettings } from './enrolment_limits.js';
import { openAccessLog } from './access_log.js';
import { parseLoopbackAddress } from '../common/loopback_address.js';
import { asksForVersion, productVersion } from '../common/product_version.js';

export const CA_HELP = `tpmvsc-ca: attestation CA for TPM virtual smart card AIKs

Usage: tpmvsc-ca --listen HOST:PORT --state-dir DIR --ek-roots DIR [--ek-allow-list FILE]
                 [--access-log FILE] [--challenges-per-minute N] [--max-pending-per-ek N] [--max-pending N]
       tpmvsc-ca --help | --version

Certifies a card's attestation identity key (AIK) after TCG credential activation: only the TPM
that holds both the AIK and an endorsement key (EK) it trusts can answer its challenge.

  --listen HOST:PORT     loopback address to serve HTTP on (default 127.0.0.1:8443; port 0: any free
                         port). Plain HTTP: serve other machines through a TLS reverse proxy.
  --state-dir DIR        CA key (ca-key.pem, 0600), certificate (ca.pem) and the issuance log
                         (issued.jsonl); created on first start
  --ek-roots DIR         PEM files of the TPM manufacturer root and intermediate certificates
                         that EK certificates must chain to (issuance policy ek-chain)
  --ek-allow-list FILE   optional: SHA-256 (hex) of trusted EK public keys (SubjectPublicKeyInfo),
                         one per line (issuance policy ek-allow-list, checked first)
  --access-log FILE      one JSON line per request (time, peer, client, route, status, result),
                         appended to FILE (0600); default: stdout
  --challenges-per-minute N  challenges one EK may ask for per minute (default ${DEFAULT_LIMITS.perMinute})
  --max-pending-per-ek N     unanswered challenges one EK may hold (default ${DEFAULT_LIMITS.pendingPerClient})
  --max-pending N            unanswered challenges in all; when full, new ones are refused
                             (HTTP 503), pending ones are never dropped (default ${DEFAULT_LIMITS.maxPending})

A client is an EK (SHA-256 of its public key), once its certificate is trusted; not an address:
on loopback or behind a proxy every client has the same one. Limit addresses at the proxy.

ca.pem only vouches for AIKs and the slot certificates they sign: it is limited to attestation
(keyCertSign, attestation EKUs, no DNS, IP or mail names). Give it to relying parties for
tpmvscmgr verify-attestation or openssl verify; NEVER put it in a TLS or S/MIME trust store.
An issued AIK certificate proves that the AIK is a restricted key in a TPM whose EK the CA
trusts; not who runs that machine, nor anything about keys the AIK later certifies beyond what
their TPM evidence shows (docs/ATTESTATION.md).
`;

interface CaArguments {
  host: string;
  port: number;
  stateDir: string;
  ekRoots: string;
  allowList: string | undefined;
  accessLog: string | undefined;
  limits: EnrolmentLimitSettings;
}

const VALUE_OPTIONS = ['--listen', '--state-dir', '--ek-roots', '--ek-allow-list', '--access-log', '--challenges-per-minute', '--max-pending-per-ek', '--max-pending'];

function count(values: Map<string, string>, option: string, fallback: number): number {
  const text = values.get(option);
  if (text === undefined) return fallback;
  if (!/^\d{1,7}$/.test(text) || Number(text) < 1) throw new Error(`${option} takes a whole number from 1 to 9999999, not ${text.slice(0, 20)}`);
  return Number(text);
}

function parse(argv: string[]): CaArguments | 'help' {
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    if (token === '--help' || token === '-h') return 'help';
    if (!VALUE_OPTIONS.includes(token)) throw new Error(`unknown argument ${token.slice(0, 40)}`);
    const value = argv[++i];
    if (value === undefined) throw new Error(`${token} needs a value`);
    values.set(token, value);
  }
  const { host, port } = parseLoopbackAddress(values.get('--listen') ?? '127.0.0.1:8443', '--listen', {
    minPort: 0,
    example: '127.0.0.1:8443',
    why: 'the CA serves plain HTTP; put a TLS reverse proxy in front to serve other machines',
  });
  const stateDir = values.get('--state-dir');
  const ekRoots = values.get('--ek-roots');
  if (!stateDir) throw new Error('--state-dir DIR is required');
  if (!ekRoots) throw new Error('--ek-roots DIR is required');
  const limits = {
    perMinute: count(values, '--challenges-per-minute', DEFAULT_LIMITS.perMinute),
    pendingPerClient: count(values, '--max-pending-per-ek', DEFAULT_LIMITS.pendingPerClient),
    maxPending: count(values, '--max-pending', DEFAULT_LIMITS.maxPending),
  };
  return { host, port, stateDir, ekRoots, allowList: values.get('--ek-allow-list'), accessLog: values.get('--access-log'), limits };
}

async function main(): Promise<void> {
  if (asksForVersion(process.argv.slice(2))) {
    process.stdout.write(`tpmvsc-ca ${productVersion()}\n`);
    return;
  }
  let args: CaArguments | 'help';
  try {
    args = parse(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`tpmvsc-ca: ${(e as Error).message} (see tpmvsc-ca --help)\n`);
    process.exitCode = 2;
    return;
  }
  if (args === 'help') {
    process.stdout.write(CA_HELP);
    return;
  }
  const log = (line: string): void => void process.stderr.write(`tpmvsc-ca: ${line}\n`);
  const identity = await loadOrCreateIdentity(args.stateDir, log);
  const trust = await loadEkTrust(args.ekRoots, args.allowList);
  log(`trusting ${trust.certificates.length} EK root/intermediate certificate(s), ${trust.allowList.size} allow-listed EK(s)`);
  const service = new CaService({ identity, trust, logPath: join(args.stateDir, 'issued.jsonl'), limits: new EnrolmentLimits(args.limits) });
  const access = openAccessLog(args.accessLog);
  const server = createCaServer(service, access, log);
  server.listen(args.port, args.host);
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : args.port;
  const host = args.host.includes(':') ? `[${args.host}]` : args.host;
  log(`listening: http://${host}:${port}`);
  const stop = (): void => {
    server.close(() => void access.close());
    server.closeAllConnections();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((e: unknown) => {
  process.stderr.write(`tpmvsc-ca: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
