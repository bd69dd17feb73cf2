/**
 * The TPM's endorsement key (EK) and its certificate, as the manufacturer (or swtpm_setup)
 * provisioned them (TCG EK Credential Profile 2.x):
 *
 *   certificate NV index   EK                                            persistent handle (usual)
 *   0x01C00002             RSA-2048, template L-1 (policy PolicySecret)  0x81010001
 *   0x01C0000A             ECC P-256, template L-2                       0x81010002
 *   0x01C00016             ECC P-384, high range H-3 (policy PolicyOR)   0x81010016
 *
 * The EK is used from its persistent handle when the key there matches the certificate;
 * otherwise it is re-created as a primary from its template (same seed, same key).
 *
 * High-range EKs (H-3: P-384, nameAlg SHA-384, userWithAuth | adminWithPolicy) carry
 *   authPolicy = PolicyB = PolicyOR(PolicyA, PolicyC)            (all SHA-384)
 *   PolicyA    = PolicySecret(TPM_RH_ENDORSEMENT)
 *   PolicyC    = PolicyAuthorizeNV(0x01C07F02)  (a constant of the EK profile; its NV index
 *                                                need not exist to take the PolicyA branch)
 * so the admin role is reached with PolicySecret then PolicyOR(PolicyA, PolicyC) in a SHA-384
 * session (swtpm_setup makes exactly this EK; its authPolicy is checked in the tests).
 */
import { createHash, X509Certificate } from 'node:crypto';
import {
  emptyPolicyDigestFor,
  endorsementKeyEccTemplate,
  handleName,
  policyOrDigest,
  policySecretDigest,
  TPM_ALG,
  TPM_CC,
  TPM_ECC,
  TPM_RH,
  TPMA_OBJECT as A,
  marshalPublic,
  publicKeyToNode,
  type Tpm,
  type TpmPublic,
} from '../tpm/index.js';
import type { EndorsementKeySource, EndorsementPolicy } from '../vault/attestation_key.js';
import { AttestationError } from './attestation_error.js';

/** TPM2_PolicySecret(TPM_RH_ENDORSEMENT) digest (SHA-256): the default EK authPolicy. */
export const EK_POLICY_SECRET_ENDORSEMENT: Uint8Array = (() => {
  const cc = Buffer.alloc(4);
  cc.writeUInt32BE(TPM_CC.PolicySecret, 0);
  const handle = Buffer.alloc(4);
  handle.writeUInt32BE(TPM_RH.ENDORSEMENT, 0);
  const step = createHash('sha256').update(Buffer.alloc(32)).update(cc).update(handle).digest();
  return new Uint8Array(createHash('sha256').update(step).digest()); // policyRef empty
})();

/** PolicyA for SHA-384: PolicySecret(TPM_RH_ENDORSEMENT). */
export const EK_POLICY_A_SHA384: Uint8Array = policySecretDigest(TPM_ALG.SHA384, emptyPolicyDigestFor(TPM_ALG.SHA384), handleName(TPM_RH.ENDORSEMENT));

/** PolicyC for SHA-384 (TCG EK Credential Profile 2.x, PolicyAuthorizeNV branch): a published constant. */
export const EK_POLICY_C_SHA384: Uint8Array = new Uint8Array(
  Buffer.from('d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5b4947c2d73e63005eed2dc2b3593d165', 'hex'),
);

/** PolicyB for SHA-384 = PolicyOR(PolicyA, PolicyC): the authPolicy of high-range SHA-384 EKs. */
export const EK_POLICY_B_SHA384: Uint8Array = policyOrDigest(TPM_ALG.SHA384, [EK_POLICY_A_SHA384, EK_POLICY_C_SHA384]);

/** How the vault satisfies a high-range SHA-384 EK's admin policy. */
export const EK_HIGH_RANGE_SHA384_POLICY: EndorsementPolicy = { hashAlg: TPM_ALG.SHA384, orBranches: [EK_POLICY_A_SHA384, EK_POLICY_C_SHA384] };

const EK_ATTRIBUTES = (A.fixedTPM | A.fixedParent | A.sensitiveDataOrigin | A.adminWithPolicy | A.restricted | A.decrypt) >>> 0;

/** TCG default EK template L-1 (RSA-2048). */
export function rsaEkTemplate(): TpmPublic {
  return {
    type: TPM_ALG.RSA,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: EK_ATTRIBUTES,
    authPolicy: EK_POLICY_SECRET_ENDORSEMENT,
    symmetric: { algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB },
    scheme: { scheme: TPM_ALG.NULL },
    keyBits: 2048,
    exponent: 0,
    unique: new Uint8Array(256),
  };
}

/** TCG default EK template L-2 (ECC P-256): the TPM library's EK template with PolicySecret(TPM_RH_ENDORSEMENT). */
export function eccEkTemplate(): TpmPublic {
  return endorsementKeyEccTemplate(EK_POLICY_SECRET_ENDORSEMENT);
}

/** TCG high-range EK template H-3 (ECC P-384, SHA-384, AES-256, unique empty). */
export function eccP384HighRangeEkTemplate(): TpmPublic {
  return {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA384,
    objectAttributes: (EK_ATTRIBUTES | A.userWithAuth) >>> 0,
    authPolicy: EK_POLICY_B_SHA384,
    symmetric: { algorithm: TPM_ALG.AES, keyBits: 256, mode: TPM_ALG.CFB },
    scheme: { scheme: TPM_ALG.NULL },
    curveId: TPM_ECC.NIST_P384,
    kdf: { scheme: TPM_ALG.NULL },
    unique: { x: new Uint8Array(0), y: new Uint8Array(0) },
  };
}

interface Candidate {
  nvIndex: number;
  handle: number;
  template: () => TpmPublic;
  policy?: EndorsementPolicy;
}

/** In order of preference (TCG EK profile indices). */
const CANDIDATES: readonly Candidate[] = [
  { nvIndex: 0x01c00002, handle: 0x81010001, template: rsaEkTemplate },
  { nvIndex: 0x01c0000a, handle: 0x81010002, template: eccEkTemplate },
  { nvIndex: 0x01c00016, handle: 0x81010016, template: eccP384HighRangeEkTemplate, policy: EK_HIGH_RANGE_SHA384_POLICY },
];

export interface EndorsementKey {
  /** DER EK certificate from NV. */
  certificate: Uint8Array;
  /** The EK's public area (what MakeCredential needs). */
  publicArea: TpmPublic;
  /** How the vault reaches the EK for ActivateCredential. */
  source: EndorsementKeySource;
}

function spki(area: TpmPublic): Buffer {
  return publicKeyToNode(area).export({ format: 'der', type: 'spki' });
}

/** Reads an NV index whole (the TPM library reads in NV_BUFFER_MAX chunks). */
async function readNvCertificate(tpm: Tpm, nvIndex: number): Promise<Uint8Array | undefined> {
  let size: number;
  try {
    size = (await tpm.nvReadPublic(nvIndex)).nvPublic.dataSize;
  } catch {
    return undefined; // not defined: try the next index
  }
  const bytes = await tpm.nvRead(nvIndex, size, 0, { session: 'password' });
  // Some TPMs pad the index: keep exactly the outer DER SEQUENCE.
  if (bytes[0] !== 0x30 || bytes.length < 4) return undefined;
  const lengthOfLength = bytes[1]! & 0x80 ? bytes[1]! & 0x7f : 0;
  let length = lengthOfLength ? 0 : bytes[1]!;
  for (let i = 0; i < lengthOfLength; i++) length = length * 256 + bytes[2 + i]!;
  const total = 2 + lengthOfLength + length;
  return total <= bytes.length ? bytes.slice(0, total) : undefined;
}

/** Finds a usable EK and its certificate; AttestationError NO_EK_CERTIFICATE if there is none. */
export async function readEndorsementKey(tpm: Tpm, endorsementAuth?: Uint8Array): Promise<EndorsementKey> {
  for (const candidate of CANDIDATES) {
    const certificate = await readNvCertificate(tpm, candidate.nvIndex);
    if (!certificate) continue;
    let certKey: Buffer;
    try {
      certKey = new X509Certificate(certificate).publicKey.export({ format: 'der', type: 'spki' });
    } catch (e) {
      throw new AttestationError('NO_EK_CERTIFICATE', `the EK certificate in NV 0x${candidate.nvIndex.toString(16)} is not X.509`, { cause: e });
    }
    const auth = { ...(endorsementAuth ? { endorsementAuth } : {}), ...(candidate.policy ? { policy: candidate.policy } : {}) };
    try {
      const persistent = await tpm.readPublic(candidate.handle);
      if (spki(persistent.publicArea).equals(certKey)) {
        return { certificate, publicArea: persistent.publicArea, source: { handle: candidate.handle, ...auth } };
      }
    } catch {
      // no persistent EK: re-create it below
    }
    const template = candidate.template();
    const primary = await tpm.createPrimary(TPM_RH.ENDORSEMENT, template, undefined, { auth: endorsementAuth ?? new Uint8Array(0) });
    await tpm.flushContext(primary.handle);
    if (!spki(primary.publicArea).equals(certKey)) {
      throw new AttestationError('NO_EK_CERTIFICATE', `the EK certificate in NV 0x${candidate.nvIndex.toString(16)} does not match the TPM's EK`);
    }
    return { certificate, publicArea: primary.publicArea, source: { template, ...auth } };
  }
  throw new AttestationError('NO_EK_CERTIFICATE', 'the TPM has no RSA-2048, ECC P-256 or ECC P-384 EK certificate (NV 0x01C00002 / 0x01C0000A / 0x01C00016)');
}

/** The EK public area as the CA receives it (TPMT_PUBLIC). */
export function marshalEkPublic(ek: EndorsementKey): Uint8Array {
  return marshalPublic(ek.publicArea);
}
