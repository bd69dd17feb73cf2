/**
 * Verification of a card key attestation for relying parties:
 *
 *   slot certificate  --signed by-->  AIK certificate  --signed by-->  CA certificate
 *        (ATTEST F9)                   (object 5FFF01)                  (tpmvsc-ca's ca.pem; for AIK_ONLY
 *                                                                        the AIK certificate itself)
 * then the TPM's evidence inside the slot certificate (tpm_evidence.ts), and the attested key
 * itself against what the card makes (card_key_profile.ts). Checks, in order, each reported with
 * its result; the first failure ends the run and names the reason:
 *
 *   aik-chain        AIK certificate signed by the CA (or by itself), both valid now
 *   aik-key          the AIK's TPMT_PUBLIC (AIK certificate extension) holds the certificate's
 *                    key and is a restricted signing key bound to its TPM
 *   aik-limits       the AIK certificate (and the CA's) are limited to attestation
 *                    (attestation_limits.ts); older certificates without limits: a warning
 *   slot-signature   slot certificate signed by the AIK, valid now
 *   evidence         TPMS_ATTEST magic 0xFF544347 (TPM_GENERATED_VALUE), TPM_ST_ATTEST_CERTIFY,
 *                    signed by the AIK
 *   slot-and-serial  extraData = SHA-256("tpmvsc/attest\0" || slot || serial [|| policies]):
 *                    the TPM certified the key for the slot and card the evidence names; the
 *                    certificate's subject names the same slot; what the relying party expects
 *   key-match        the evidence's TPMT_PUBLIC filled with the certificate's key has the
 *                    attested name: the certificate's key is the certified TPM object
 *   key-attributes   exactly the attributes of a card key, fixedTPM | fixedParent |
 *                    sensitiveDataOrigin among them (generated in this TPM, cannot leave it)
 *   key-policy       authPolicy = the card's policy for generated keys
 *   key-parameters   type, size, nameAlg, scheme as the card makes them
 *   aik-trust        how the AIK's issuer came to trust it (certificate policy)
 */
import { timingSafeEqual, verify as verifySignature, X509Certificate } from 'node:crypto';
import * as asn1js from 'asn1js';
import { Reader, TPM_ALG, TPM_GENERATED_VALUE, TPM_ST, TPMA_OBJECT as A, objectName, parseAttest, publicKeyToNode, readPublic, type TpmPublic } from '../tpm/index.js';
import type { KeyAlgorithm } from '../applet/key_vault.js';
import type { SlotPinPolicy } from '../applet/key_slots.js';
import { AIK_REQUIRED_ATTRIBUTES } from '../vault/attestation_key.js';
import { AttestationError } from './attestation_error.js';
import { AIK_PATH_LENGTH, ROOT_PATH_LENGTH, missingAttestationLimits } from './attestation_limits.js';
import { attributeNames, cardKeyAlgorithm, describePolicy, expectedCardKey, GENERATED_IN_TPM, pinPolicyProtection, sameTemplate } from './card_key_profile.js';
import { decodedOid, extensionValue, policiesOf } from './certificate_builder.js';
import { OID_AIK_TPM_PUBLIC, OID_TPM_KEY_EVIDENCE, POLICY_OF_TRUST, type AikTrust } from './oids.js';
import { decodeKeyEvidence, qualifyingDataFor, withKey, type KeyEvidence } from './tpm_evidence.js';
import { slotCertificateCommonName } from './tpm_key_attestor.js';

export interface VerifyInput {
  slotCertificate: Uint8Array;
  aikCertificate: Uint8Array;
  /** The trusted CA certificate; for an AIK_ONLY card, the AIK certificate itself. */
  caCertificate: Uint8Array;
  /** Time of the check (default now). */
  at?: Date;
  /** The slot and card the relying party asked about: another one in the evidence is refused. */
  expect?: { slot?: number; serial?: number };
}

export type CheckResult = 'passed' | 'warning' | 'failed';

export interface VerifyCheck {
  /** Stable name of the check (list above). */
  check: string;
  result: CheckResult;
  /** What was verified, or why it failed, in words. */
  detail: string;
}

export interface AttestedKey {
  algorithm: KeyAlgorithm;
  /** The certified key's TPM name (hex). */
  name: string;
  attributes: string[];
  /** authPolicy (hex, empty for none) and what it is. */
  authPolicy: string;
  policy: string;
}

export interface VerifyReport {
  verified: boolean;
  /** Every check run, in order; when not verified the last one failed. */
  checks: VerifyCheck[];
  /** Why the attestation was refused (the failed check's detail). */
  reason?: string;
  slot?: number;
  serial?: number;
  /** The slot's policies as the card states them (evidence version 2). */
  pinPolicy?: SlotPinPolicy;
  touchPolicy?: number;
  key?: AttestedKey;
  /** How the AIK's issuer came to trust it, from the AIK certificate's policy. */
  aikTrust?: AikTrust | 'unknown';
  selfIssued: boolean;
  /** What no attestation can prove, whatever the checks say (docs/ATTESTATION.md). */
  notProven: string[];
}

/** A check that failed: its name and the reason. */
class Refusal extends Error {
  constructor(
    readonly check: string,
    reason: string,
  ) {
    super(reason);
  }
}

const refuse = (check: string, reason: string): never => {
  throw new Refusal(check, reason);
};

const NOT_PROVEN = [
  'that the card application made the key: a TPM never shows an authValue, so root on that machine can create a key from the card\'s template with a password it knows and have the AIK certify it',
  'the PIN policy: the TPM object is the same for never, once and always; the policy shown is what the card states',
  'that the machine was uncompromised when ATTEST ran: root can make the AIK sign any certificate (the chain\'s limits keep those out of TLS and S/MIME)',
];
const NOT_PROVEN_SELF_ISSUED = 'which TPM holds the key: a self-issued AIK certificate (AIK_ONLY) is vouched for by no one';

function parse(der: Uint8Array, what: string): X509Certificate {
  try {
    return new X509Certificate(der);
  } catch (e) {
    throw new AttestationError('BAD_INPUT', `${what} is not an X.509 certificate`, { cause: e });
  }
}

function checkValidity(check: string, certificate: X509Certificate, what: string, at: Date): void {
  if (at < new Date(certificate.validFrom) || at > new Date(certificate.validTo)) refuse(check, `${what} is not valid at ${at.toISOString()}`);
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function spkiOf(certificate: X509Certificate): Buffer {
  return certificate.publicKey.export({ format: 'der', type: 'spki' });
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const slotName = (slot: number): string => slot.toString(16).padStart(2, '0');

function aikPublicOf(der: Uint8Array): TpmPublic {
  const check = 'aik-key';
  const value = extensionValue(der, OID_AIK_TPM_PUBLIC);
  if (!value) refuse(check, 'the AIK certificate has no AIK TPM public-area extension');
  const parsed = asn1js.fromBER(new Uint8Array(value!).buffer as ArrayBuffer);
  if (parsed.offset === -1 || !(parsed.result instanceof asn1js.OctetString)) refuse(check, 'the AIK TPM public-area extension is malformed');
  try {
    const reader = new Reader(new Uint8Array((parsed.result as asn1js.OctetString).valueBlock.valueHexView));
    const area = readPublic(reader);
    reader.done('TPMT_PUBLIC');
    return area;
  } catch {
    return refuse(check, 'the AIK TPM public-area extension is not a TPMT_PUBLIC');
  }
}

/** The slot and card of the evidence, checked against extraData, the subject and the expectation. */
function checkSlotAndSerial(evidence: KeyEvidence, extraData: Uint8Array, slot: X509Certificate, aik: X509Certificate, input: VerifyInput): string {
  const check = 'slot-and-serial';
  if (!same(extraData, qualifyingDataFor(evidence.slot, evidence.serial, evidence.usage))) {
    refuse(check, 'the attestation extraData does not match the slot and serial (and policies) of the evidence');
  }
  const subject = /CN=([^\n,]*)/.exec(slot.subject)?.[1];
  if (subject !== slotCertificateCommonName(evidence.slot)) refuse(check, `the slot certificate's subject (${subject ?? 'no CN'}) does not name slot ${slotName(evidence.slot)} of the evidence`);
  // A self-issued AIK certificate names the card it was made for ("tpmvsc card <serial> AIK").
  const aikSerial = /CN=tpmvsc card (\d+) AIK/.exec(aik.subject)?.[1];
  if (aikSerial !== undefined && Number(aikSerial) !== evidence.serial) refuse(check, `the evidence names card ${evidence.serial}, the AIK certificate card ${aikSerial}`);
  const expect = input.expect ?? {};
  if (expect.slot !== undefined && expect.slot !== evidence.slot) refuse(check, `the evidence is for slot ${slotName(evidence.slot)}, not the expected ${slotName(expect.slot)}`);
  if (expect.serial !== undefined && expect.serial !== evidence.serial) refuse(check, `the evidence is for card ${evidence.serial}, not the expected ${expect.serial}`);
  const expected = expect.slot !== undefined || expect.serial !== undefined ? ' (as expected)' : '';
  return `the TPM certified the key for slot ${slotName(evidence.slot)} of card ${evidence.serial}${expected}, bound in TPM2_Certify's extraData`;
}

/** The attested key's attributes, policy and parameters against what the card makes. */
function checkCardKey(keyArea: TpmPublic, name: Uint8Array, evidence: KeyEvidence, pass: (check: string, detail: string) => void): AttestedKey {
  const algorithm = cardKeyAlgorithm(keyArea);
  if (!algorithm) return refuse('key-parameters', 'the key is not RSA-2048, ECC P-256 or ECC P-384: not a key the card makes');
  const expected = expectedCardKey(algorithm, keyArea.type === TPM_ALG.RSA ? keyArea.exponent || 65537 : undefined);
  const attributes = keyArea.objectAttributes;
  const names = attributeNames(attributes);
  if ((attributes & GENERATED_IN_TPM) !== GENERATED_IN_TPM) {
    const missing = attributeNames(GENERATED_IN_TPM & ~attributes).join(', ');
    refuse('key-attributes', `the key lacks ${missing}: not generated in this TPM, or able to leave it (an imported key lacks all three)`);
  }
  if (attributes !== expected.objectAttributes) {
    const extra = attributeNames(attributes & ~expected.objectAttributes);
    const lacking = attributeNames(expected.objectAttributes & ~attributes);
    const differences = [...extra.map((n) => `+${n}`), ...lacking.map((n) => `-${n}`)].join(' ');
    refuse('key-attributes', `the key's attributes (${names.join(', ')}) are not a card key's (${differences})`);
  }
  pass('key-attributes', `key attributes ${names.join(', ')}: generated in the TPM and cannot leave it`);

  const policy = describePolicy(keyArea.authPolicy);
  if (!same(keyArea.authPolicy, expected.authPolicy)) {
    refuse('key-policy', `the key's authPolicy (${keyArea.authPolicy.length ? hex(keyArea.authPolicy) : 'empty'}: ${policy}) is not the card's (${hex(expected.authPolicy)}: ${describePolicy(expected.authPolicy)})`);
  }
  const stated = evidence.usage ? `; ${pinPolicyProtection(evidence.usage.pinPolicy)} (as the card states it)` : '; the evidence states no PIN policy (made before tpmvsc stated it)';
  pass('key-policy', `authPolicy ${hex(keyArea.authPolicy)} (${policy}) is the card's, for every PIN policy${stated}`);

  if (!sameTemplate(keyArea, expected)) refuse('key-parameters', 'the key\'s type, nameAlg, scheme or symmetric parameters are not those the card uses');
  pass('key-parameters', `${algorithm === 'rsa2048' ? 'RSA-2048' : algorithm === 'eccp256' ? 'ECC P-256' : 'ECC P-384'}, nameAlg SHA-256, scheme NULL: the card's template`);
  return { algorithm, name: hex(name), attributes: names, authPolicy: hex(keyArea.authPolicy), policy };
}

/** Runs every check and reports each; never throws for an attestation that does not verify. */
export function checkAttestation(input: VerifyInput): VerifyReport {
  const at = input.at ?? new Date();
  const slot = parse(input.slotCertificate, 'the slot certificate');
  const aik = parse(input.aikCertificate, 'the AIK certificate');
  const ca = parse(input.caCertificate, 'the CA certificate');
  const selfIssued = Buffer.from(input.caCertificate).equals(Buffer.from(input.aikCertificate));
  const report: VerifyReport = { verified: false, checks: [], selfIssued, notProven: selfIssued ? [...NOT_PROVEN, NOT_PROVEN_SELF_ISSUED] : [...NOT_PROVEN] };
  const pass = (check: string, detail: string, result: CheckResult = 'passed'): void => void report.checks.push({ check, result, detail });
  try {
    // AIK certificate -> CA (or itself, for AIK_ONLY).
    if (!aik.checkIssued(ca) || !aik.verify(ca.publicKey)) refuse('aik-chain', selfIssued ? 'the self-issued AIK certificate is not signed by its own key' : 'the AIK certificate is not signed by the CA');
    checkValidity('aik-chain', ca, 'the CA certificate', at);
    checkValidity('aik-chain', aik, 'the AIK certificate', at);
    pass('aik-chain', selfIssued ? `AIK certificate is self-issued by the AIK (${aik.subject})` : `AIK certificate (${aik.subject}) is signed by the CA (${ca.subject})`);

    // The AIK is a restricted signing key bound to its TPM, and it is the certificate's key.
    const aikArea = aikPublicOf(input.aikCertificate);
    if (!publicKeyToNode(aikArea).export({ format: 'der', type: 'spki' }).equals(spkiOf(aik))) refuse('aik-key', 'the AIK TPM public area does not hold the AIK certificate\'s key');
    if ((aikArea.objectAttributes & AIK_REQUIRED_ATTRIBUTES) !== AIK_REQUIRED_ATTRIBUTES || aikArea.objectAttributes & A.decrypt) {
      refuse('aik-key', 'the AIK is not a restricted signing key with fixedTPM | fixedParent | sensitiveDataOrigin');
    }
    pass('aik-key', 'AIK is a TPM restricted signing key (fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign)');

    // Limits: certificates issued before they existed still verify, with a warning.
    const missing = [
      ...missingAttestationLimits(input.aikCertificate, AIK_PATH_LENGTH).map((m) => `AIK certificate: ${m}`),
      ...(selfIssued ? [] : missingAttestationLimits(input.caCertificate, ROOT_PATH_LENGTH).map((m) => `CA certificate: ${m}`)),
    ];
    if (missing.length === 0) pass('aik-limits', 'the chain is limited to attestation (pathLenConstraint, keyCertSign only, attestation EKUs, no DNS, IP or mail names)');
    else pass('aik-limits', `the chain lacks attestation limits (${missing.join('; ')}): it can vouch for TLS or mail certificates; re-enrol the card and never trust this CA in a TLS or S/MIME store`, 'warning');

    // Slot certificate -> AIK.
    if (!slot.checkIssued(aik) || !slot.verify(aik.publicKey)) refuse('slot-signature', 'the slot certificate is not signed by the AIK');
    checkValidity('slot-signature', slot, 'the slot certificate', at);
    pass('slot-signature', `slot certificate (${slot.subject}) is signed by the AIK`);

    // The TPM's evidence.
    const evidenceValue = extensionValue(input.slotCertificate, OID_TPM_KEY_EVIDENCE);
    if (!evidenceValue) refuse('evidence', 'the slot certificate carries no TPM evidence extension');
    let evidence: KeyEvidence;
    let attest: ReturnType<typeof parseAttest>;
    try {
      evidence = decodeKeyEvidence(evidenceValue!);
      attest = parseAttest(evidence.attest);
    } catch (e) {
      return fail(report, new Refusal('evidence', e instanceof AttestationError ? e.detail ?? e.message : 'the TPMS_ATTEST structure is malformed'));
    }
    if (attest.magic !== TPM_GENERATED_VALUE) refuse('evidence', 'the attestation does not start with TPM_GENERATED_VALUE (0xFF544347)');
    if (attest.type !== TPM_ST.ATTEST_CERTIFY || !attest.certified) refuse('evidence', 'the attestation is not a TPM2_Certify (TPM_ST_ATTEST_CERTIFY)');
    const signatureOk = aikArea.type === TPM_ALG.ECC || aikArea.type === TPM_ALG.RSA ? verifySignature('sha256', evidence.attest, aik.publicKey, evidence.signature) : false;
    if (!signatureOk) refuse('evidence', 'the TPM attestation is not signed by the AIK');
    pass('evidence', 'TPMS_ATTEST (magic 0xFF544347, TPM_ST_ATTEST_CERTIFY) is signed by the AIK');

    pass('slot-and-serial', checkSlotAndSerial(evidence, attest.extraData, slot, aik, input));
    report.slot = evidence.slot;
    report.serial = evidence.serial;
    if (evidence.usage) {
      report.pinPolicy = evidence.usage.pinPolicy;
      report.touchPolicy = evidence.usage.touchPolicy;
    }

    // The attested key: the certificate's key, and a key the card made.
    let keyArea: TpmPublic;
    try {
      keyArea = withKey(evidence.keyPublic, slot.publicKey);
    } catch (e) {
      return fail(report, new Refusal('key-match', e instanceof AttestationError ? e.detail ?? e.message : String(e)));
    }
    const name = objectName(keyArea);
    if (!same(name, attest.certified!.name)) refuse('key-match', 'the attested TPM name is not the name of the certificate\'s key');
    pass('key-match', `attested name ${hex(name)} is the TPM object of the certificate's public key`);
    report.key = checkCardKey(keyArea, name, evidence, pass);

    const policies = policiesOf(input.aikCertificate);
    const aikTrust = (Object.entries(POLICY_OF_TRUST).find(([, oid]) => policies.includes(decodedOid(oid)))?.[0] as AikTrust | undefined) ?? 'unknown';
    report.aikTrust = aikTrust;
    pass('aik-trust', `AIK issuance policy: ${aikTrust}`, aikTrust === 'unknown' ? 'warning' : 'passed');
    report.verified = true;
    return report;
  } catch (e) {
    if (e instanceof Refusal) return fail(report, e);
    throw e;
  }
}

function fail(report: VerifyReport, refusal: Refusal): VerifyReport {
  report.checks.push({ check: refusal.check, result: 'failed', detail: refusal.message });
  report.reason = refusal.message;
  return report;
}

/** An attestation that does not verify, with the report of what was checked. */
export class AttestationRefused extends AttestationError {
  constructor(readonly report: VerifyReport) {
    super('VERIFY_FAILED', report.reason ?? 'the attestation does not verify');
  }
}

/** checkAttestation, throwing AttestationRefused (an AttestationError) when it does not verify. */
export function verifyAttestation(input: VerifyInput): VerifyReport {
  const report = checkAttestation(input);
  if (!report.verified) throw new AttestationRefused(report);
  return report;
}
