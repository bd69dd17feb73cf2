/**
 * The attestation CA's two steps (attestation/ca_protocol.ts):
 *   challenge    check the EK certificate (ek_trust.ts), that ekPublic is that certificate's key
 *                and an EK, that aikPublic is a restricted signing key bound to its TPM; admit
 *                the EK's request under its limits (enrolment_limits.ts: the EK is the client);
 *                then MakeCredential(ekPublic, name(aikPublic), 32 random bytes)
 *   certificate  the released credential, once, before the challenge expires: issue the AIK
 *                certificate (issuance policy = how the EK was trusted), log it (JSON lines)
 */
import { createHash, randomBytes, timingSafeEqual, X509Certificate } from 'node:crypto';
import { appendFile } from 'node:fs/promises';
import { TPM_ALG, TPMA_OBJECT as A, Reader, makeCredential, marshalPublic, objectName, publicKeyToNode, readPublic, type TpmPublic } from '../tpm/index.js';
import { AIK_REQUIRED_ATTRIBUTES } from '../vault/attestation_key.js';
import { derOctets } from '../attestation/aik_certificate.js';
import { AIK_PATH_LENGTH } from '../attestation/attestation_limits.js';
import { buildCertificate, certificatePolicies } from '../attestation/certificate_builder.js';
import { OID_AIK_TPM_PUBLIC, POLICY_OF_TRUST, type AikTrust } from '../attestation/oids.js';
import type { CertificateRequest, CertificateResponse, ChallengeRequest, ChallengeResponse } from '../attestation/ca_protocol.js';
import { CaRefusal } from './ca_error.js';
import { caSigner, type CaIdentity } from './ca_identity.js';
import { checkEkCertificate, ekKeyFingerprint, type EkTrustStore } from './ek_trust.js';
import { EnrolmentLimits, type PendingChallenges } from './enrolment_limits.js';

export interface CaServiceOptions {
  identity: CaIdentity;
  trust: EkTrustStore;
  /** Append-only issuance log (JSON lines). */
  logPath: string;
  /** Challenge lifetime. Default 60 s. */
  challengeTtlMs?: number;
  /** Rate and pending limits per EK and in all. Default DEFAULT_LIMITS. */
  limits?: EnrolmentLimits;
  /** AIK certificate lifetime. Default 5 years. */
  certificateLifetimeMs?: number;
}

interface Challenge {
  credential: Uint8Array;
  aikPublic: TpmPublic;
  trust: AikTrust;
  ekFingerprint: string;
  expiresAt: number;
}

/** What the access log says about a request, filled in as far as the request got. */
export interface RequestNote {
  /** "ek:<SHA-256 of the EK's SubjectPublicKeyInfo>" once the EK is trusted (or the challenge known). */
  client?: string;
  /** Serial number of the certificate issued. */
  issued?: string;
}

const clientOf = (ekFingerprint: string): string => `ek:${ekFingerprint}`;

const EK_REQUIRED = A.fixedTPM | A.fixedParent | A.restricted | A.decrypt;
const YEAR_MS = 365.25 * 24 * 3600 * 1000;

function base64Field(body: Record<string, unknown>, field: string, maxBytes: number): Uint8Array {
  const value = body[field];
  if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length === 0) throw new CaRefusal(400, `"${field}" must be base64`);
  const bytes = new Uint8Array(Buffer.from(value, 'base64'));
  if (bytes.length > maxBytes) throw new CaRefusal(400, `"${field}" is too long`);
  return bytes;
}

function tpmPublic(bytes: Uint8Array, field: string): TpmPublic {
  try {
    const reader = new Reader(bytes);
    const area = readPublic(reader);
    reader.done('TPMT_PUBLIC');
    return area;
  } catch {
    throw new CaRefusal(400, `"${field}" is not a TPMT_PUBLIC`);
  }
}

function certificate(bytes: Uint8Array, field: string): X509Certificate {
  try {
    return new X509Certificate(bytes);
  } catch {
    throw new CaRefusal(400, `"${field}" is not an X.509 certificate`);
  }
}

export class CaService {
  private readonly challenges = new Map<string, Challenge>();
  private readonly limits: EnrolmentLimits;

  constructor(private readonly options: CaServiceOptions) {
    this.limits = options.limits ?? new EnrolmentLimits();
  }

  challenge(body: Record<string, unknown>, note: RequestNote = {}, now = Date.now()): ChallengeResponse {
    const request = body as Partial<ChallengeRequest>;
    const ekCertificate = certificate(base64Field(body, 'ekCertificate', 8192), 'ekCertificate');
    const intermediates = request.ekIntermediates ?? [];
    if (!Array.isArray(intermediates) || intermediates.length > 4) throw new CaRefusal(400, '"ekIntermediates" must be a list of at most 4 certificates');
    const extra = intermediates.map((_, i) => certificate(base64Field(intermediates as unknown as Record<string, unknown>, String(i), 8192), `ekIntermediates[${i}]`));
    const ekPublic = tpmPublic(base64Field(body, 'ekPublic', 1024), 'ekPublic');
    const aikPublic = tpmPublic(base64Field(body, 'aikPublic', 1024), 'aikPublic');

    const trust = checkEkCertificate(ekCertificate, extra, this.options.trust, new Date(now));
    if (ekPublic.type === TPM_ALG.KEYEDHASH || (ekPublic.objectAttributes & EK_REQUIRED) !== EK_REQUIRED || ekPublic.symmetric.algorithm !== TPM_ALG.AES) {
      throw new CaRefusal(400, '"ekPublic" is not an endorsement key (restricted decryption key, fixedTPM, AES)');
    }
    if (!publicKeyToNode(ekPublic).export({ format: 'der', type: 'spki' }).equals(ekCertificate.publicKey.export({ format: 'der', type: 'spki' }))) {
      throw new CaRefusal(400, '"ekPublic" is not the key of the EK certificate');
    }
    if (aikPublic.type === TPM_ALG.KEYEDHASH || (aikPublic.objectAttributes & AIK_REQUIRED_ATTRIBUTES) !== AIK_REQUIRED_ATTRIBUTES || aikPublic.objectAttributes & A.decrypt) {
      throw new CaRefusal(400, '"aikPublic" is not a restricted signing key with fixedTPM | fixedParent | sensitiveDataOrigin');
    }
    if (aikPublic.nameAlg !== TPM_ALG.SHA256) throw new CaRefusal(400, '"aikPublic" must use SHA-256 as its name algorithm');

    const ekFingerprint = ekKeyFingerprint(ekCertificate);
    note.client = clientOf(ekFingerprint);
    this.expire(now);
    this.limits.admit(note.client, now, this.pendingFor(ekFingerprint));

    const credential = new Uint8Array(randomBytes(32));
    const made = makeCredential(ekPublic, objectName(aikPublic), credential);
    const challengeId = randomBytes(16).toString('hex');
    this.challenges.set(challengeId, { credential, aikPublic, trust, ekFingerprint, expiresAt: now + (this.options.challengeTtlMs ?? 60_000) });
    return { challengeId, credentialBlob: Buffer.from(made.credentialBlob).toString('base64'), encryptedSecret: Buffer.from(made.secret).toString('base64') };
  }

  async certificate(body: Record<string, unknown>, note: RequestNote = {}, now = Date.now()): Promise<CertificateResponse> {
    const request = body as Partial<CertificateRequest>;
    if (typeof request.challengeId !== 'string' || !/^[0-9a-f]{32}$/.test(request.challengeId)) throw new CaRefusal(400, '"challengeId" is malformed');
    const credential = base64Field(body, 'credential', 64);
    const challenge = this.challenges.get(request.challengeId);
    // Single use: gone whatever the outcome, so a wrong answer cannot be retried either.
    this.challenges.delete(request.challengeId);
    if (!challenge) throw new CaRefusal(404, 'unknown or already used challenge');
    note.client = clientOf(challenge.ekFingerprint);
    if (now > challenge.expiresAt) throw new CaRefusal(410, 'the challenge has expired');
    if (credential.length !== challenge.credential.length || !timingSafeEqual(credential, challenge.credential)) {
      throw new CaRefusal(403, 'wrong credential: the AIK is not in the TPM of that EK');
    }
    const { identity } = this.options;
    const aikName = Buffer.from(objectName(challenge.aikPublic)).toString('hex');
    const subjectPublicKey = new Uint8Array(publicKeyToNode(challenge.aikPublic).export({ format: 'der', type: 'spki' }));
    const issued = await buildCertificate(
      {
        subjectCommonName: `tpmvsc AIK ${aikName.slice(4, 36)}`,
        issuerCommonName: identity.commonName,
        subjectPublicKey,
        issuerPublicKey: identity.publicKey,
        notBefore: new Date(now - 5 * 60_000),
        notAfter: new Date(now + (this.options.certificateLifetimeMs ?? 5 * YEAR_MS)),
        role: { caPathLength: AIK_PATH_LENGTH },
        extensions: [
          { oid: OID_AIK_TPM_PUBLIC, critical: false, value: derOctets(marshalPublic(challenge.aikPublic)) },
          { oid: '2.5.29.32', critical: false, value: certificatePolicies([POLICY_OF_TRUST[challenge.trust]]) },
        ],
      },
      caSigner(identity.key),
    );
    const parsed = new X509Certificate(issued);
    const line = {
      time: new Date(now).toISOString(),
      serial: parsed.serialNumber,
      subject: parsed.subject,
      aikName,
      trust: challenge.trust,
      ekKeySha256: challenge.ekFingerprint,
      certificateSha256: createHash('sha256').update(issued).digest('hex'),
    };
    await appendFile(this.options.logPath, `${JSON.stringify(line)}\n`, { mode: 0o600 });
    note.issued = parsed.serialNumber;
    return { certificate: Buffer.from(issued).toString('base64'), caCertificate: Buffer.from(identity.certificate).toString('base64') };
  }

  private expire(now: number): void {
    for (const [id, challenge] of this.challenges) if (now > challenge.expiresAt) this.challenges.delete(id);
  }

  /** One pass over the pending challenges (no copies: the caps may be in the millions). */
  private pendingFor(ekFingerprint: string): PendingChallenges {
    const own = { count: 0, earliestExpiry: Infinity };
    const all = { count: 0, earliestExpiry: Infinity };
    for (const challenge of this.challenges.values()) {
      all.count++;
      all.earliestExpiry = Math.min(all.earliestExpiry, challenge.expiresAt);
      if (challenge.ekFingerprint !== ekFingerprint) continue;
      own.count++;
      own.earliestExpiry = Math.min(own.earliestExpiry, challenge.expiresAt);
    }
    return { own, all };
  }
}
