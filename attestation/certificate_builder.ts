/**
 * Builds X.509 v3 certificates (pkijs) signed by a caller-supplied ECDSA-SHA256 signer: the CA's
 * software key, or the card's AIK inside the TPM (which must see the TBSCertificate bytes).
 *
 *   Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm (ecdsa-with-SHA256), signatureValue BIT STRING }
 */
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import * as asn1js from 'asn1js';
import * as pkijs from 'pkijs';
import { OID } from './oids.js';
import { arrayBuffer } from './asn1_bytes.js';
import { attestationCaExtensions, slotCertificateExtensions } from './attestation_limits.js';

export interface CertificateExtension {
  oid: string;
  critical: boolean;
  /** DER of the extension's value (inside extnValue's OCTET STRING). */
  value: Uint8Array;
}

export interface CertificateSpec {
  subjectCommonName: string;
  issuerCommonName: string;
  /** DER SubjectPublicKeyInfo of the subject's key. */
  subjectPublicKey: Uint8Array;
  /** DER SubjectPublicKeyInfo of the issuer's key (for the authority key identifier). */
  issuerPublicKey: Uint8Array;
  notBefore: Date;
  notAfter: Date;
  /**
   * An attestation CA certificate (the CA root, an AIK certificate) with its pathLenConstraint, or
   * a slot certificate: basicConstraints, keyUsage, extKeyUsage and name constraints follow
   * (attestation_limits.ts).
   */
  role: { caPathLength: number } | 'slot';
  extensions?: CertificateExtension[];
}

/** Signs the TBSCertificate bytes; returns a DER ECDSA-SHA256 signature. */
export type TbsSigner = (tbs: Uint8Array) => Promise<Uint8Array>;

// A copy: a Buffer's .buffer may be a shared pool much larger than the Buffer.

function name(commonName: string): pkijs.RelativeDistinguishedNames {
  return new pkijs.RelativeDistinguishedNames({
    typesAndValues: [new pkijs.AttributeTypeAndValue({ type: OID.commonName, value: new asn1js.Utf8String({ value: commonName }) })],
  });
}

function time(date: Date): pkijs.Time {
  // RFC 5280 4.1.2.5: UTCTime through 2049, GeneralizedTime from 2050.
  return new pkijs.Time({ type: date.getUTCFullYear() >= 2050 ? pkijs.TimeType.GeneralizedTime : pkijs.TimeType.UTCTime, value: date });
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 of the subjectPublicKey BIT STRING's bytes. */
export function keyIdentifier(spki: Uint8Array): Uint8Array {
  const info = pkijs.PublicKeyInfo.fromBER(arrayBuffer(spki));
  return new Uint8Array(createHash('sha1').update(new Uint8Array(info.subjectPublicKey.valueBlock.valueHexView)).digest());
}

function extension(oid: string, critical: boolean, value: asn1js.BaseBlock | Uint8Array): pkijs.Extension {
  const der = value instanceof Uint8Array ? value : new Uint8Array(value.toBER());
  return new pkijs.Extension({ extnID: oid, critical, extnValue: arrayBuffer(der) });
}

/** CertificatePolicies ::= SEQUENCE OF PolicyInformation { policyIdentifier } */
export function certificatePolicies(oids: string[]): Uint8Array {
  const sequence = new asn1js.Sequence({
    value: oids.map((oid) => new asn1js.Sequence({ value: [new asn1js.ObjectIdentifier({ value: oid })] })),
  });
  return new Uint8Array(sequence.toBER());
}

export async function buildCertificate(spec: CertificateSpec, sign: TbsSigner): Promise<Uint8Array> {
  const certificate = new pkijs.Certificate();
  certificate.version = 2;
  const serial = new Uint8Array(randomBytes(16));
  serial[0] = (serial[0]! & 0x7f) | 0x01; // positive and exactly 16 bytes
  certificate.serialNumber = new asn1js.Integer({ valueHex: arrayBuffer(serial) });
  certificate.issuer = name(spec.issuerCommonName);
  certificate.subject = name(spec.subjectCommonName);
  certificate.notBefore = time(spec.notBefore);
  certificate.notAfter = time(spec.notAfter);
  certificate.subjectPublicKeyInfo = pkijs.PublicKeyInfo.fromBER(arrayBuffer(spec.subjectPublicKey));
  const algorithm = new pkijs.AlgorithmIdentifier({ algorithmId: OID.ecdsaWithSha256 });
  certificate.signature = algorithm;
  certificate.signatureAlgorithm = new pkijs.AlgorithmIdentifier({ algorithmId: OID.ecdsaWithSha256 });
  const limits = spec.role === 'slot' ? slotCertificateExtensions() : attestationCaExtensions(spec.role.caPathLength);
  const authorityKeyId = new pkijs.AuthorityKeyIdentifier({
    keyIdentifier: new asn1js.OctetString({ valueHex: arrayBuffer(keyIdentifier(spec.issuerPublicKey)) }),
  });
  certificate.extensions = [
    ...limits.map((e) => extension(e.oid, e.critical, e.value)),
    extension(OID.subjectKeyIdentifier, false, new asn1js.OctetString({ valueHex: arrayBuffer(keyIdentifier(spec.subjectPublicKey)) })),
    extension(OID.authorityKeyIdentifier, false, authorityKeyId.toSchema()),
    ...(spec.extensions ?? []).map((e) => extension(e.oid, e.critical, e.value)),
  ];
  const tbs = new Uint8Array(certificate.encodeTBS().toBER());
  const signature = await sign(tbs);
  certificate.tbsView = tbs;
  certificate.signatureValue = new asn1js.BitString({ valueHex: arrayBuffer(signature) });
  const der = new Uint8Array(certificate.toSchema(false).toBER());
  new X509Certificate(der); // fail here, not at the relying party, if the encoding is wrong
  return der;
}

/**
 * An OID as asn1js prints it after decoding: it writes arcs above 2^53 (our 2.25.<UUID> arc)
 * in hex braces, so decoded OIDs are compared with this form, not with the dotted text.
 */
export function decodedOid(oid: string): string {
  const der = new asn1js.ObjectIdentifier({ value: oid }).toBER();
  return (asn1js.fromBER(der).result as asn1js.ObjectIdentifier).valueBlock.toString();
}

/** The raw value (inside extnValue) of a certificate's extension, or undefined. */
export function extensionValue(der: Uint8Array, oid: string): Uint8Array | undefined {
  const certificate = pkijs.Certificate.fromBER(arrayBuffer(der));
  const wanted = decodedOid(oid);
  const found = certificate.extensions?.find((e) => e.extnID === wanted);
  return found ? new Uint8Array(found.extnValue.valueBlock.valueHexView) : undefined;
}

/** Policy OIDs of a certificate's certificatePolicies extension, in decodedOid() form (empty when absent). */
export function policiesOf(der: Uint8Array): string[] {
  const value = extensionValue(der, OID.certificatePolicies);
  if (!value) return [];
  const parsed = asn1js.fromBER(arrayBuffer(value));
  if (parsed.offset === -1 || !(parsed.result instanceof asn1js.Sequence)) return [];
  return parsed.result.valueBlock.value.flatMap((info) => {
    const first = info instanceof asn1js.Sequence ? info.valueBlock.value[0] : undefined;
    return first instanceof asn1js.ObjectIdentifier ? [first.valueBlock.toString()] : [];
  });
}

export function toPem(der: Uint8Array): string {
  const body = Buffer.from(der).toString('base64').replace(/.{1,64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE-----\n${body}-----END CERTIFICATE-----\n`;
}

/** DER of every certificate in a PEM text (or the bytes themselves if they are DER). */
export function certificatesFromPem(text: Uint8Array | string): Uint8Array[] {
  const pem = typeof text === 'string' ? text : Buffer.from(text).toString('latin1');
  const blocks = [...pem.matchAll(/-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g)];
  if (blocks.length === 0 && typeof text !== 'string' && text[0] === 0x30) return [text];
  return blocks.map((m) => new Uint8Array(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64')));
}
