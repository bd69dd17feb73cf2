/**
 * AIK_ONLY attestation on a real swtpm: the card's AIK self-issues its certificate, ATTEST
 * certifies generated keys with TPM2_Certify, and verifyAttestation accepts exactly the
 * untampered chain.
 */
import test from 'ava';
import { randomBytes, X509Certificate } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { TpmVault } from '../../vault/tpm_vault.js';
import { aikSubjectPublicKey, selfIssueAikCertificate, subjectCommonName } from '../../attestation/aik_certificate.js';
import { TpmKeyAttestor, slotCertificateCommonName } from '../../attestation/tpm_key_attestor.js';
import { verifyAttestation } from '../../attestation/verify.js';
import { AttestationError } from '../../attestation/attestation_error.js';
import { OID_TPM_KEY_EVIDENCE } from '../../attestation/oids.js';
import { decodeKeyEvidence, encodeKeyEvidence } from '../../attestation/tpm_evidence.js';
import { buildCertificate, decodedOid, extensionValue } from '../../attestation/certificate_builder.js';
import { encode, nodePublicKey, startTpm, stopTpm, type TpmFixture } from './vault_fixture.js';

let fixture: TpmFixture | undefined;
let vault: TpmVault;
let aikCertificate: Uint8Array;
const SERIAL = 12345678;

test.before(async () => {
  fixture = await startTpm();
  vault = await TpmVault.create(fixture.tpm, {
    pin: encode('24681357'),
    puk: encode('11223344'),
    managementKey: { algorithm: 'aes256', key: new Uint8Array(randomBytes(32)) },
  });
  await vault.createAttestationKey();
  aikCertificate = await selfIssueAikCertificate(vault, SERIAL);
});

test.after.always(async () => {
  await stopTpm(fixture);
});

function attestor(): TpmKeyAttestor {
  return new TpmKeyAttestor(vault, () => aikCertificate);
}

test.serial('the self-issued AIK certificate verifies with its own key and names the AIK', (t) => {
  const certificate = new X509Certificate(aikCertificate);
  t.true(certificate.verify(certificate.publicKey));
  t.true(certificate.ca);
  t.regex(certificate.subject, /tpmvsc card 12345678 AIK/);
});

for (const [algorithm, authorization] of [['eccp256', 'pin'], ['eccp384', 'none'], ['rsa2048', 'pin']] as const) {
  test.serial(`${algorithm} (${authorization}): attested without the PIN, and the chain verifies`, async (t) => {
    vault.lock();
    const key = await vault.generateKey(algorithm, authorization);
    const slotCertificate = await attestor().attest({ slot: 0x9a, key, pinPolicy: 'once', touchPolicy: 1, serial: SERIAL });
    t.is(slotCertificate[0], 0x30);
    const report = verifyAttestation({ slotCertificate, aikCertificate, caCertificate: aikCertificate });
    t.is(report.slot, 0x9a);
    t.is(report.serial, SERIAL);
    t.true(report.selfIssued);
    t.is(report.aikTrust, 'self-issued');
    t.true(report.checks.some(({ result, detail }) => result === 'passed' && detail.includes('fixedTPM')));
  });
}

test.serial('imported keys are refused by the vault', async (t) => {
  const key = await vault.importKey({ algorithm: 'eccp256', d: new Uint8Array(randomBytes(32)) }, 'none');
  await t.throwsAsync(() => attestor().attest({ slot: 0x9c, key, pinPolicy: 'once', touchPolicy: 1, serial: SERIAL }));
});

/** Re-signs nothing: replaces the evidence extension's bytes in place (the signature then breaks too). */
function replaceEvidence(der: Uint8Array, change: (value: Uint8Array) => Uint8Array): Uint8Array {
  const certificate = pkijs.Certificate.fromBER(new Uint8Array(der).buffer as ArrayBuffer);
  const extension = certificate.extensions!.find((e) => e.extnID === decodedOid(OID_TPM_KEY_EVIDENCE))!;
  extension.extnValue = new asn1js.OctetString({ valueHex: new Uint8Array(change(new Uint8Array(extension.extnValue.valueBlock.valueHexView))).buffer as ArrayBuffer });
  certificate.tbsView = new Uint8Array(certificate.encodeTBS().toBER());
  return new Uint8Array(certificate.toSchema(false).toBER());
}

test.serial('tampered slot certificate, evidence or chain is refused', async (t) => {
  const key = await vault.generateKey('eccp256', 'none');
  const slotCertificate = await attestor().attest({ slot: 0x9c, key, pinPolicy: 'once', touchPolicy: 1, serial: SERIAL });
  const refused = (input: { slotCertificate: Uint8Array; aikCertificate: Uint8Array; caCertificate: Uint8Array }, pattern: RegExp): void => {
    const error = t.throws(() => verifyAttestation(input));
    t.true(error instanceof AttestationError, String(error));
    t.regex(error!.message, pattern);
  };
  // One flipped bit in the signed certificate body.
  const flipped = Uint8Array.from(slotCertificate);
  flipped[Math.floor(flipped.length / 2)]! ^= 0x01;
  t.throws(() => verifyAttestation({ slotCertificate: flipped, aikCertificate, caCertificate: aikCertificate }));
  // Evidence with another serial: the certificate signature breaks first.
  const evidence = decodeKeyEvidence(extensionValue(slotCertificate, OID_TPM_KEY_EVIDENCE)!);
  const otherSerial = replaceEvidence(slotCertificate, () => encodeKeyEvidence({ ...evidence, serial: SERIAL + 1 }));
  refused({ slotCertificate: otherSerial, aikCertificate, caCertificate: aikCertificate }, /not signed by the AIK/);
  // Another card's AIK as the trust anchor.
  const other = await TpmVault.create(fixture!.tpm, {
    pin: encode('24681357'),
    puk: undefined,
    managementKey: { algorithm: 'aes128', key: new Uint8Array(randomBytes(16)) },
  });
  try {
    await other.createAttestationKey();
    t.notDeepEqual(Buffer.from(other.attestationKey()!.name), Buffer.from(vault.attestationKey()!.name), 'two cards have different AIKs');
    const otherAik = await selfIssueAikCertificate(other, SERIAL);
    refused({ slotCertificate, aikCertificate: otherAik, caCertificate: otherAik }, /not signed by the AIK/);
    refused({ slotCertificate, aikCertificate, caCertificate: otherAik }, /not signed by the CA/);
  } finally {
    await other.destroy();
  }
});

test.serial('evidence checks: a forged TPMS_ATTEST or evidence of another key is refused, even when the AIK signs the certificate', async (t) => {
  const keyA = await vault.generateKey('eccp256', 'none');
  const keyB = await vault.generateKey('eccp256', 'none');
  const certificateA = await attestor().attest({ slot: 0x9d, key: keyA, pinPolicy: 'once', touchPolicy: 1, serial: SERIAL });
  const evidenceA = decodeKeyEvidence(extensionValue(certificateA, OID_TPM_KEY_EVIDENCE)!);
  const spkiB = new Uint8Array(nodePublicKey(keyB.publicKey).export({ format: 'der', type: 'spki' }));
  const issue = (evidence: Uint8Array, subjectPublicKey: Uint8Array): Promise<Uint8Array> =>
    buildCertificate(
      {
        subjectCommonName: slotCertificateCommonName(0x9d),
        issuerCommonName: subjectCommonName(aikCertificate),
        subjectPublicKey,
        issuerPublicKey: aikSubjectPublicKey(vault),
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 3_600_000),
        role: 'slot',
        extensions: [{ oid: OID_TPM_KEY_EVIDENCE, critical: false, value: evidence }],
      },
      (tbs) => vault.signWithAttestationKey(tbs),
    );
  const check = async (evidence: Uint8Array, spki: Uint8Array, pattern: RegExp): Promise<void> => {
    const slotCertificate = await issue(evidence, spki);
    const error = t.throws(() => verifyAttestation({ slotCertificate, aikCertificate, caCertificate: aikCertificate }));
    t.regex(error?.message ?? '', pattern);
  };
  // Control: the same re-issue with A's own key verifies.
  const control = await issue(encodeKeyEvidence(evidenceA), new Uint8Array(nodePublicKey(keyA.publicKey).export({ format: 'der', type: 'spki' })));
  t.is(verifyAttestation({ slotCertificate: control, aikCertificate, caCertificate: aikCertificate }).slot, 0x9d);
  // A's evidence in a certificate for B.
  await check(encodeKeyEvidence(evidenceA), spkiB, /attested TPM name/);
  // A TPMS_ATTEST with one byte changed (clock): the AIK signature over it breaks.
  const forged = Uint8Array.from(evidenceA.attest);
  forged[forged.length - 40]! ^= 0x01;
  await check(encodeKeyEvidence({ ...evidenceA, attest: forged }), new Uint8Array(nodePublicKey(keyA.publicKey).export({ format: 'der', type: 'spki' })), /not signed by the AIK/);
  // The evidence claims another slot: extraData no longer matches.
  await check(encodeKeyEvidence({ ...evidenceA, slot: 0x9a }), new Uint8Array(nodePublicKey(keyA.publicKey).export({ format: 'der', type: 'spki' })), /extraData/);
  // The key public area claims attributes the TPM did not certify (name changes).
  const loosened = { ...evidenceA, keyPublic: { ...evidenceA.keyPublic, objectAttributes: evidenceA.keyPublic.objectAttributes & ~0x2 } };
  await check(encodeKeyEvidence(loosened), new Uint8Array(nodePublicKey(keyA.publicKey).export({ format: 'der', type: 'spki' })), /attested TPM name/);
  // Evidence signature of another structure: garbage signature.
  await check(encodeKeyEvidence({ ...evidenceA, signature: new Uint8Array(randomBytes(70)) }), new Uint8Array(nodePublicKey(keyA.publicKey).export({ format: 'der', type: 'spki' })), /not signed by the AIK/);
});
