/**
 * AIK_AND_CERT through the high-range ECC P-384 EK (TCG template H-3, NV 0x01C00016, persistent
 * 0x81010016): a swtpm provisioned by swtpm_setup whose RSA EK certificate index (0x01C00002) is
 * undefined with platform auth, so readEndorsementKey falls back to the P-384 EK; the real
 * tpmvsc-ca runs MakeCredential (ECDH + KDFe on P-384, SHA-384) and the vault activates the
 * credential through PolicySecret(TPM_RH_ENDORSEMENT) + PolicyOR(PolicyA, PolicyC) in a
 * SHA-384 session.
 */
import test from 'ava';
import { randomBytes, X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TPM_ALG, TPM_ECC, TPM_RH, Tpm, marshalPublic, type TpmPublic } from '../../tpm/index.js';
import { TpmVault } from '../../vault/tpm_vault.js';
import { enrollAikWithCa } from '../../attestation/aik_certificate.js';
import { CaClient } from '../../attestation/ca_client.js';
import { EK_POLICY_B_SHA384, marshalEkPublic, readEndorsementKey, type EndorsementKey } from '../../attestation/endorsement.js';
import { policiesOf, decodedOid } from '../../attestation/certificate_builder.js';
import { OID_POLICY_EK_CHAIN } from '../../attestation/oids.js';
import { startSwtpm, type SwtpmInstance } from '../helpers/swtpm.js';
import { createLocalCa, provisionEkState } from '../helpers/swtpm_ek.js';
import { startCaProcess, type CaProcess } from '../helpers/attestation_ca.js';
import { encode, relaxDictionaryAttack } from './vault_fixture.js';

const RSA_EK_CERT_INDEX = 0x01c00002;
const P384_EK_HANDLE = 0x81010016;

let work: string;
let ca: CaProcess | undefined;
let sw: SwtpmInstance | undefined;
let tpm: Tpm;
let vault: TpmVault | undefined;

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'tpmvsc-ek384-'));
  const manufacturer = await createLocalCa(work, 'manufacturer');
  const stateDir = await provisionEkState(work, manufacturer);
  ca = await startCaProcess(join(work, 'ca-state'), manufacturer.rootsDir);
  sw = await startSwtpm({ stateDir });
  tpm = await Tpm.open({ tcti: sw.tcti });
  await relaxDictionaryAttack(tpm);
  // A TPM without an RSA EK certificate (the platform created the index; empty platformAuth).
  await tpm.nvUndefineSpace(RSA_EK_CERT_INDEX, { hierarchy: TPM_RH.PLATFORM, auth: new Uint8Array(0) });
  vault = await TpmVault.create(tpm, { pin: encode('12345678'), puk: undefined, managementKey: { algorithm: 'aes128', key: new Uint8Array(randomBytes(16)) } });
  await vault.createAttestationKey();
});

test.after.always(async () => {
  await ca?.stop();
  await vault?.destroy().catch(() => undefined);
  await tpm?.close().catch(() => undefined);
  await sw?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

function checkP384Ek(t: { is: (a: unknown, b: unknown) => void; deepEqual: (a: unknown, b: unknown) => void }, ek: EndorsementKey): void {
  const area = ek.publicArea as TpmPublic & { curveId?: number };
  t.is(area.type, TPM_ALG.ECC);
  t.is(area.curveId, TPM_ECC.NIST_P384);
  t.is(area.nameAlg, TPM_ALG.SHA384);
  t.deepEqual(area.authPolicy, EK_POLICY_B_SHA384);
  t.is(new X509Certificate(ek.certificate).publicKey.asymmetricKeyDetails?.namedCurve, 'secp384r1');
  t.is(ek.source.policy?.hashAlg, TPM_ALG.SHA384);
}

test.serial('without an RSA EK certificate the P-384 EK (persistent 0x81010016) is chosen', async (t) => {
  const ek = await readEndorsementKey(tpm);
  checkP384Ek(t, ek);
  t.true('handle' in ek.source && ek.source.handle === P384_EK_HANDLE);
});

test.serial('AIK_AND_CERT through the P-384 EK: activation succeeds and the CA certifies the AIK', async (t) => {
  const { certificate, caCertificate } = await enrollAikWithCa(vault!, tpm, ca!.url);
  const aik = new X509Certificate(certificate);
  t.true(aik.verify(new X509Certificate(caCertificate).publicKey));
  t.true(policiesOf(certificate).includes(decodedOid(OID_POLICY_EK_CHAIN)));
});

test.serial('the high-range EK refuses a plain PolicySecret session (the PolicyOR step is needed)', async (t) => {
  const ek = await readEndorsementKey(tpm);
  const client = new CaClient(ca!.url);
  const challenge = await client.challenge({
    ekCertificate: Buffer.from(ek.certificate).toString('base64'),
    ekPublic: Buffer.from(marshalEkPublic(ek)).toString('base64'),
    aikPublic: Buffer.from(marshalPublic(vault!.attestationKey()!.publicArea)).toString('base64'),
  });
  const blob = new Uint8Array(Buffer.from(challenge.credentialBlob, 'base64'));
  const secret = new Uint8Array(Buffer.from(challenge.encryptedSecret, 'base64'));
  const { policy: _policy, ...withoutOr } = ek.source;
  await t.throwsAsync(() => vault!.activateCredential(withoutOr, blob, secret));
  await t.throwsAsync(() => vault!.activateCredential({ ...withoutOr, policy: { hashAlg: TPM_ALG.SHA384 } }, blob, secret));
  // The full policy opens it.
  const credential = await vault!.activateCredential(ek.source, blob, secret);
  await t.notThrowsAsync(() => client.certificate({ challengeId: challenge.challengeId, credential: Buffer.from(credential).toString('base64') }));
});

test.serial('without the persistent EK, the P-384 EK is re-created from the H-3 template and still activates', async (t) => {
  const persistent = await tpm.readPublic(P384_EK_HANDLE);
  await tpm.evictControl({ handle: P384_EK_HANDLE, name: persistent.name }, P384_EK_HANDLE, { auth: new Uint8Array(0) });
  const ek = await readEndorsementKey(tpm);
  checkP384Ek(t, ek);
  t.true('template' in ek.source);
  await t.notThrowsAsync(() => enrollAikWithCa(vault!, tpm, ca!.url));
});
