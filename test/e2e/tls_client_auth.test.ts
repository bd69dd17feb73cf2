/**
 * TLS client authentication with the card: a test CA issues a certificate for the card's
 * 9A key; openssl s_server (own server certificate, -Verify 1 against the CA) accepts
 * an openssl s_client that signs with the card through the pkcs11 engine (PIN from a
 * pin-source file, not argv), and refuses a client without the card's key. NSS's own TLS
 * (Firefox's stack), driven by tstclnt, does the same with 9A after logging in with the PIN.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runProgram, startStack, type CommandResult, type Stack } from '../helpers/stack.js';
import {
  DEFAULT_PIN, OPENSC_MODULE, createDefaultCard, freePort, issueCertificate, makeTestCa, mustSucceed, provisionSlot, type TestCa,
} from '../helpers/card_setup.js';

const READER = 'TPM Virtual Smart Card 0 00 00';

interface Server {
  child: ChildProcess;
  port: number;
  output: () => string;
}

let stack: Stack | undefined;
let dir = '';
let ca: TestCa | undefined;
const servers: ChildProcess[] = [];

test.before(async () => {
  stack = await startStack({ readers: 2 });
  dir = await mkdtemp(join(tmpdir(), 'tpmvsc-tls-'));
  await createDefaultCard(stack, 'Tls');
  ca = await makeTestCa(dir);
  await provisionSlot(stack, {
    reader: READER, slot: '9a', algorithm: 'RSA2048', subject: '/CN=card holder/O=tpmvsc', ca, dir, prefix: 'tls',
    extensions: 'keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n',
  });
  // The server's own key and certificate (software).
  mustSucceed(await runProgram('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', join(dir, 'server.key')]), 'server key');
  mustSucceed(await runProgram('openssl', ['pkey', '-in', join(dir, 'server.key'), '-pubout', '-out', join(dir, 'server.pub.pem')]), 'server pub');
  await issueCertificate(ca, join(dir, 'server.pub.pem'), '/CN=127.0.0.1', join(dir, 'server.pem'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  await writeFile(join(dir, 'pin.txt'), DEFAULT_PIN, { mode: 0o600 });
});

test.after.always(async () => {
  for (const child of servers) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** openssl s_server on a free loopback port; `extra`: more s_server options (e.g. -www: answer GET with a status page, then close). */
async function startServer(extra: string[] = []): Promise<Server> {
  const port = await freePort();
  const child = spawn('openssl', ['s_server', '-accept', `127.0.0.1:${port}`, '-cert', join(dir, 'server.pem'), '-key', join(dir, 'server.key'),
    '-CAfile', ca!.certificate, '-Verify', '1', '-verify_return_error', '-naccept', '1', '-tls1_2', ...extra], { stdio: ['pipe', 'pipe', 'pipe'] });
  servers.push(child);
  let output = '';
  child.stdout?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => (output += chunk.toString()));
  for (let i = 0; i < 100 && !output.includes('ACCEPT'); i++) await sleep(50);
  if (!output.includes('ACCEPT')) throw new Error(`s_server did not start:\n${output}`);
  return { child, port, output: () => output };
}

async function finish(server: Server): Promise<string> {
  for (let i = 0; i < 40 && server.child.exitCode === null; i++) await sleep(50);
  if (server.child.exitCode === null) server.child.kill('SIGTERM');
  return server.output();
}

function client(port: number, args: string[]): Promise<CommandResult> {
  return stack!.run('openssl', ['s_client', '-connect', `127.0.0.1:${port}`, '-CAfile', ca!.certificate, '-verify_return_error', '-tls1_2', ...args],
    { input: 'Q\n', timeoutMs: 60_000 });
}

test.serial('s_client with the card key completes the handshake; the server sees the card holder', async (t) => {
  const server = await startServer();
  // PIN from a pin-source file (RFC 7512 pin-source), not from argv.
  const uri = `pkcs11:token=card%20holder;object=PIV%20AUTH%20key;type=private?pin-source=file:${join(dir, 'pin.txt')}`;
  const result = await client(server.port, ['-engine', 'pkcs11', '-keyform', 'engine', '-key', uri, '-cert', join(dir, 'tls-9a.crt.pem')]);
  const serverOutput = await finish(server);
  t.regex(result.stdout, /Verify return code: 0 \(ok\)/, result.stdout + result.stderr);
  t.regex(serverOutput, /subject=.*CN\s*=\s*card holder/, serverOutput);
  t.notRegex(serverOutput, /error|alert/i, serverOutput);
});

test.serial("NSS's own TLS (Firefox's stack, tstclnt) authenticates with the card's 9A key after a login with the PIN", async (t) => {
  // NSS's libssl sends a client certificate only from a token it is logged in to (the card
  // reports "login required"), so the PIN comes from a password file (-W), never argv.
  const db = `sql:${join(dir, 'nssdb')}`;
  await mkdir(join(dir, 'nssdb'), { recursive: true });
  mustSucceed(await stack!.run('certutil', ['-N', '-d', db, '--empty-password']), 'certutil -N');
  mustSucceed(await stack!.run('certutil', ['-A', '-d', db, '-n', 'test CA', '-t', 'C,,', '-i', ca!.certificate]), 'certutil -A');
  mustSucceed(await stack!.run('modutil', ['-add', 'opensc', '-libfile', OPENSC_MODULE, '-mechanisms', 'FRIENDLY', '-dbdir', db, '-force']), 'modutil -add');
  const server = await startServer(['-www']);
  const result = await stack!.run('tstclnt', ['-h', '127.0.0.1', '-p', String(server.port), '-d', db, '-V', 'tls1.2:tls1.2',
    '-n', 'card holder:Certificate for PIV Authentication', '-W', join(dir, 'pin.txt')], { input: 'GET / HTTP/1.0\r\n\r\n', timeoutMs: 60_000 });
  const serverOutput = await finish(server);
  const why = `${serverOutput}\n${result.stdout}\n${result.stderr}`;
  t.is(result.code, 0, why);
  // s_server -www's status page lists the client certificate it verified.
  t.regex(result.stdout, /Client certificate[\s\S]*Subject: CN\s*=\s*card holder/, why);
  t.false(`${result.stdout}${result.stderr}`.includes(DEFAULT_PIN), 'the PIN is not echoed');
});

test.serial('a client without the card key is refused', async (t) => {
  // The right certificate with a software key that does not match it.
  mustSucceed(await runProgram('openssl', ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048', '-out', join(dir, 'impostor.key')]), 'impostor key');
  const server = await startServer();
  const result = await client(server.port, ['-key', join(dir, 'impostor.key'), '-cert', join(dir, 'tls-9a.crt.pem')]);
  const serverOutput = await finish(server);
  t.notRegex(serverOutput, /subject=.*CN\s*=\s*card holder/, serverOutput);
  t.true(result.code !== 0 || /error|alert/i.test(result.stdout + result.stderr), result.stdout + result.stderr);

  // No client certificate at all: -Verify 1 refuses too.
  const strict = await startServer();
  await client(strict.port, []);
  const strictOutput = await finish(strict);
  t.regex(strictOutput, /peer did not return a certificate|error/i, strictOutput);
});
