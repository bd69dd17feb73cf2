/**
 * tpmvsc-ca's limits and access log against the real program, two swtpms provisioned with EK
 * certificates and a flood of challenge requests sent by an unprivileged user (nobody): one EK
 * (client) cannot use up the CA, evict another client's pending enrolment or stop it from
 * enrolling; the access log has one JSON line per request and no secrets.
 */
import test from 'ava';
import { X509Certificate } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { marshalPublic } from '../../tpm/index.js';
import { aikSubjectPublicKey, enrollAikWithCa } from '../../attestation/aik_certificate.js';
import { CaClient } from '../../attestation/ca_client.js';
import { toPem } from '../../attestation/certificate_builder.js';
import type { ChallengeRequest, ChallengeResponse } from '../../attestation/ca_protocol.js';
import { marshalEkPublic, readEndorsementKey, type EndorsementKey } from '../../attestation/endorsement.js';
import { createLocalCa, provisionEkState } from '../helpers/swtpm_ek.js';
import { startCaProcess, type CaProcess } from '../helpers/attestation_ca.js';
import { projectProgram, runProgram } from '../helpers/stack.js';
import { startAttestingMachine, type AttestingMachine } from './vault_fixture.js';

interface Machine extends AttestingMachine {
  ek: EndorsementKey;
  request: ChallengeRequest;
}

let work: string;
let roots: string;
const machines: Machine[] = [];
const cas: CaProcess[] = [];
let a: Machine;
let b: Machine;
/** Challenge ids and credentials that went over the wire: the access log must show none. */
const secrets: string[] = [];

async function machine(stateDir: string): Promise<Machine> {
  const started = await startAttestingMachine(stateDir);
  const { tpm, vault } = started;
  const ek = await readEndorsementKey(tpm);
  const request = {
    ekCertificate: Buffer.from(ek.certificate).toString('base64'),
    ekPublic: Buffer.from(marshalEkPublic(ek)).toString('base64'),
    aikPublic: Buffer.from(marshalPublic(vault.attestationKey()!.publicArea)).toString('base64'),
  };
  const m = { ...started, ek, request };
  machines.push(m);
  return m;
}

async function startCa(name: string, args: string[] = []): Promise<CaProcess> {
  const ca = await startCaProcess(join(work, name), roots, args);
  cas.push(ca);
  return ca;
}

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'tpmvsc-ca-limits-'));
  await chmod(work, 0o755);
  const manufacturer = await createLocalCa(work);
  const [stateA, stateB] = await Promise.all([provisionEkState(work, manufacturer), provisionEkState(work, manufacturer)]);
  roots = manufacturer.rootsDir;
  a = await machine(stateA);
  b = await machine(stateB);
});

test.after.always(async () => {
  for (const ca of cas) await ca.stop();
  for (const m of machines) {
    await m.vault.destroy().catch(() => undefined);
    await m.tpm.close().catch(() => undefined);
    await m.sw.stop();
  }
  if (work) await rm(work, { recursive: true, force: true });
});

/** Answers a challenge with the machine's TPM and fetches the certificate. */
async function answer(m: Machine, ca: CaProcess, challenge: ChallengeResponse): Promise<X509Certificate> {
  const credential = await m.vault.activateCredential(m.ek.source, new Uint8Array(Buffer.from(challenge.credentialBlob, 'base64')), new Uint8Array(Buffer.from(challenge.encryptedSecret, 'base64')));
  secrets.push(challenge.challengeId, Buffer.from(credential).toString('base64'), challenge.credentialBlob.slice(0, 40));
  const issued = await new CaClient(ca.url).certificate({ challengeId: challenge.challengeId, credential: Buffer.from(credential).toString('base64') });
  return new X509Certificate(Buffer.from(issued.certificate, 'base64'));
}

/** A raw POST: status, Retry-After and the error message. */
async function post(ca: CaProcess, body: unknown): Promise<{ status: number; retryAfter: string | null; error?: string }> {
  const response = await fetch(new URL('/v1/challenge', ca.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const parsed = (await response.json()) as { error?: string };
  return { status: response.status, retryAfter: response.headers.get('retry-after'), ...(parsed.error ? { error: parsed.error } : {}) };
}

/** Sends `count` copies of a challenge request, `parallel` at a time; prints {status: count}. */
const FLOOD = `
const [url, bodyFile, count, parallel] = process.argv.slice(2);
const body = require('node:fs').readFileSync(bodyFile, 'utf8');
const statuses = {};
let next = 0;
async function worker() {
  while (next < Number(count)) {
    next++;
    const response = await fetch(new URL('/v1/challenge', url), { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    await response.arrayBuffer();
    statuses[response.status] = (statuses[response.status] ?? 0) + 1;
  }
}
Promise.all(Array.from({ length: Number(parallel) }, worker)).then(() => console.log(JSON.stringify(statuses)));
`;

test.serial('a challenge flood from one client (EK) leaves another client\'s pending and new enrolments working', async (t) => {
  const ca = await startCa('ca-flood', ['--access-log', join(work, 'access.jsonl')]);
  // B's enrolment is under way when the flood starts.
  const pendingB = await new CaClient(ca.url).challenge(b.request);

  // The flood: A's (public) EK certificate and key, sent by an unprivileged user.
  const script = join(work, 'flood.cjs');
  const bodyFile = join(work, 'flood-body.json');
  await writeFile(script, FLOOD, { mode: 0o644 });
  await writeFile(bodyFile, JSON.stringify(a.request), { mode: 0o644 });
  const started = Date.now();
  const flood = await runProgram('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', process.execPath, script, ca.url, bodyFile, '400', '16'], { timeoutMs: 120_000 });
  t.is(flood.code, 0, flood.stderr);
  const statuses = JSON.parse(flood.stdout) as Record<string, number>;
  t.deepEqual(statuses, { 200: 4, 429: 396 }, 'A holds its share (4 pending challenges) and nothing more');
  t.log(`400 challenge requests in ${Date.now() - started} ms`);

  // B's pending challenge was not evicted, and B enrols again right away.
  const certificate = await answer(b, ca, pendingB);
  t.true(certificate.publicKey.export({ format: 'der', type: 'spki' }).equals(Buffer.from(aikSubjectPublicKey(b.vault))));
  await t.notThrowsAsync(() => enrollAikWithCa(b.vault, b.tpm, ca.url));

  // A is refused, with a Retry-After.
  const refused = await post(ca, a.request);
  t.is(refused.status, 429);
  t.regex(refused.error ?? '', /this EK has 4 unanswered challenges/);
  t.true(Number(refused.retryAfter) >= 1 && Number(refused.retryAfter) <= 60, String(refused.retryAfter));

  // A client that leaves half-way through its request.
  const { port, hostname } = new URL(ca.url);
  const socket = connect(Number(port), hostname);
  await once(socket, 'connect');
  socket.write('POST /v1/challenge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"ekCert');
  await new Promise((resolve) => setTimeout(resolve, 200));
  socket.destroy();
  await new Promise((resolve) => setTimeout(resolve, 500));
});

test.serial('the access log: one JSON line per request, the client is the EK, no secrets', async (t) => {
  const path = join(work, 'access.jsonl');
  t.is((await stat(path)).mode & 0o777, 0o600);
  const text = await readFile(path, 'utf8');
  const lines = text.split('\n').filter(Boolean).map((line) => JSON.parse(line) as Record<string, unknown>);
  // B's challenge, the flood, B's answer, B's enrolment (2 requests), A's refused request, the one that left.
  t.is(lines.length, 1 + 400 + 1 + 2 + 1 + 1);
  const left = lines.pop()!;
  t.like(left, { client: null, route: '/v1/challenge', status: null, result: 'the client left before the answer' });
  for (const line of lines) {
    t.deepEqual(Object.keys(line).filter((k) => !['forwardedFor', 'issued'].includes(k)).sort(), ['client', 'method', 'ms', 'peer', 'result', 'route', 'status', 'time']);
    t.regex(String(line.client), /^ek:[0-9a-f]{64}$/);
    t.is(line.peer, '127.0.0.1');
  }
  const clientA = lines.filter((l) => l.status === 429)[0]!.client;
  t.is(lines.filter((l) => l.client === clientA && l.status === 429).length, 397);
  t.true(lines.filter((l) => l.status === 429).every((l) => /unanswered challenges/.test(String(l.result))));
  t.is(lines.filter((l) => l.route === '/v1/certificate' && typeof l.issued === 'string').length, 2);
  // Nothing from the bodies: no EK certificate, AIK, challenge id, blob or credential.
  t.false(text.includes(a.request.ekCertificate.slice(0, 40)));
  t.false(text.includes(b.request.aikPublic.slice(0, 40)));
  t.true(secrets.length >= 3);
  for (const secret of secrets) t.false(text.includes(secret));
  t.notRegex(text, /challengeId|credential/);
});

test.serial('the pending caps refuse new challenges and never evict pending ones', async (t) => {
  const ca = await startCa('ca-caps', ['--max-pending', '3', '--max-pending-per-ek', '2', '--challenges-per-minute', '100']);
  const client = new CaClient(ca.url);
  const a1 = await client.challenge(a.request);
  await client.challenge(a.request);
  const perEk = await post(ca, a.request);
  t.is(perEk.status, 429, 'A\'s share is 2');
  const b1 = await client.challenge(b.request);
  const full = await post(ca, b.request);
  t.is(full.status, 503, 'the CA holds 3: B\'s new one waits');
  t.regex(full.error ?? '', /the CA holds 3 unanswered challenges/);
  t.truthy(full.retryAfter);
  // The oldest pending challenges are still there: answering one frees a place.
  await t.notThrowsAsync(() => answer(a, ca, a1));
  const b2 = await client.challenge(b.request);
  await t.notThrowsAsync(() => answer(b, ca, b1));
  await t.notThrowsAsync(() => answer(b, ca, b2));
  t.regex(ca.accessLog(), /"status":503/, 'without --access-log the lines go to stdout');
});

test.serial('a ca.pem made before the limits is re-issued with the same key on start: certificates of either chain to both', async (t) => {
  // A CA state from before: its key, and a root certificate without limits (as openssl makes one).
  const stateDir = join(work, 'ca-old');
  await mkdir(stateDir, { mode: 0o700 });
  const keyPath = join(stateDir, 'ca-key.pem');
  t.is((await runProgram('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', keyPath])).code, 0);
  await chmod(keyPath, 0o600);
  const oldRoot = join(work, 'old-root.pem');
  const made = await runProgram('openssl', ['req', '-new', '-x509', '-key', keyPath, '-subj', '/CN=tpmvsc attestation CA', '-days', '30', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign', '-out', oldRoot]);
  t.is(made.code, 0, made.stderr);
  await writeFile(join(stateDir, 'ca.pem'), await readFile(oldRoot));

  const ca = await startCaProcess(stateDir, roots);
  cas.push(ca);
  t.regex(ca.log(), /ca\.pem carried no attestation limits: re-issued with the same key \(old one kept as .*ca-unlimited-.*\.pem\)/);
  const newRoot = join(stateDir, 'ca.pem');
  const limits = await runProgram('openssl', ['x509', '-in', newRoot, '-noout', '-ext', 'basicConstraints,keyUsage,extendedKeyUsage,nameConstraints']);
  t.regex(limits.stdout, /CA:TRUE, pathlen:1/);
  t.regex(limits.stdout, /Excluded:\s+DNS:\s+IP:0\.0\.0\.0\/0\.0\.0\.0/);
  t.is((await runProgram('openssl', ['x509', '-in', newRoot, '-noout', '-pubkey'])).stdout, (await runProgram('openssl', ['x509', '-in', oldRoot, '-noout', '-pubkey'])).stdout);

  const { certificate } = await enrollAikWithCa(b.vault, b.tpm, ca.url);
  const aikPem = join(work, 'aik-under-migrated.pem');
  await writeFile(aikPem, toPem(certificate));
  for (const root of [oldRoot, newRoot]) {
    const verified = await runProgram('openssl', ['verify', '-CAfile', root, aikPem]);
    t.is(verified.code, 0, verified.stdout + verified.stderr);
  }
  // A restart finds the limits and leaves ca.pem alone.
  await ca.stop();
  const again = await startCaProcess(stateDir, roots);
  cas.push(again);
  t.notRegex(again.log(), /re-issued/);
});

test.serial('tpmvsc-ca --help states the options, what a client is and the trust model; bad limits are usage errors', async (t) => {
  const help = await runProgram(process.execPath, [...projectProgram('ca/main'), '--help']);
  t.is(help.code, 0);
  for (const text of ['--access-log FILE', '--challenges-per-minute N', '--max-pending-per-ek N', '--max-pending N', 'A client is an EK', 'NEVER put it in a TLS or S/MIME trust store']) {
    t.true(help.stdout.includes(text), text);
  }
  const bad = await runProgram(process.execPath, [...projectProgram('ca/main'), '--state-dir', work, '--ek-roots', roots, '--max-pending', '0']);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /^tpmvsc-ca: --max-pending takes a whole number from 1 to 9999999, not 0 \(see tpmvsc-ca --help\)\n$/);
});
