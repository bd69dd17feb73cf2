/**
 * The attestation CA's HTTP API (JSON over POST, binary fields in base64). Two round trips:
 *
 *   POST /v1/challenge    { ekCertificate, ekIntermediates?, ekPublic, aikPublic }
 *                      -> { challengeId, credentialBlob, encryptedSecret }
 *        ekCertificate DER; ekPublic / aikPublic TPMT_PUBLIC. The CA checks the EK certificate
 *        (trusted root chain or allow-list), that ekPublic is that certificate's key and an EK,
 *        that aikPublic is a restricted signing key, then runs MakeCredential(ekPublic,
 *        name(aikPublic), random credential).
 *   POST /v1/certificate  { challengeId, credential }
 *                      -> { certificate, caCertificate }
 *        credential = what TPM2_ActivateCredential released. Single use, short expiry.
 *
 * Errors: HTTP 4xx/5xx with { error: "message" }.
 */
export const CHALLENGE_PATH = '/v1/challenge';
export const CERTIFICATE_PATH = '/v1/certificate';

export interface ChallengeRequest {
  ekCertificate: string;
  ekIntermediates?: string[];
  ekPublic: string;
  aikPublic: string;
}

export interface ChallengeResponse {
  challengeId: string;
  credentialBlob: string;
  encryptedSecret: string;
}

export interface CertificateRequest {
  challengeId: string;
  credential: string;
}

export interface CertificateResponse {
  certificate: string;
  caCertificate: string;
}

export interface ErrorResponse {
  error: string;
}
