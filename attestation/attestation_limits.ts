/**
 * The limits that keep attestation certificates out of every other trust decision. A TPM
 * restricted signing key signs any TBSCertificate that does not start with TPM_GENERATED_VALUE
 * (TPM2_Hash gives the ticket), so whoever runs a card can make its AIK sign a certificate for
 * any name: the certificates above the AIK must make such a certificate worthless.
 *
 * CA certificates (tpmvsc-ca's root, every AIK certificate, the self-issued AIK_ONLY one):
 *   basicConstraints  critical  cA TRUE, pathLenConstraint 1 (root: issues AIK certificates) or
 *                               0 (AIK: issues slot certificates only, never another CA)
 *   keyUsage          critical  keyCertSign only (no digitalSignature: no OCSP, no CRL, no TLS)
 *   extKeyUsage       critical  tcg-kp-AIKCertificate (2.23.133.8.3) and tpmvsc's slot attestation
 *                               purpose (ARC.4, what the slot certificates below carry) only.
 *                               OpenSSL (when a purpose is asked), Go and Windows read an EKU on
 *                               a CA as a limit on everything below it: no serverAuth,
 *                               clientAuth, emailProtection, codeSigning, timeStamping or
 *                               OCSPSigning anywhere in the chain. (NSS's certutil -V does not:
 *                               for NSS the name constraints do the work.) Critical: a verifier
 *                               that does not know the extension must refuse the certificate.
 *   nameConstraints   critical  no DNS name, IP address or email address below it:
 *
 *     30 52                                   NameConstraints
 *        A0 0B                                permittedSubtrees [0]
 *           30 09  81 07 "invalid"            rfc822Name: mail only at the reserved host "invalid"
 *        A1 43                                excludedSubtrees [1]
 *           30 02  82 00                      dNSName ""          every DNS name
 *           30 0A  87 08 00000000 00000000    iPAddress 0.0.0.0/0 every IPv4 address
 *           30 22  87 20 00 * 32              iPAddress ::/0      every IPv6 address
 *           30 02  81 00                      rfc822Name ""       every mail address (Go)
 *           30 09  81 07 "invalid"            rfc822Name "invalid" (and that host too)
 *
 *   OpenSSL has no "every mail address" form (its empty rfc822Name matches only an empty host),
 *   so the permitted subtree does that job for it: any address outside "invalid" violates it.
 *
 * Slot certificates (ATTEST's leaves): basicConstraints cA FALSE, keyUsage digitalSignature,
 * extKeyUsage critical slot attestation (ARC.4) only. Without an EKU of its own a leaf passes
 * NSS's certutil -V as an SSL client and S/MIME certificate under these CAs (certutil ignores a CA's
 * EKU); with one, every NSS and OpenSSL purpose check refuses it, while
 * `openssl verify` without -purpose (how PIV attestations are checked) and -purpose any accept
 * it. The leaf's EKU is one the CAs list too, so verifiers that intersect EKUs down the chain
 * (Windows, Go) see a chain valid for slot attestation and nothing else. tcg-kp-AIKCertificate
 * would be wrong here: it would present a card key, which signs anything, as an AIK.
 */
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { OID, OID_KP_AIK_CERTIFICATE, OID_KP_SLOT_ATTESTATION } from './oids.js';
import { arrayBuffer } from './asn1_bytes.js';
import type { CertificateExtension } from './certificate_builder.js';

// A copy: a Buffer's .buffer may be a shared pool much larger than the Buffer.

/** pathLenConstraint of the CA root (it issues AIK certificates) and of an AIK certificate. */
export const ROOT_PATH_LENGTH = 1;
export const AIK_PATH_LENGTH = 0;

/** The host name no mail address can really use (RFC 6761: "invalid" is reserved). */
const NO_MAIL_HOST = 'invalid';

const KEY_USAGE_KEY_CERT_SIGN = 0x04; // bit 5 of the first byte
const KEY_USAGE_DIGITAL_SIGNATURE = 0x80; // bit 0

/** GeneralName with an IMPLICIT context tag over a primitive value. */
function generalName(tag: number, value: Uint8Array): asn1js.Primitive {
  return new asn1js.Primitive({ idBlock: { tagClass: 3, tagNumber: tag }, valueHex: arrayBuffer(value) });
}

const subtree = (name: asn1js.Primitive): asn1js.Sequence => new asn1js.Sequence({ value: [name] });
const ascii = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'ascii'));

const RFC822_NAME = 1;
const DNS_NAME = 2;
const IP_ADDRESS = 7;

function nameConstraints(): Uint8Array {
  const permitted = new asn1js.Constructed({
    idBlock: { tagClass: 3, tagNumber: 0 },
    value: [subtree(generalName(RFC822_NAME, ascii(NO_MAIL_HOST)))],
  });
  const excluded = new asn1js.Constructed({
    idBlock: { tagClass: 3, tagNumber: 1 },
    value: [
      subtree(generalName(DNS_NAME, new Uint8Array(0))),
      subtree(generalName(IP_ADDRESS, new Uint8Array(8))),
      subtree(generalName(IP_ADDRESS, new Uint8Array(32))),
      subtree(generalName(RFC822_NAME, new Uint8Array(0))),
      subtree(generalName(RFC822_NAME, ascii(NO_MAIL_HOST))),
    ],
  });
  return new Uint8Array(new asn1js.Sequence({ value: [permitted, excluded] }).toBER());
}

function keyUsage(bits: number): Uint8Array {
  // DER BIT STRING: the unused-bits count is that of the lowest set bit.
  let unused = 0;
  while (unused < 7 && !((bits >> unused) & 1)) unused++;
  return new Uint8Array(new asn1js.BitString({ valueHex: arrayBuffer(Uint8Array.of(bits)), unusedBits: unused }).toBER());
}

function basicConstraints(pathLength: number | undefined): Uint8Array {
  const value = pathLength === undefined ? {} : { cA: true, pathLenConstraint: pathLength };
  return new Uint8Array(new pkijs.BasicConstraints(value).toSchema().toBER());
}

function extKeyUsage(purposes: string[]): Uint8Array {
  return new Uint8Array(new asn1js.Sequence({ value: purposes.map((oid) => new asn1js.ObjectIdentifier({ value: oid })) }).toBER());
}

/** The extensions of an attestation CA certificate (root or AIK), `pathLength` its pathLenConstraint. */
export function attestationCaExtensions(pathLength: number): CertificateExtension[] {
  return [
    { oid: OID.basicConstraints, critical: true, value: basicConstraints(pathLength) },
    { oid: OID.keyUsage, critical: true, value: keyUsage(KEY_USAGE_KEY_CERT_SIGN) },
    { oid: OID.extKeyUsage, critical: true, value: extKeyUsage([OID_KP_AIK_CERTIFICATE, OID_KP_SLOT_ATTESTATION]) },
    { oid: OID.nameConstraints, critical: true, value: nameConstraints() },
  ];
}

/** The extensions of a slot attestation certificate (ATTEST's leaf). */
export function slotCertificateExtensions(): CertificateExtension[] {
  return [
    { oid: OID.basicConstraints, critical: true, value: basicConstraints(undefined) },
    { oid: OID.keyUsage, critical: true, value: keyUsage(KEY_USAGE_DIGITAL_SIGNATURE) },
    { oid: OID.extKeyUsage, critical: true, value: extKeyUsage([OID_KP_SLOT_ATTESTATION]) },
  ];
}

/**
 * What an attestation CA certificate lacks of attestationCaExtensions(pathLength), in words;
 * empty when it carries every limit (certificates issued before the limits existed carry none).
 */
export function missingAttestationLimits(der: Uint8Array, pathLength: number): string[] {
  const certificate = pkijs.Certificate.fromBER(arrayBuffer(der));
  const wanted = new Map(attestationCaExtensions(pathLength).map((e) => [e.oid, e]));
  const missing: string[] = [];
  const what: Record<string, string> = {
    [OID.basicConstraints]: `pathLenConstraint ${pathLength}`,
    [OID.keyUsage]: 'keyUsage keyCertSign only',
    [OID.extKeyUsage]: 'extendedKeyUsage attestation only',
    [OID.nameConstraints]: 'name constraints excluding every DNS name, IP address and mail address',
  };
  for (const [oid, extension] of wanted) {
    const found = certificate.extensions?.find((e) => e.extnID === oid);
    const same = found !== undefined && found.critical === extension.critical && Buffer.from(found.extnValue.valueBlock.valueHexView).equals(Buffer.from(extension.value));
    if (!same) missing.push(what[oid]!);
  }
  return missing;
}
