/**
 * Verification of a card key attestation for relying parties:
 *
 *   slot certificate  --signed by-->  AIK certificate  --signed by-->  CA certificate
 *        (ATTEST F9)                   (object 5FFF01)                  (tpmvsc-ca's ca.pem; for AIK_ONLY
 *                                                                        the AIK certificate itself)
 * and the TPM evidence inside the slot certificate (tpm_evidence.ts):
 *   - TPMS_ATTEST magic 0xFF544347 (TPM_GENERATED_VALUE), type TPM_ST_ATTEST_CERTIFY;
 *   - extraData = SHA-256("tpmvsc/attest\0" || slot || serial);
 *   - attested name = nameAlg || H(keyPublic with the certificate's public key as unique);
 *   - keyPublic attributes fixedTPM | fixedParent | sensitiveDataOrigin (generated in, and
 *     never leaving, the TPM);
 *   - signature over TPMS_ATTEST by the AIK (the AIK certificate's key), whose TPMT_PUBLIC
 *     (extension in the AIK certificate) is a restricted signing key bound to its TPM.
 * Every check that fails throws AttestationError('VERIFY_FAILED') naming the check.
 */
import { timingSafeEqual, verify as verifySignature, X509Certificate } from 'node:crypto';
import { Reader, TPM_ALG, TPM_GENERATED_VALUE, TPM_ST, TPMA_OBJECT as A, objectName, parseAttest, publicKeyToNode, readPublic, type TpmPublic } from '../tpm/index.js';
import { AIK_REQUIRED_ATTRIBUTES } from '../vault/attestation_key.js';
import { AttestationError } from './attestation_error.js';
import { decodedOid, extensionValue, policiesOf } from './certificate_builder.js';
import { OID_AIK_TPM_PUBLIC, OID_TPM_KEY_EVIDENCE, POLICY_OF_TRUST, type AikTrust } from './oids.js';
import { decodeKeyEvidence, qualifyingDataFor, withKey } from './tpm_evidence.js';
import * as asn1js from 'asn1js';

export interface VerifyInput {
  slotCertificate: Uint8Array;
  aikCertificate: Uint8Array;
  /** The trusted CA certificate; for an AIK_ONLY card, the AIK certificate itself. */
  caCertificate: Uint8Array;
  /** Time of the check (default now). */
  at?: Date;
}

export interface VerifyReport {
  /** One line per check that passed, in order. */
  checks: string[];
  slot: number;
  serial: number;
  /** The certified key's TPM name (hex). */
  keyName: string;
  /** How the AIK's issuer came to trust it, from the AIK certificate's policy. */
  aikTrust: AikTrust | 'unknown';
  selfIssued: boolean;
}

const BOUND_TO_TPM = A.fixedTPM | A.fixedParent | A.sensitiveDataOrigin;

function fail(what: string, cause?: unknown): never {
  throw new AttestationError('VERIFY_FAILED', what, cause === undefined ? undefined : { cause });
}

function parse(der: Uint8Array, what: string): X509Certificate {
  try {
    return new X509Certificate(der);
  } catch (e) {
    throw new AttestationError('BAD_INPUT', `${what} is not an X.509 certificate`, { cause: e });
  }
}

function checkValidity(certificate: X509Certificate, what: string, at: Date): void {
  if (at < new Date(certificate.validFrom) || at > new Date(certificate.validTo)) fail(`${what} is not valid at ${at.toISOString()}`);
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

function spkiOf(certificate: X509Certificate): Buffer {
  return certificate.publicKey.export({ format: 'der', type: 'spki' });
}

function aikPublicOf(der: Uint8Array): TpmPublic {
  const value = extensionValue(der, OID_AIK_TPM_PUBLIC);
  if (!value) fail('the AIK certificate has no AIK TPM public-area extension');
  const parsed = asn1js.fromBER(new Uint8Array(value).buffer as ArrayBuffer);
  if (parsed.offset === -1 || !(parsed.result instanceof asn1js.OctetString)) fail('the AIK TPM public-area extension is malformed');
  try {
    const reader = new Reader(new Uint8Array(parsed.result.valueBlock.valueHexView));
    const area = readPublic(reader);
    reader.done('TPMT_PUBLIC');
    return area;
  } catch (e) {
    return fail('the AIK TPM public-area extension is not a TPMT_PUBLIC', e);
  }
}

export function verifyAttestation(input: VerifyInput): VerifyReport {
  const at = input.at ?? new Date();
  const checks: string[] = [];
  const slot = parse(input.slotCertificate, 'the slot certificate');
  const aik = parse(input.aikCertificate, 'the AIK certificate');
  const ca = parse(input.caCertificate, 'the CA certificate');
  const selfIssued = Buffer.from(input.caCertificate).equals(Buffer.from(input.aikCertificate));

  // 1. AIK certificate -> CA (or itself, for AIK_ONLY).
  if (!aik.checkIssued(ca) || !aik.verify(ca.publicKey)) fail(selfIssued ? 'the self-issued AIK certificate is not signed by its own key' : 'the AIK certificate is not signed by the CA');
  checkValidity(ca, 'the CA certificate', at);
  checkValidity(aik, 'the AIK certificate', at);
  checks.push(selfIssued ? `AIK certificate is self-issued by the AIK (${aik.subject})` : `AIK certificate (${aik.subject}) is signed by the CA (${ca.subject})`);

  // 2. The AIK is a restricted signing key bound to its TPM, and it is the certificate's key.
  const aikArea = aikPublicOf(input.aikCertificate);
  if (!publicKeyToNode(aikArea).export({ format: 'der', type: 'spki' }).equals(spkiOf(aik))) fail('the AIK TPM public area does not hold the AIK certificate\'s key');
  if ((aikArea.objectAttributes & AIK_REQUIRED_ATTRIBUTES) !== AIK_REQUIRED_ATTRIBUTES || aikArea.objectAttributes & A.decrypt) {
    fail('the AIK is not a restricted signing key with fixedTPM | fixedParent | sensitiveDataOrigin');
  }
  checks.push('AIK is a TPM restricted signing key (fixedTPM, fixedParent, sensitiveDataOrigin, restricted, sign)');

  // 3. Slot certificate -> AIK.
  if (!slot.checkIssued(aik) || !slot.verify(aik.publicKey)) fail('the slot certificate is not signed by the AIK');
  checkValidity(slot, 'the slot certificate', at);
  checks.push(`slot certificate (${slot.subject}) is signed by the AIK`);

  // 4. The TPM's evidence.
  const evidenceValue = extensionValue(input.slotCertificate, OID_TPM_KEY_EVIDENCE);
  if (!evidenceValue) fail('the slot certificate carries no TPM evidence extension');
  const evidence = decodeKeyEvidence(evidenceValue);
  let attest;
  try {
    attest = parseAttest(evidence.attest);
  } catch (e) {
    fail('the TPMS_ATTEST structure is malformed', e);
  }
  if (attest.magic !== TPM_GENERATED_VALUE) fail('the attestation does not start with TPM_GENERATED_VALUE (0xFF544347)');
  if (attest.type !== TPM_ST.ATTEST_CERTIFY || !attest.certified) fail('the attestation is not a TPM2_Certify (TPM_ST_ATTEST_CERTIFY)');
  const aikKey = aik.publicKey;
  const signatureOk = aikArea.type === TPM_ALG.ECC || aikArea.type === TPM_ALG.RSA ? verifySignature('sha256', evidence.attest, aikKey, evidence.signature) : false;
  if (!signatureOk) fail('the TPM attestation is not signed by the AIK');
  checks.push('TPMS_ATTEST (magic 0xFF544347, TPM_ST_ATTEST_CERTIFY) is signed by the AIK');
  if (!same(attest.extraData, qualifyingDataFor(evidence.slot, evidence.serial))) fail('the attestation extraData does not match the slot and serial');
  const keyArea = withKey(evidence.keyPublic, slot.publicKey);
  const name = objectName(keyArea);
  if (!same(name, attest.certified.name)) fail('the attested TPM name is not the name of the certificate\'s key');
  checks.push(`attested name ${Buffer.from(name).toString('hex')} is the certificate's public key`);
  if ((keyArea.objectAttributes & BOUND_TO_TPM) !== BOUND_TO_TPM) fail('the key is not fixedTPM | fixedParent | sensitiveDataOrigin (not generated in the TPM)');
  checks.push('key attributes: fixedTPM, fixedParent, sensitiveDataOrigin (generated in the TPM, cannot leave it)');

  const policies = policiesOf(input.aikCertificate);
  const aikTrust = (Object.entries(POLICY_OF_TRUST).find(([, oid]) => policies.includes(decodedOid(oid)))?.[0] as AikTrust | undefined) ?? 'unknown';
  checks.push(`AIK issuance policy: ${aikTrust}`);
  return { checks, slot: evidence.slot, serial: evidence.serial, keyName: Buffer.from(name).toString('hex'), aikTrust, selfIssued };
}
