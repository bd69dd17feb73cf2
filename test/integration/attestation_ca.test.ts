/**
 * AIK_AND_CERT against the real tpmvsc-ca program and swtpms provisioned with EK certificates
 * (swtpm_setup + swtpm_localca): credential activation succeeds only for an AIK in the EK's
 * TPM; untrusted EKs, replays and tampered answers are refused; nothing is issued for them.
 */
import test from 'ava';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { marshalPublic } from '../../tpm/index.js';
import { enrollAikWithCa } from '../../attestation/aik_certificate.js';
import { AttestationError } from '../../attestation/attestation_error.js';
import { CaClient } from '../../attestation/ca_client.js';
import { marshalEkPublic, readEndorsementKey } from '../../attestation/endorsement.js';
import { policiesOf, decodedOid } from '../../attestation/certificate_builder.js';
import { OID_POLICY_EK_CHAIN } from '../../attestation/oids.js';
import { createLocalCa, provisionEkState } from '../helpers/swtpm_ek.js';
import { startCaProcess, type CaProcess } from '../helpers/attestation_ca.js';
import { startAttestingMachine, type AttestingMachine } from './vault_fixture.js';

type Machine = AttestingMachine;

let work: string;
let ca: CaProcess | undefined;
const machines: Machine[] = [];
let trusted: Machine;
let other: Machine;
let untrusted: Machine;

async function machine(stateDir: string): Promise<Machine> {
  const m = await startAttestingMachine(stateDir);
  machines.push(m);
  return m;
}

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'tpmvsc-attest-'));
  const manufacturer = await createLocalCa(work, 'manufacturer');
  const stranger = await createLocalCa(work, 'stranger');
  const [a, b, c] = await Promise.all([provisionEkState(work, manufacturer), provisionEkState(work, manufacturer), provisionEkState(work, stranger)]);
  ca = await startCaProcess(join(work, 'ca-state'), manufacturer.rootsDir);
  trusted = await machine(a);
  other = await machine(b);
  untrusted = await machine(c);
});

test.after.always(async () => {
  await ca?.stop();
  for (const m of machines) {
    await m.vault.destroy().catch(() => undefined);
    await m.tpm.close().catch(() => undefined);
    await m.sw.stop();
  }
  if (work) await rm(work, { recursive: true, force: true });
});

async function issuedLines(): Promise<string[]> {
  try {
    return (await readFile(join(ca!.stateDir, 'issued.jsonl'), 'utf8')).split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

test.serial('the CA created its key (0600) and certificate on first start', async (t) => {
  t.is((await stat(join(ca!.stateDir, 'ca-key.pem'))).mode & 0o777, 0o600);
  t.true(new X509Certificate(await readFile(join(ca!.stateDir, 'ca.pem'))).ca);
});

test.serial('AIK_AND_CERT: the TPM activates the credential and the CA certifies the AIK (EK chain policy)', async (t) => {
  const before = (await issuedLines()).length;
  const { certificate, caCertificate } = await enrollAikWithCa(trusted.vault, trusted.tpm, ca!.url);
  const aik = new X509Certificate(certificate);
  t.true(aik.verify(new X509Certificate(caCertificate).publicKey));
  t.true(policiesOf(certificate).includes(decodedOid(OID_POLICY_EK_CHAIN)));
  const lines = await issuedLines();
  t.is(lines.length, before + 1);
  t.is(JSON.parse(lines.at(-1)!).trust, 'ek-chain');
});

test.serial('an EK certificate from an untrusted manufacturer is refused', async (t) => {
  const before = (await issuedLines()).length;
  const error = await t.throwsAsync(() => enrollAikWithCa(untrusted.vault, untrusted.tpm, ca!.url), { instanceOf: AttestationError });
  t.is(error?.reason, 'CA_REFUSED');
  t.regex(error!.message, /does not chain to a trusted TPM manufacturer root/);
  t.is((await issuedLines()).length, before);
});

test.serial('an AIK of another TPM cannot be certified with this EK: activation fails, nothing issued', async (t) => {
  const before = (await issuedLines()).length;
  const client = new CaClient(ca!.url);
  const ekA = await readEndorsementKey(trusted.tpm);
  const aikB = other.vault.attestationKey()!;
  const challenge = await client.challenge({
    ekCertificate: Buffer.from(ekA.certificate).toString('base64'),
    ekPublic: Buffer.from(marshalEkPublic(ekA)).toString('base64'),
    aikPublic: Buffer.from(marshalPublic(aikB.publicArea)).toString('base64'),
  });
  const blob = new Uint8Array(Buffer.from(challenge.credentialBlob, 'base64'));
  const secret = new Uint8Array(Buffer.from(challenge.encryptedSecret, 'base64'));
  // TPM B holds the AIK but not EK A: its own EK cannot open the secret.
  const ekB = await readEndorsementKey(other.tpm);
  await t.throwsAsync(() => other.vault.activateCredential(ekB.source, blob, secret));
  // TPM A holds EK A, but its AIK is another key: the integrity check over the AIK name fails.
  await t.throwsAsync(() => trusted.vault.activateCredential(ekA.source, blob, secret));
  // Guessing the credential does not help.
  await t.throwsAsync(() => client.certificate({ challengeId: challenge.challengeId, credential: randomBytes(32).toString('base64') }), { message: /wrong credential/ });
  t.is((await issuedLines()).length, before);
});

test.serial('replayed and tampered round trips are refused', async (t) => {
  const client = new CaClient(ca!.url);
  const ek = await readEndorsementKey(trusted.tpm);
  const aik = trusted.vault.attestationKey()!;
  const request = {
    ekCertificate: Buffer.from(ek.certificate).toString('base64'),
    ekPublic: Buffer.from(marshalEkPublic(ek)).toString('base64'),
    aikPublic: Buffer.from(marshalPublic(aik.publicArea)).toString('base64'),
  };
  // A tampered AIK public area (decrypt bit set: not a pure signing key) is refused up front.
  const tamperedAik = new Uint8Array(Buffer.from(request.aikPublic, 'base64'));
  tamperedAik[5]! |= 0x02; // TPMT_PUBLIC: type u16, nameAlg u16, objectAttributes u32: bit 17 (decrypt) is in byte 5
  await t.throwsAsync(() => client.challenge({ ...request, aikPublic: Buffer.from(tamperedAik).toString('base64') }), { message: /restricted signing key/ });
  // An ekPublic that is not the certificate's key.
  const otherEk = await readEndorsementKey(other.tpm);
  await t.throwsAsync(() => client.challenge({ ...request, ekPublic: Buffer.from(marshalEkPublic(otherEk)).toString('base64') }), { message: /not the key of the EK certificate/ });
  // A tampered credential blob: the TPM's integrity check refuses it.
  const challenge = await client.challenge(request);
  const blob = new Uint8Array(Buffer.from(challenge.credentialBlob, 'base64'));
  blob[blob.length - 1]! ^= 0x01;
  await t.throwsAsync(() => trusted.vault.activateCredential(ek.source, blob, new Uint8Array(Buffer.from(challenge.encryptedSecret, 'base64'))));
  // The right answer once, then the same answer again (replay).
  const fresh = await client.challenge(request);
  const credential = await trusted.vault.activateCredential(ek.source, new Uint8Array(Buffer.from(fresh.credentialBlob, 'base64')), new Uint8Array(Buffer.from(fresh.encryptedSecret, 'base64')));
  const answer = { challengeId: fresh.challengeId, credential: Buffer.from(credential).toString('base64') };
  await t.notThrowsAsync(() => client.certificate(answer));
  await t.throwsAsync(() => client.certificate(answer), { message: /unknown or already used challenge/ });
  // Garbage requests get 4xx with a message.
  const response = await fetch(new URL('/v1/challenge', ca!.url), { method: 'POST', body: 'not json' });
  t.is(response.status, 400);
  t.regex(((await response.json()) as { error: string }).error, /not JSON/);
});

test.serial('an unreachable CA is a clear typed error', async (t) => {
  const error = await t.throwsAsync(() => enrollAikWithCa(trusted.vault, trusted.tpm, 'http://127.0.0.1:1/'), { instanceOf: AttestationError });
  t.is(error?.reason, 'CA_UNREACHABLE');
});
