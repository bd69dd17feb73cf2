/**
 * The daemon's side of the attestation CA protocol (ca_protocol.ts): POSTs JSON with a
 * timeout, turns every failure into a typed AttestationError with the CA's own message.
 */
import { AttestationError } from './attestation_error.js';
import {
  CERTIFICATE_PATH,
  CHALLENGE_PATH,
  type CertificateRequest,
  type CertificateResponse,
  type ChallengeRequest,
  type ChallengeResponse,
} from './ca_protocol.js';

export const CA_TIMEOUT_MS = 15_000;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export class CaClient {
  private readonly base: URL;

  constructor(url: string, private readonly timeoutMs = CA_TIMEOUT_MS) {
    try {
      this.base = new URL(url);
    } catch (e) {
      throw new AttestationError('BAD_INPUT', `attestation CA URL is not a URL: ${url}`, { cause: e });
    }
    if (this.base.protocol !== 'http:' && this.base.protocol !== 'https:') {
      throw new AttestationError('BAD_INPUT', `attestation CA URL must be http: or https: (${url})`);
    }
  }

  challenge(request: ChallengeRequest): Promise<ChallengeResponse> {
    return this.post(CHALLENGE_PATH, request, ['challengeId', 'credentialBlob', 'encryptedSecret']) as unknown as Promise<ChallengeResponse>;
  }

  certificate(request: CertificateRequest): Promise<CertificateResponse> {
    return this.post(CERTIFICATE_PATH, request, ['certificate', 'caCertificate']) as unknown as Promise<CertificateResponse>;
  }

  private async post(path: string, body: unknown, fields: string[]): Promise<Record<string, string>> {
    const url = new URL(path.replace(/^\//, ''), this.base.href.endsWith('/') ? this.base : `${this.base.href}/`);
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (e) {
      throw new AttestationError('CA_UNREACHABLE', `attestation CA ${this.base.origin} is unreachable: ${e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e)}`, { cause: e });
    }
    let parsed: unknown;
    try {
      parsed = await response.json();
    } catch (e) {
      throw new AttestationError('CA_UNREACHABLE', `attestation CA answered HTTP ${response.status} without JSON`, { cause: e });
    }
    if (!response.ok) {
      const message = isRecord(parsed) && typeof parsed.error === 'string' ? parsed.error.slice(0, 300) : `HTTP ${response.status}`;
      throw new AttestationError('CA_REFUSED', `attestation CA refused: ${message}`);
    }
    if (!isRecord(parsed) || !fields.every((f) => typeof parsed[f] === 'string')) {
      throw new AttestationError('CA_UNREACHABLE', 'attestation CA answered an unexpected document');
    }
    return parsed as Record<string, string>;
  }
}
