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
 */
export const TPMVSC_ARC = '2.25.186257027045783777968932578990947688637';

export const OID_TPM_KEY_EVIDENCE = `${TPMVSC_ARC}.1`;
export const OID_AIK_TPM_PUBLIC = `${TPMVSC_ARC}.2`;
export const OID_POLICY_EK_CHAIN = `${TPMVSC_ARC}.3.1`;
export const OID_POLICY_EK_ALLOW_LIST = `${TPMVSC_ARC}.3.2`;
export const OID_POLICY_SELF_ISSUED = `${TPMVSC_ARC}.3.3`;

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
  certificatePolicies: '2.5.29.32',
  subjectKeyIdentifier: '2.5.29.14',
  authorityKeyIdentifier: '2.5.29.35',
} as const;
