/**
 * GnuTLS applications use the card through p11-kit: gnutls-cli authenticates a TLS client
 * with the card's keys, addressed by RFC 7512 PKCS#11 URLs, against a loopback TLS server
 * that accepts only clients with a certificate from the test CA.
 *
 * How GnuTLS finds the card: GnuTLS loads every module registered with p11-kit; Debian's
 * opensc package registers OpenSC (/usr/share/p11-kit/modules/opensc-pkcs11.module), and
 * OpenSC reaches the private pcscd through PCSCLITE_CSOCK_NAME (stack.env). Nothing is
 * configured per user: the URLs come from `p11tool --list-all-certs` / `--list-privkeys`.
 *
 * The PIN comes from a 0600 file named by the URL's pin-source attribute, never argv.
 * GnuTLS 3.7 hands pin-source to p11-kit's file PIN callback, which takes a plain PATH
 * (`?pin-source=/dir/pin.txt`); the `file:` URI form that libp11 accepts is not
 * understood here (GnuTLS then falls back to prompting). With pin-source GnuTLS makes a
 * single login attempt, so a wrong PIN costs exactly one try.
 *
 * 9E (Card Authentication) needs no PIN on the card (signing with it sends no VERIFY), but
 * GnuTLS logs in to any token that reports CKF_LOGIN_REQUIRED before it looks up a private
 * key, whichever key it is; OpenSC's PIV token always reports it. So gnutls-cli needs the
 * PIN for 9E as well: that is GnuTLS's policy, not the card's.
 *
 * Debian's libtpm2-pkcs11-1 is registered with p11-kit too and loads in every GnuTLS
 * program: stack.env points it at no TPM and a store in the stack's temp dir; clients also get a
 * temp HOME (p11KitClientEnv).
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { createServer, type Server, type TLSSocket } from 'node:tls';
import { runProgram, startStack, type CommandResult, type Stack } from '../helpers/stack.js';
import {
  DEFAULT_PIN, createDefaultCard, issueCertificate, makeTestCa, mustSucceed, p11KitClientEnv, provisionSlot, type TestCa,
} from '../helpers/card_setup.js';
import { cardTries } from '../helpers/piv_tools.js';

const READER = 'TPM Virtual Smart Card 0 00 00';
/** OpenSC names the PIV token after the CN of the 9A certificate. */
const HOLDER = 'gnutls holder';
const CARD_AUTH_HOLDER = 'gnutls card auth';
const CLIENT_EXTENSIONS = 'keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n';
const WRONG_PIN = '87654321';
const CLIENT_TIMEOUT_MS = 30_000;

/** One TLS connection as the server saw it: the verified client certificate, or the TLS error. */
interface Handshake {
  clientCn?: string;
  /** SHA-256 fingerprint of the client certificate, in node:crypto's notation. */
  clientFingerprint?: string;
  error?: string;
  /** Why the server refused the client certificate (node's authorizationError code), if it did. */
  authorizationError?: string;
}

/** A certificate/key pair on the card as p11tool lists it. */
interface CardObjects {
  certificateUrl: string;
  keyUrl: string;
}

let stack: Stack | undefined;
let dir = '';
let ca: TestCa | undefined;
let instance = '';
let server: Server | undefined;
let port = 0;
let clientEnv: NodeJS.ProcessEnv = {};
let pinFile = '';
let wrongPinFile = '';
/** SHA-256 fingerprints of the certificates imported into 9E and 9A. */
let cardAuthFingerprint = '';
let holderFingerprint = '';
let cardAuth: CardObjects | undefined;
let pivAuth: CardObjects | undefined;
const handshakes: Handshake[] = [];
/** gnutls-cli processes still running (ended by PID in after.always). */
const clients = new Set<ChildProcess>();
/** Server-side connections still open (destroyed in after.always so close() returns). */
const openSockets = new Set<TLSSocket>();

test.before(async () => {
  stack = await startStack({ readers: 2 });
  dir = await mkdtemp(join(tmpdir(), 'tpmvsc-gnutls-'));
  instance = await createDefaultCard(stack, 'Gnutls');
  ca = await makeTestCa(dir);
  const holderSlot = await provisionSlot(stack, {
    reader: READER, slot: '9a', algorithm: 'RSA2048', subject: `/CN=${HOLDER}/O=tpmvsc`, ca, dir, prefix: 'gnutls', extensions: CLIENT_EXTENSIONS,
  });
  const cardAuthSlot = await provisionSlot(stack, {
    reader: READER, slot: '9e', algorithm: 'ECCP256', subject: `/CN=${CARD_AUTH_HOLDER}/O=tpmvsc`, ca, dir, prefix: 'gnutls', extensions: CLIENT_EXTENSIONS,
  });
  holderFingerprint = new X509Certificate(await readFile(holderSlot.certificate)).fingerprint256;
  cardAuthFingerprint = new X509Certificate(await readFile(cardAuthSlot.certificate)).fingerprint256;

  mustSucceed(await runProgram('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', join(dir, 'server.key')]), 'server key');
  mustSucceed(await runProgram('openssl', ['pkey', '-in', join(dir, 'server.key'), '-pubout', '-out', join(dir, 'server.pub.pem')]), 'server pub');
  await issueCertificate(ca, join(dir, 'server.pub.pem'), '/CN=127.0.0.1', join(dir, 'server.pem'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');

  pinFile = join(dir, 'pin.txt');
  wrongPinFile = join(dir, 'wrong-pin.txt');
  await writeFile(pinFile, DEFAULT_PIN, { mode: 0o600 });
  await writeFile(wrongPinFile, WRONG_PIN, { mode: 0o600 });

  clientEnv = await p11KitClientEnv(dir);

  server = await startServer();
  port = (server.address() as AddressInfo).port;
});

test.after.always(async () => {
  for (const child of clients) child.kill('SIGKILL');
  for (const socket of openSockets) socket.destroy();
  server?.close();
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** TLS on loopback that only completes handshakes with clients holding a certificate from the test CA. */
async function startServer(): Promise<Server> {
  const tls = createServer({
    key: await readFile(join(dir, 'server.key')),
    cert: await readFile(join(dir, 'server.pem')),
    ca: await readFile(ca!.certificate),
    requestCert: true,
    rejectUnauthorized: true,
  });
  tls.on('secureConnection', (socket: TLSSocket) => {
    openSockets.add(socket);
    socket.once('close', () => openSockets.delete(socket));
    // A client that vanishes mid-write is its own business, not a crash of the test worker.
    socket.on('error', () => undefined);
    const peer = socket.getPeerCertificate();
    handshakes.push({ clientCn: String(peer.subject?.CN ?? ''), clientFingerprint: peer.fingerprint256 });
    // The client closes once it has read this (see connect()).
    socket.write(`hello ${String(peer.subject?.CN ?? '')}\n`);
  });
  // A certificate that fails verification ends the connection as "socket hang up": the
  // reason is in the socket's authorizationError.
  tls.on('tlsClientError', (error: Error, socket: TLSSocket) => {
    const refused = socket.authorizationError;
    handshakes.push(refused ? { error: error.message, authorizationError: String(refused) } : { error: error.message });
  });
  await new Promise<void>((resolve, reject) => {
    tls.once('error', reject);
    tls.listen(0, '127.0.0.1', () => resolve());
  });
  return tls;
}

/** Runs a GnuTLS tool with the stack's PC/SC environment and the isolated client environment. */
function gnutlsTool(program: string, args: string[]): Promise<CommandResult> {
  return stack!.run(program, args, { env: clientEnv, timeoutMs: 30_000 });
}

/**
 * gnutls-cli to the server with this certificate and key (files or PKCS#11 URLs); none for
 * no client certificate. Its stdin stays open until the server's greeting arrives: at end
 * of input gnutls-cli closes the connection at once, which under TLS 1.3 can reach the
 * server before the server has judged the client certificate. After the greeting, closing
 * stdin makes gnutls-cli end the session cleanly (close_notify) and exit 0; a refused client
 * sees the server abort instead.
 */
function connect(credentials?: { certificate: string; key: string }): Promise<CommandResult> {
  const args = ['127.0.0.1', '--port', String(port), '--x509cafile', ca!.certificate];
  if (credentials) args.push('--x509certfile', credentials.certificate, '--x509keyfile', credentials.key);
  return new Promise((resolve, reject) => {
    const child = spawn('gnutls-cli', args, { env: { ...stack!.env, ...clientEnv }, cwd: dir, stdio: ['pipe', 'pipe', 'pipe'] });
    clients.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => {
      stdout += chunk.toString();
      if (/^hello /m.test(stdout)) child.stdin.end();
    });
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.stdin.on('error', () => undefined);
    const timer = setTimeout(() => child.kill('SIGKILL'), CLIENT_TIMEOUT_MS);
    child.once('error', (error) => {
      clearTimeout(timer);
      clients.delete(child);
      reject(error);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      clients.delete(child);
      child.stdin.destroy();
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr: signal ? `${stderr}\n(killed by ${signal})` : stderr });
    });
  });
}

/**
 * Handshakes the server records from here on. A server-side event may trail the client's
 * exit by a moment, so `settle` waits for at least `expected` of them (or 3 s).
 */
function watchHandshakes(): { settle: (expected?: number) => Promise<Handshake[]> } {
  const start = handshakes.length;
  return {
    async settle(expected = 1) {
      for (let i = 0; i < 60 && handshakes.length - start < expected; i++) await sleep(50);
      return handshakes.slice(start);
    },
  };
}

/** Splits p11tool's listing into objects: their URL and label. */
function parseListing(output: string): Array<{ url: string; label: string }> {
  return output.split(/^Object \d+:$/m).slice(1).map((block) => ({
    url: /^\s*URL: (\S+)$/m.exec(block)?.[1] ?? '',
    label: /^\s*Label: (.*)$/m.exec(block)?.[1]?.trim() ?? '',
  }));
}

function findObject(objects: Array<{ url: string; label: string }>, label: string, listing: string): string {
  const url = objects.find((object) => object.label === label)?.url;
  if (!url) throw new Error(`no "${label}" in p11tool's listing:\n${listing}`);
  return url;
}

/** The card's URL with a pin-source query attribute (RFC 7512): the PIN comes from a file. */
function withPinSource(url: string, file: string): string {
  return `${url}?pin-source=${encodeURIComponent(file).replace(/%2F/g, '/')}`;
}

async function pinTriesRemaining(): Promise<number> {
  return (await cardTries(stack!, instance)).pin;
}

function diagnostics(result: CommandResult, seen: Handshake[]): string {
  return `gnutls-cli exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}\nserver saw: ${JSON.stringify(seen)}`;
}

test.serial('p11-kit loads OpenSC from its registration; p11tool lists the card objects and their URLs', async (t) => {
  const modules = await gnutlsTool('p11-kit', ['list-modules']);
  t.regex(modules.stdout, /opensc-pkcs11: opensc-pkcs11\.so[\s\S]*?token: gnutls holder/, modules.stdout + modules.stderr);

  const tokens = mustSucceed(await gnutlsTool('p11tool', ['--list-tokens']), 'p11tool --list-tokens');
  const tokenUrl = new RegExp(`URL: (pkcs11:[^\\n]*token=${encodeURIComponent(HOLDER)})\\n`).exec(tokens.stdout)?.[1];
  t.truthy(tokenUrl, tokens.stdout);

  const certificates = mustSucceed(await gnutlsTool('p11tool', ['--list-all-certs', tokenUrl!]), 'p11tool --list-all-certs');
  const certificateObjects = parseListing(certificates.stdout);
  // Logging in shows the PIN-protected 9A key too; the PIN comes from the pin-source file.
  const keys = mustSucceed(await gnutlsTool('p11tool', ['--login', '--list-privkeys', withPinSource(tokenUrl!, pinFile)]), 'p11tool --list-privkeys');
  const keyObjects = parseListing(keys.stdout);
  cardAuth = {
    certificateUrl: findObject(certificateObjects, 'Certificate for Card Authentication', certificates.stdout),
    keyUrl: findObject(keyObjects, 'CARD AUTH key', keys.stdout),
  };
  pivAuth = {
    certificateUrl: findObject(certificateObjects, 'Certificate for PIV Authentication', certificates.stdout),
    keyUrl: findObject(keyObjects, 'PIV AUTH key', keys.stdout),
  };
  t.regex(cardAuth.certificateUrl, /;id=%04;.*type=cert$/);
  t.regex(cardAuth.keyUrl, /;id=%04;.*type=private$/);
  t.regex(pivAuth.certificateUrl, /;id=%01;.*type=cert$/);
  t.regex(pivAuth.keyUrl, /;id=%01;.*type=private$/);

  // What p11-kit reads from the card is the certificate that was imported into 9E.
  const exported = mustSucceed(await gnutlsTool('p11tool', ['--export', cardAuth.certificateUrl]), 'p11tool --export');
  t.is(new X509Certificate(exported.stdout).fingerprint256, cardAuthFingerprint);
  t.is(await pinTriesRemaining(), 5, 'listing with the right PIN costs no try');
});

/** The URLs found by the first test (ava runs serial tests in order). */
function objects(which: CardObjects | undefined): CardObjects {
  if (!which) throw new Error('the p11tool listing test did not find the card objects');
  return which;
}

/** gnutls-cli with one of the card's keys (PIN from the pin-source file): the server sees exactly that certificate. */
async function authenticatesWith(t: ExecutionContext, which: CardObjects | undefined, holder: string, fingerprint: string, output?: RegExp): Promise<void> {
  const { certificateUrl, keyUrl } = objects(which);
  const watch = watchHandshakes();
  const result = await connect({ certificate: certificateUrl, key: withPinSource(keyUrl, pinFile) });
  const seen = await watch.settle();
  const why = diagnostics(result, seen);
  t.is(result.code, 0, why);
  t.regex(result.stdout, /Handshake was completed/, why);
  if (output) t.regex(result.stdout, output, why);
  t.regex(result.stdout, new RegExp(`hello ${holder}`), why);
  t.deepEqual(seen, [{ clientCn: holder, clientFingerprint: fingerprint }], why);
  t.is(await pinTriesRemaining(), 5);
}

test.serial('gnutls-cli authenticates with the card 9E ECC P-256 key; the server sees the card certificate', async (t) => {
  await authenticatesWith(t, cardAuth, CARD_AUTH_HOLDER, cardAuthFingerprint, /ECDSA/);
});

test.serial('gnutls-cli authenticates with the card 9A RSA-2048 key, PIN from a pin-source file', async (t) => {
  await authenticatesWith(t, pivAuth, HOLDER, holderFingerprint);
});

test.serial('a wrong PIN fails the connection and costs one PIN try; the right PIN restores the count', async (t) => {
  const { certificateUrl, keyUrl } = objects(pivAuth);
  t.is(await pinTriesRemaining(), 5);
  const watch = watchHandshakes();
  const wrong = await connect({ certificate: certificateUrl, key: withPinSource(keyUrl, wrongPinFile) });
  // GnuTLS logs in while it loads the key, so the client stops before it connects.
  const seen = await watch.settle(1);
  const why = diagnostics(wrong, seen);
  t.not(wrong.code, 0, why);
  t.regex(wrong.stdout + wrong.stderr, /PIN/, why);
  t.false(seen.some((h) => h.clientFingerprint === holderFingerprint), why);
  t.is(await pinTriesRemaining(), 4, 'exactly one try spent');
  t.false((wrong.stdout + wrong.stderr).includes(WRONG_PIN), 'the PIN is not echoed');

  const right = await connect({ certificate: certificateUrl, key: withPinSource(keyUrl, pinFile) });
  t.is(right.code, 0, right.stdout + right.stderr);
  t.is(await pinTriesRemaining(), 5, 'a successful VERIFY resets the counter');
});

test.serial('clients without the card key are refused', async (t) => {
  // No client certificate at all.
  let watch = watchHandshakes();
  const bare = await connect();
  let seen = await watch.settle();
  t.false(seen.some((h) => h.clientCn !== undefined), diagnostics(bare, seen));
  t.true(seen.some((h) => /peer did not return a certificate/i.test(h.error ?? '')), diagnostics(bare, seen));

  // An impostor: the card holder's name, a software key, issued by a look-alike CA of the same name.
  const fakeDir = join(dir, 'fake-ca');
  await mkdir(fakeDir);
  const fakeCa = await makeTestCa(fakeDir);
  mustSucceed(await runProgram('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', join(dir, 'impostor.key')]), 'impostor key');
  mustSucceed(await runProgram('openssl', ['pkey', '-in', join(dir, 'impostor.key'), '-pubout', '-out', join(dir, 'impostor.pub.pem')]), 'impostor pub');
  await issueCertificate(fakeCa, join(dir, 'impostor.pub.pem'), `/CN=${HOLDER}/O=tpmvsc`, join(dir, 'impostor.pem'), CLIENT_EXTENSIONS);
  watch = watchHandshakes();
  const impostor = await connect({ certificate: join(dir, 'impostor.pem'), key: join(dir, 'impostor.key') });
  seen = await watch.settle();
  // TLS 1.3: the client has sent its Finished before the server judges its certificate, so
  // gnutls-cli reports a completed handshake; the server is the judge.
  t.false(seen.some((h) => h.clientCn !== undefined), diagnostics(impostor, seen));
  t.true(seen.some((h) => h.authorizationError !== undefined), diagnostics(impostor, seen));

  // The card's own certificate (read from the card) with a software key that does not match it.
  const { certificateUrl } = objects(cardAuth);
  watch = watchHandshakes();
  const mismatched = await connect({ certificate: certificateUrl, key: join(dir, 'impostor.key') });
  seen = await watch.settle();
  // gnutls-cli does not check the pair itself: the server refuses the CertificateVerify signature.
  t.false(seen.some((h) => h.clientCn !== undefined), diagnostics(mismatched, seen));
  t.true(seen.some((h) => /bad signature/i.test(h.error ?? '')), diagnostics(mismatched, seen));
});
