/**
 * The AIK certificate of a card (PIV object 5FFF01, the certificate of "slot F9"):
 * - AIK_ONLY: self-issued, signed by the AIK itself in the TPM (TPM2_Hash ticket + Sign);
 * - AIK_AND_CERT: issued by the attestation CA after TCG credential activation
 *   (ca_protocol.ts): the CA encrypts a credential to the TPM's EK for the AIK's name, and
 *   only this TPM, holding both, can release it.
 */
import { X509Certificate } from 'node:crypto';
import * as pkijs from 'pkijs';
import { marshalPublic, publicKeyToNode, type Tpm } from '../tpm/index.js';
import type { TpmVault } from '../vault/tpm_vault.js';
import { concatBytes, decodeTlvs, findTlv, tlv } from '../applet/tlv.js';
import { AttestationError } from './attestation_error.js';
import { buildCertificate } from './certificate_builder.js';
import { CaClient } from './ca_client.js';
import { marshalEkPublic, readEndorsementKey } from './endorsement.js';
import { OID_AIK_TPM_PUBLIC, POLICY_OF_TRUST } from './oids.js';
import { certificatePolicies } from './certificate_builder.js';
import { AIK_PATH_LENGTH } from './attestation_limits.js';

/** What the AIK code needs of the vault. */
export type AttestationVault = Pick<TpmVault, 'attestationKey' | 'signWithAttestationKey' | 'certifyKey' | 'activateCredential'>;

const YEAR_MS = 365.25 * 24 * 3600 * 1000;

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');
const unb64 = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'base64'));

function aikOf(vault: AttestationVault): NonNullable<ReturnType<AttestationVault['attestationKey']>> {
  const aik = vault.attestationKey();
  if (!aik) throw new AttestationError('BAD_INPUT', 'the card has no attestation key');
  return aik;
}

/** DER SubjectPublicKeyInfo of the card's AIK. */
export function aikSubjectPublicKey(vault: AttestationVault): Uint8Array {
  return new Uint8Array(publicKeyToNode(aikOf(vault).publicArea).export({ format: 'der', type: 'spki' }));
}

/** The first CN of a certificate's subject. */
export function subjectCommonName(der: Uint8Array): string {
  const certificate = pkijs.Certificate.fromBER(new Uint8Array(der).buffer as ArrayBuffer);
  const cn = certificate.subject.typesAndValues.find((entry) => entry.type === '2.5.4.3');
  const value = cn?.value.valueBlock.value;
  if (typeof value !== 'string') throw new AttestationError('BAD_INPUT', 'the certificate subject has no common name');
  return value;
}

/** AIK_ONLY: the card's own certificate for its AIK, signed by the AIK. */
export async function selfIssueAikCertificate(vault: AttestationVault, serial: number, now = new Date()): Promise<Uint8Array> {
  const aik = aikOf(vault);
  const spki = aikSubjectPublicKey(vault);
  const commonName = `tpmvsc card ${serial} AIK`;
  return buildCertificate(
    {
      subjectCommonName: commonName,
      issuerCommonName: commonName,
      subjectPublicKey: spki,
      issuerPublicKey: spki,
      notBefore: new Date(now.getTime() - 5 * 60_000),
      notAfter: new Date(now.getTime() + 20 * YEAR_MS),
      role: { caPathLength: AIK_PATH_LENGTH },
      extensions: [
        { oid: OID_AIK_TPM_PUBLIC, critical: false, value: derOctets(marshalPublic(aik.publicArea)) },
        { oid: '2.5.29.32', critical: false, value: certificatePolicies([POLICY_OF_TRUST['self-issued']]) },
      ],
    },
    (tbs) => vault.signWithAttestationKey(tbs),
  );
}

/** DER OCTET STRING of `bytes` (the value of the AIK public extension). */
export function derOctets(bytes: Uint8Array): Uint8Array {
  if (bytes.length < 128) return concatBytes(Uint8Array.of(0x04, bytes.length), bytes);
  if (bytes.length < 256) return concatBytes(Uint8Array.of(0x04, 0x81, bytes.length), bytes);
  return concatBytes(Uint8Array.of(0x04, 0x82, bytes.length >> 8, bytes.length & 0xff), bytes);
}

/**
 * AIK_AND_CERT: two round trips with the attestation CA; the TPM proves with
 * ActivateCredential that the AIK and the certified EK are in the same TPM.
 */
export async function enrollAikWithCa(
  vault: AttestationVault,
  tpm: Tpm,
  caUrl: string,
  options: { endorsementAuth?: Uint8Array; timeoutMs?: number } = {},
): Promise<{ certificate: Uint8Array; caCertificate: Uint8Array }> {
  const aik = aikOf(vault);
  const client = new CaClient(caUrl, options.timeoutMs);
  const ek = await readEndorsementKey(tpm, options.endorsementAuth);
  const challenge = await client.challenge({
    ekCertificate: b64(ek.certificate),
    ekPublic: b64(marshalEkPublic(ek)),
    aikPublic: b64(marshalPublic(aik.publicArea)),
  });
  const credential = await vault.activateCredential(ek.source, unb64(challenge.credentialBlob), unb64(challenge.encryptedSecret));
  let answer;
  try {
    answer = await client.certificate({ challengeId: challenge.challengeId, credential: b64(credential) });
  } finally {
    credential.fill(0);
  }
  const certificate = unb64(answer.certificate);
  const caCertificate = unb64(answer.caCertificate);
  // The CA must have certified this AIK, and signed with the key it claims.
  const parsed = new X509Certificate(certificate);
  if (!parsed.publicKey.export({ format: 'der', type: 'spki' }).equals(Buffer.from(aikSubjectPublicKey(vault)))) {
    throw new AttestationError('CA_REFUSED', 'the attestation CA certified another key than this card\'s AIK');
  }
  if (!parsed.verify(new X509Certificate(caCertificate).publicKey)) {
    throw new AttestationError('CA_REFUSED', 'the AIK certificate does not verify with the CA certificate');
  }
  return { certificate, caCertificate };
}

/** PIV certificate object value (inside 53): 70 <DER> 71 01 00 FE 00. */
export function certificateObjectValue(der: Uint8Array): Uint8Array {
  return concatBytes(tlv(0x70, der), tlv(0x71, Uint8Array.of(0)), tlv(0xfe));
}

/** The DER certificate inside a PIV certificate object value (base64 as the card state stores it). */
export function certificateFromObjectValue(value: string | undefined): Uint8Array | undefined {
  if (value === undefined) return undefined;
  try {
    return findTlv(decodeTlvs(unb64(value)), 0x70);
  } catch {
    return undefined;
  }
}
