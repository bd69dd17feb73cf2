/**
 * Object identifiers of tpmvsc attestation, under a private UUID arc (ITU-T X.667: 2.25.<UUID as
 * an integer>, no registration needed). Documented in docs/ATTESTATION.md.
 *
 *   ARC            2.25.186257027045783777968932578990947688637   (UUID 8c1fcc6f-5885-44a0-9a52-d86b552de0bd)
 *   ARC.1          extension: TPM key evidence (slot certificates, non-critical)
 *   ARC.2          extension: the AIK's TPMT_PUBLIC (AIK certificates, non-critical)
 *   ARC.3.1        certificate policy: AIK issued after the EK certificate chained to a trusted TPM root
 *   ARC.3.2        certificate policy: AIK issued for an EK on the CA's allow-list
 *   ARC.3.3        certificate policy: AIK self-issued by the card (AIK_ONLY): no third party vouches
 *   ARC.4          extended key usage: slot attestation certificate (ATTEST's leaves; also on the CAs above them)
 */
export const TPMVSC_ARC = '2.25.186257027045783777968932578990947688637';

export const OID_TPM_KEY_EVIDENCE = `${TPMVSC_ARC}.1`;
export const OID_AIK_TPM_PUBLIC = `${TPMVSC_ARC}.2`;
export const OID_POLICY_EK_CHAIN = `${TPMVSC_ARC}.3.1`;
export const OID_POLICY_EK_ALLOW_LIST = `${TPMVSC_ARC}.3.2`;
export const OID_POLICY_SELF_ISSUED = `${TPMVSC_ARC}.3.3`;
export const OID_KP_SLOT_ATTESTATION = `${TPMVSC_ARC}.4`;

/**
 * tcg-kp-AIKCertificate (TCG, joint-iso-itu-t(2) international-organizations(23) tcg(133) tcg-kp(8) 3):
 * the extended key usage of a certificate for a TPM attestation identity key. The one registered
 * purpose that says "attestation" and nothing else; WebAuthn's TPM attestation requires it on
 * AIK certificates too. tpmvsc puts it on every CA certificate of an attestation chain
 * (attestation_limits.ts). It is NOT what a slot certificate gets: a certificate with this EKU
 * says its key is an AIK, whose TPMS_ATTEST signatures a verifier trusts, and a card key can
 * sign anything; slot certificates get OID_KP_SLOT_ATTESTATION.
 */
export const OID_KP_AIK_CERTIFICATE = '2.23.133.8.3';

/** How the issuer came to trust the AIK. */
export type AikTrust = 'ek-chain' | 'ek-allow-list' | 'self-issued';

export const POLICY_OF_TRUST: Record<AikTrust, string> = {
  'ek-chain': OID_POLICY_EK_CHAIN,
  'ek-allow-list': OID_POLICY_EK_ALLOW_LIST,
  'self-issued': OID_POLICY_SELF_ISSUED,
};

/** Standard OIDs the project writes. */
export const OID = {
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  nameConstraints: '2.5.29.30',
  subjectAltName: '2.5.29.17',
  certificatePolicies: '2.5.29.32',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
} as const;
