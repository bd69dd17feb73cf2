/**
 * ATTEST (INS F9) for a card whose keys live in the TPM: a certificate for the slot's key,
 * issued and signed by the card's AIK (restricted key: TPM2_Hash ticket + Sign), carrying the
 * TPM's own evidence (TPM2_Certify of the key by the AIK) and the slot's PIN and touch policies
 * in a non-critical extension (tpm_evidence.ts). Its issuer is the AIK certificate in object
 * 5FFF01; its limits (EKU slot attestation only) are attestation_limits.ts's.
 */
import { publicKeyToNode } from '../tpm/index.js';
import type { AttestationSubject, KeyAttestor } from '../applet/key_attestor.js';
import { AttestationError } from './attestation_error.js';
import { aikSubjectPublicKey, subjectCommonName, type AttestationVault } from './aik_certificate.js';
import { buildCertificate } from './certificate_builder.js';
import { OID_TPM_KEY_EVIDENCE } from './oids.js';
import { encodeKeyEvidence, qualifyingDataFor } from './tpm_evidence.js';

const YEAR_MS = 365.25 * 24 * 3600 * 1000;

/** The subject CN of a slot certificate: names the slot, as a YubiKey's "YubiKey PIV Attestation 9a". */
export function slotCertificateCommonName(slot: number): string {
  return `tpmvsc PIV attestation ${slot.toString(16).padStart(2, '0')}`;
}

export class TpmKeyAttestor implements KeyAttestor {
  /** `aikCertificate` reads the card's current AIK certificate (object 5FFF01), DER. */
  constructor(
    private readonly vault: AttestationVault,
    private readonly aikCertificate: () => Uint8Array | undefined,
  ) {}

  available(): boolean {
    return this.vault.attestationKey() !== undefined && this.aikCertificate() !== undefined;
  }

  async attest(subject: AttestationSubject): Promise<Uint8Array> {
    const aikCertificate = this.aikCertificate();
    if (!aikCertificate) throw new AttestationError('BAD_INPUT', 'the card has no attestation certificate (object 5FFF01)');
    const usage = { pinPolicy: subject.pinPolicy, touchPolicy: subject.touchPolicy };
    const certification = await this.vault.certifyKey(subject.key, qualifyingDataFor(subject.slot, subject.serial, usage));
    const subjectPublicKey = new Uint8Array(publicKeyToNode(certification.keyPublic).export({ format: 'der', type: 'spki' }));
    const now = Date.now();
    return buildCertificate(
      {
        subjectCommonName: slotCertificateCommonName(subject.slot),
        issuerCommonName: subjectCommonName(aikCertificate),
        subjectPublicKey,
        issuerPublicKey: aikSubjectPublicKey(this.vault),
        notBefore: new Date(now - 5 * 60_000),
        notAfter: new Date(now + 20 * YEAR_MS),
        role: 'slot',
        extensions: [
          {
            oid: OID_TPM_KEY_EVIDENCE,
            critical: false,
            value: encodeKeyEvidence({
              slot: subject.slot,
              serial: subject.serial,
              keyPublic: certification.keyPublic,
              attest: certification.attest,
              signature: certification.signature,
              usage,
            }),
          },
        ],
      },
      (tbs) => this.vault.signWithAttestationKey(tbs),
    );
  }
}
