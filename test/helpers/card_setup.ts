/**
 * Provisioning for the client end-to-end tests: a throwaway test CA made with openssl,
 * keys generated ON the card with yubico-piv-tool, and CA-issued certificates for those
 * keys imported back into the card (OpenSC exposes a private key only where its slot
 * holds a certificate).
 *
 * yubico-piv-tool 2.2's `selfsign` fails against OpenSSL 3 ("Failed signing
 * certificate", before any APDU is sent), so the certificate is issued by the test CA
 * for the card's public key instead: `openssl x509 -req -force_pubkey` over a dummy CSR.
 */
import { writeFile, chmod, mkdir } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { runProgram, type CommandResult, type Stack } from './stack.js';

export const OPENSC_MODULE = '/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so';
/** Windows virtual smart card default PIN (tpmvscmgr /PIN DEFAULT). */
export const DEFAULT_PIN = '12345678';

export type SlotAlgorithm = 'RSA2048' | 'ECCP256';

export interface TestCa {
  certificate: string;
  key: string;
  /** A CSR made with a throwaway key: only its shape is used (-force_pubkey). */
  dummyRequest: string;
}

export interface ProvisionedSlot {
  slot: string;
  algorithm: SlotAlgorithm;
  /** PEM public key as the card returned it from GENERATE. */
  publicKey: string;
  /** PEM certificate imported into the slot. */
  certificate: string;
}

/** Throws with the tool's output when it failed: a provisioning step must not fail silently. */
export function mustSucceed(result: CommandResult, what: string): CommandResult {
  if (result.code !== 0) throw new Error(`${what} failed (${result.code}):\n${result.stdout}\n${result.stderr}`);
  return result;
}

export async function makeTestCa(dir: string): Promise<TestCa> {
  const ca: TestCa = { certificate: join(dir, 'ca.pem'), key: join(dir, 'ca.key'), dummyRequest: join(dir, 'dummy.csr') };
  mustSucceed(
    await runProgram('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', ca.key, '-out', ca.certificate, '-subj', '/CN=tpmvsc test CA', '-days', '2',
      '-addext', 'basicConstraints=critical,CA:true', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']),
    'CA certificate',
  );
  mustSucceed(
    await runProgram('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes',
      '-keyout', join(dir, 'dummy.key'), '-out', ca.dummyRequest, '-subj', '/CN=dummy']),
    'dummy CSR',
  );
  return ca;
}

/** Issues a CA certificate for `publicKey` (a PEM file) with this subject. */
export async function issueCertificate(ca: TestCa, publicKey: string, subject: string, out: string, extensions = ''): Promise<void> {
  const args = ['x509', '-req', '-in', ca.dummyRequest, '-CA', ca.certificate, '-CAkey', ca.key, '-force_pubkey', publicKey,
    '-subj', subject, '-set_serial', `0x${Date.now().toString(16)}${Math.floor(Math.random() * 1e6).toString(16)}`, '-days', '2', '-out', out];
  if (extensions) {
    const file = `${out}.ext`;
    await writeFile(file, extensions);
    args.push('-extfile', file);
  }
  mustSucceed(await runProgram('openssl', args), `certificate for ${subject}`);
}

/**
 * Generates a key in `slot` of the card in `reader` (default management key), issues a
 * certificate for it and imports it. Files land in dir as <prefix>-<slot>.{pub,crt}.pem.
 */
export async function provisionSlot(
  stack: Stack,
  options: { reader: string; slot: string; algorithm: SlotAlgorithm; subject: string; ca: TestCa; dir: string; prefix: string; extensions?: string },
): Promise<ProvisionedSlot> {
  const publicKey = join(options.dir, `${options.prefix}-${options.slot}.pub.pem`);
  const certificate = join(options.dir, `${options.prefix}-${options.slot}.crt.pem`);
  const piv = (args: string[]): Promise<CommandResult> => stack.run('yubico-piv-tool', ['-r', options.reader, ...args]);
  mustSucceed(await piv(['-a', 'generate', '-s', options.slot, '-A', options.algorithm, '-o', publicKey]), `generate ${options.slot}`);
  await issueCertificate(options.ca, publicKey, options.subject, certificate, options.extensions);
  mustSucceed(await piv(['-a', 'import-certificate', '-s', options.slot, '-i', certificate]), `import certificate ${options.slot}`);
  return { slot: options.slot, algorithm: options.algorithm, publicKey, certificate };
}

/** Creates a card with the Windows defaults (PIN, PUK, admin key); returns its instance id. */
export async function createDefaultCard(stack: Stack, name: string): Promise<string> {
  const result = mustSucceed(
    await stack.cli(['create', '/name', name, '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/PUK', 'DEFAULT', '/generate']),
    `create card ${name}`,
  );
  return result.stdout.trim().split('\n').at(-1) ?? '';
}

/**
 * An SSH_ASKPASS program that prints `pin` (mode 0700 in a private temp dir): ssh, ssh-add
 * and friends get the PIN without it ever appearing in an argv.
 */
export async function writeAskpass(dir: string, name: string, pin: string): Promise<string> {
  if (!/^[0-9A-Za-z]+$/.test(pin)) throw new Error('askpass PIN must be alphanumeric');
  const path = join(dir, name);
  await writeFile(path, `#!/bin/sh\necho '${pin}'\n`, { mode: 0o700 });
  await chmod(path, 0o700);
  return path;
}

/** A free loopback TCP port (bound and released: small race, good enough for tests). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/**
 * Environment for programs that load every p11-kit module (gnutls-cli, p11tool, p11-kit): a
 * temp HOME under `dir`, so nothing they or their modules keep per user lands in the real one
 * (stack.env already keeps Debian's tpm2-pkcs11 module off the real HOME and off any TPM).
 */
export async function p11KitClientEnv(dir: string): Promise<NodeJS.ProcessEnv> {
  const home = join(dir, 'p11-kit-home');
  await mkdir(home, { recursive: true, mode: 0o700 });
  return { HOME: home };
}
