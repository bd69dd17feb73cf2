/**
 * A real browser signs a TLS handshake with the card: headless Chromium, with OpenSC's
 * PKCS#11 module in its NSS database, loads a page from a loopback HTTPS server that
 * refuses any client without a certificate from the test CA; the page names the
 * certificate's subject, so seeing the card holder's name means the card signed the
 * handshake (the key was generated on the card and never left it). The same browser with
 * a profile WITHOUT the OpenSC module gets no page: the server refuses the handshake.
 *
 * Which key, and why: the certificate and key sit in slot 9E (PIV Card Authentication).
 * A headless browser cannot show NSS's "enter the token password" dialog, and neither NSS
 * nor Chromium has a supported way to take a PIN without one. 9E is the slot PIV defines
 * for use without a PIN (the card's policy for it is "never"); OpenSC's PIV emulation
 * exposes the 9E private key without CKU_USER login, and signing with it sends no VERIFY.
 * (That holds for Chromium, whose TLS is BoringSSL with NSS only as the key store. Firefox
 * and NSS's tstclnt do TLS in NSS's libssl, which refuses to go on with a client key on a
 * login-required token that is not logged in: with them the card needs 9A and its PIN.)
 * 9A keeps its PIN check: nothing in the card is weakened for this test.
 *
 * Two settings make it dialog-free, both verified here (without either one Chromium waits
 * for a dialog until it is killed):
 *  - the module is added with `modutil -mechanisms FRIENDLY` (slotFlags=PublicCerts):
 *    the token's certificates are public, so NSS does not log in to list them — without
 *    it NSS asks for the PIN before it even looks at the certificates;
 *  - the managed policy AutoSelectCertificateForUrls (Debian's Chromium reads
 *    /etc/chromium/policies/managed) picks the certificate. The file is not written to
 *    /etc: Chromium runs in its own mount namespace with a temp dir bind-mounted over
 *    /etc/chromium.
 *
 * Chromium runs in its own process group, ended by PID. Host resolution maps every name but
 * 127.0.0.1 to "not found": checked with strace, its only TCP connections go to 127.0.0.1;
 * what remains is a UDP connect() to 2001:4860:4860::8888 (its IPv6 reachability probe),
 * which sends no packet.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import { type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type TLSSocket } from 'node:tls';
import { runProgram, startStack, type Stack } from '../helpers/stack.js';
import {
  OPENSC_MODULE, createDefaultCard, issueCertificate, makeTestCa, mustSucceed, provisionSlot, type TestCa,
} from '../helpers/card_setup.js';

const READER = 'TPM Virtual Smart Card 0 00 00';
const HOLDER = 'browser holder';
const CA_NAME = 'tpmvsc test CA';
const CHROMIUM_TIMEOUT_MS = 60_000;

/**
 * Runs "$@" with a temp dir bind-mounted over /etc/chromium, in a private mount
 * namespace: $1 is the temp dir, the rest is the command.
 */
const WITH_POLICY_DIR = 'mount --bind "$1" /etc/chromium || exit 97; shift; exec "$@"';

/** One TLS handshake the server saw: the verified client certificate, or the TLS error. */
interface Handshake {
  clientCn?: string;
  /** SHA-256 fingerprint of the client certificate, as node:crypto prints it. */
  clientFingerprint?: string;
  error?: string;
}

interface BrowserRun {
  code: number | null;
  /** Killed after CHROMIUM_TIMEOUT_MS: it was most likely waiting for a dialog nobody can answer. */
  timedOut: boolean;
  dom: string;
  log: string;
}

let stack: Stack | undefined;
let dir = '';
let ca: TestCa | undefined;
let server: Server | undefined;
let serverUrl = '';
let policyDir = '';
/** Fingerprint of the certificate imported into slot 9E. */
let cardFingerprint = '';
const handshakes: Handshake[] = [];
/** Process-group ids of Chromium runs still alive (ended in after.always). */
const browserGroups = new Set<number>();

test.before(async () => {
  stack = await startStack({ readers: 2 });
  dir = await mkdtemp(join(tmpdir(), 'tpmvsc-browser-'));
  await createDefaultCard(stack, 'Browser');
  ca = await makeTestCa(dir);
  const slot = await provisionSlot(stack, {
    reader: READER, slot: '9e', algorithm: 'ECCP256', subject: `/CN=${HOLDER}/O=tpmvsc`, ca, dir, prefix: 'browser',
    extensions: 'keyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n',
  });
  mustSucceed(await runProgram('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', join(dir, 'server.key')]), 'server key');
  mustSucceed(await runProgram('openssl', ['pkey', '-in', join(dir, 'server.key'), '-pubout', '-out', join(dir, 'server.pub.pem')]), 'server pub');
  await issueCertificate(ca, join(dir, 'server.pub.pem'), '/CN=127.0.0.1', join(dir, 'server.pem'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  cardFingerprint = new X509Certificate(await readFile(slot.certificate)).fingerprint256;
  server = await startServer();
  serverUrl = `https://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  policyDir = await makePolicyDir(serverUrl);
});

test.after.always(async () => {
  for (const group of browserGroups) killGroup(group);
  server?.close();
  server?.closeAllConnections();
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** HTTPS on loopback that only talks to clients with a certificate from the test CA. */
async function startServer(): Promise<Server> {
  const https = createServer(
    {
      key: await readFile(join(dir, 'server.key')),
      cert: await readFile(join(dir, 'server.pem')),
      ca: await readFile(ca!.certificate),
      requestCert: true,
      rejectUnauthorized: true,
    },
    (request, response) => {
      const peer = (request.socket as TLSSocket).getPeerCertificate();
      const cn = String(peer.subject?.CN ?? '');
      response.writeHead(200, { 'content-type': 'text/html; charset=utf-8', connection: 'close' });
      response.end(`<!doctype html><title>client</title><p id="client">client certificate: ${escapeHtml(cn)}</p>`);
    },
  );
  https.on('secureConnection', (socket: TLSSocket) => {
    const peer = socket.getPeerCertificate();
    handshakes.push({ clientCn: String(peer.subject?.CN ?? ''), clientFingerprint: peer.fingerprint256 });
  });
  https.on('tlsClientError', (error: Error) => handshakes.push({ error: error.message }));
  await new Promise<void>((resolve, reject) => {
    https.once('error', reject);
    https.listen(0, '127.0.0.1', () => resolve());
  });
  return https;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A fresh HOME whose NSS database trusts the test CA, with or without OpenSC's module. */
async function makeProfile(name: string, withCard: boolean): Promise<string> {
  const home = join(dir, name);
  const nssdb = join(home, '.pki', 'nssdb');
  await mkdir(nssdb, { recursive: true });
  const db = `sql:${nssdb}`;
  const nss = (program: string, args: string[]) => stack!.run(program, args, { env: { HOME: home } });
  mustSucceed(await nss('certutil', ['-N', '-d', db, '--empty-password']), 'certutil -N');
  mustSucceed(await nss('certutil', ['-A', '-d', db, '-n', CA_NAME, '-t', 'C,,', '-i', ca!.certificate]), 'certutil -A');
  if (withCard) {
    mustSucceed(await nss('modutil', ['-add', 'opensc', '-libfile', OPENSC_MODULE, '-mechanisms', 'FRIENDLY', '-dbdir', db, '-force']), 'modutil -add');
  }
  return home;
}

/** /etc/chromium as Chromium sees it in its namespace: the packaged file plus our policy. */
async function makePolicyDir(url: string): Promise<string> {
  const etc = join(dir, 'etc-chromium');
  const managed = join(etc, 'policies', 'managed');
  await mkdir(managed, { recursive: true });
  await copyFile('/etc/chromium/master_preferences', join(etc, 'master_preferences')).catch(() => undefined);
  const origin = new URL(url).origin;
  const rule = { pattern: origin, filter: { ISSUER: { CN: CA_NAME } } };
  await writeFile(join(managed, 'tpmvsc_client_auth.json'), JSON.stringify({ AutoSelectCertificateForUrls: [JSON.stringify(rule)] }));
  return etc;
}

function killGroup(group: number): void {
  try {
    process.kill(-group, 'SIGKILL');
  } catch {
    // the group is gone already
  }
}

/** Headless Chromium with this HOME loads `url`; returns the DOM it dumped. */
async function loadPage(home: string, url: string): Promise<BrowserRun> {
  const flags = [
    '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-default-apps',
    '--disable-domain-reliability', '--disable-client-side-phishing-detection', '--no-pings', '--metrics-recording-only',
    // Nothing but 127.0.0.1 resolves: no lookups of Google hosts, nothing off loopback.
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
    `--user-data-dir=${join(home, 'chromium-profile')}`,
    '--enable-logging=stderr',
    '--dump-dom', url,
  ];
  const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', WITH_POLICY_DIR, 'sh', policyDir, 'chromium', ...flags], {
    env: { ...stack!.env, HOME: home },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const group = child.pid!;
  browserGroups.add(group);
  let dom = '';
  let log = '';
  child.stdout.on('data', (chunk: Buffer) => (dom += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (log += chunk.toString()));
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(group);
  }, CHROMIUM_TIMEOUT_MS);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (exitCode) => resolve(exitCode));
  });
  clearTimeout(timer);
  // Helpers (zygote, utility processes) share the group: end them too.
  killGroup(group);
  browserGroups.delete(group);
  // D-Bus is absent in a container: drop its noise from the diagnostics.
  return { code, timedOut, dom, log: log.split('\n').filter((line) => !/dbus|D-Bus/.test(line)).join('\n') };
}

test.serial('Chromium with OpenSC in NSS authenticates with the card and gets the page', async (t) => {
  const home = await makeProfile('with-card', true);
  handshakes.length = 0;
  const run = await loadPage(home, serverUrl);
  const diagnostics = `exit ${run.code}${run.timedOut ? ' (timed out)' : ''}\nDOM:\n${run.dom}\nhandshakes: ${JSON.stringify(handshakes)}\nlog:\n${run.log.slice(-4000)}`;
  t.regex(run.dom, new RegExp(`client certificate: ${HOLDER}`), diagnostics);
  t.true(handshakes.some((h) => h.clientCn === HOLDER && h.clientFingerprint === cardFingerprint), diagnostics);
});

test.serial('Chromium without the OpenSC module is refused', async (t) => {
  const home = await makeProfile('without-card', false);
  handshakes.length = 0;
  const run = await loadPage(home, serverUrl);
  const diagnostics = `exit ${run.code}${run.timedOut ? ' (timed out)' : ''}\nDOM:\n${run.dom}\nhandshakes: ${JSON.stringify(handshakes)}\nlog:\n${run.log.slice(-4000)}`;
  t.notRegex(run.dom, /client certificate:/, diagnostics);
  t.false(handshakes.some((h) => h.clientCn !== undefined), diagnostics);
  // The server refused: the browser had no certificate to offer.
  t.true(handshakes.some((h) => /peer did not return a certificate/i.test(h.error ?? '')), diagnostics);
});
