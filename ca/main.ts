#!/usr/bin/env node
/**
 * tpmvsc-ca: the attestation CA that certifies card AIKs after TCG credential activation.
 *
 *   tpmvsc-ca --listen HOST:PORT --state-dir DIR --ek-roots DIR [--ek-allow-list FILE]
 *
 * State dir: ca-key.pem (0600), ca.pem, issued.jsonl (append-only log). It runs no TPM.
 * Prints "listening: http://HOST:PORT" on stderr when ready (port 0 = a free port).
 */
import { join } from 'node:path';
import { once } from 'node:events';
import { loadOrCreateIdentity } from './ca_identity.js';
import { CaService } from './ca_service.js';
import { createCaServer } from './ca_http.js';
import { loadEkTrust } from './ek_trust.js';
import { parseLoopbackAddress } from '../common/loopback_address.js';
import { asksForVersion, productVersion } from '../common/product_version.js';

export const CA_HELP = `tpmvsc-ca: attestation CA for TPM virtual smart card AIKs

Usage: tpmvsc-ca --listen HOST:PORT --state-dir DIR --ek-roots DIR [--ek-allow-list FILE]
       tpmvsc-ca --help | --version

  --listen HOST:PORT     loopback address to serve HTTP on (default 127.0.0.1:8443; port 0: any free
                         port). Plain HTTP: serve other machines through a TLS reverse proxy.
  --state-dir DIR        CA key (ca-key.pem, 0600), certificate (ca.pem, give it to relying
                         parties) and the issuance log (issued.jsonl); created on first start
  --ek-roots DIR         PEM files of the TPM manufacturer root and intermediate certificates
                         that EK certificates must chain to
  --ek-allow-list FILE   optional: SHA-256 (hex) of trusted EK public keys (SubjectPublicKeyInfo),
                         one per line
`;

interface CaArguments {
  host: string;
  port: number;
  stateDir: string;
  ekRoots: string;
  allowList: string | undefined;
}

function parse(argv: string[]): CaArguments | 'help' {
  const values = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    if (token === '--help' || token === '-h') return 'help';
    if (!['--listen', '--state-dir', '--ek-roots', '--ek-allow-list'].includes(token)) throw new Error(`unknown argument ${token.slice(0, 40)}`);
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
  return { host, port, stateDir, ekRoots, allowList: values.get('--ek-allow-list') };
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
  const service = new CaService({ identity, trust, logPath: join(args.stateDir, 'issued.jsonl') });
  const server = createCaServer(service, log);
  server.listen(args.port, args.host);
  await once(server, 'listening');
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : args.port;
  const host = args.host.includes(':') ? `[${args.host}]` : args.host;
  log(`listening: http://${host}:${port}`);
  const stop = (): void => {
    server.close();
    server.closeAllConnections();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((e: unknown) => {
  process.stderr.write(`tpmvsc-ca: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
