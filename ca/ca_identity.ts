/**
 * The attestation CA's own key and certificate, created on first start in --state-dir:
 *   ca-key.pem   ECDSA P-256 private key, PKCS#8 PEM, mode 0600
 *   ca.pem       self-signed CA certificate (what relying parties trust: verify-attestation --ca),
 *                limited to attestation (attestation_limits.ts): never a TLS or S/MIME trust anchor
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildCertificate, certificatesFromPem, toPem } from '../attestation/certificate_builder.js';
import { missingAttestationLimits, ROOT_PATH_LENGTH } from '../attestation/attestation_limits.js';

export interface CaIdentity {
  key: KeyObject;
  certificate: Uint8Array;
  /** DER SubjectPublicKeyInfo of the CA key. */
  publicKey: Uint8Array;
  commonName: string;
}

export const CA_COMMON_NAME = 'tpmvsc attestation CA';
const YEAR_MS = 365.25 * 24 * 3600 * 1000;

export function caSigner(key: KeyObject): (tbs: Uint8Array) => Promise<Uint8Array> {
  return async (tbs) => new Uint8Array(sign('sha256', tbs, key));
}

function issueRoot(key: KeyObject, spki: Uint8Array, now: number): Promise<Uint8Array> {
  return buildCertificate(
    {
      subjectCommonName: CA_COMMON_NAME,
      issuerCommonName: CA_COMMON_NAME,
      subjectPublicKey: spki,
      issuerPublicKey: spki,
      notBefore: new Date(now - 5 * 60_000),
      notAfter: new Date(now + 20 * YEAR_MS),
      role: { caPathLength: ROOT_PATH_LENGTH },
    },
    caSigner(key),
  );
}

const spkiOf = (key: KeyObject): Uint8Array => new Uint8Array(createPublicKey(key).export({ format: 'der', type: 'spki' }));

/**
 * A ca.pem made before the attestation limits existed (attestation_limits.ts) is re-issued with
 * them: same key and subject, so every AIK certificate already issued chains to the new one, and
 * OpenSSL applies the new root's EKU and name constraints to all of them. The old file is kept
 * beside it (ca-unlimited-<time>.pem) for the record; relying parties must swap their copy.
 */
async function addLimits(stateDir: string, certPath: string, key: KeyObject, old: Uint8Array, log: (line: string) => void): Promise<Uint8Array> {
  const now = Date.now();
  const certificate = await issueRoot(key, spkiOf(key), now);
  const kept = join(stateDir, `ca-unlimited-${new Date(now).toISOString().replace(/[:.]/g, '-')}.pem`);
  await writeFile(kept, toPem(old), { mode: 0o644, flag: 'wx' });
  const temporary = `${certPath}.new`;
  await writeFile(temporary, toPem(certificate), { mode: 0o644 });
  await rename(temporary, certPath);
  log(`ca.pem carried no attestation limits: re-issued with the same key (old one kept as ${kept}); give relying parties the new ca.pem and never put either in a TLS or S/MIME trust store`);
  return certificate;
}

export async function loadOrCreateIdentity(stateDir: string, log: (line: string) => void = () => undefined): Promise<CaIdentity> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const keyPath = join(stateDir, 'ca-key.pem');
  const certPath = join(stateDir, 'ca.pem');
  let key: KeyObject;
  let certificate: Uint8Array;
  try {
    key = createPrivateKey(await readFile(keyPath));
    certificate = certificatesFromPem(await readFile(certPath, 'latin1'))[0]!;
    if (!certificate) throw new Error(`${certPath} holds no certificate`);
    if (missingAttestationLimits(certificate, ROOT_PATH_LENGTH).length > 0) certificate = await addLimits(stateDir, certPath, key, certificate, log);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    key = pair.privateKey;
    certificate = await issueRoot(key, spkiOf(key), Date.now());
    // 'wx': never overwrite a key another process just created.
    await writeFile(keyPath, key.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600, flag: 'wx' });
    await chmod(keyPath, 0o600);
    await writeFile(certPath, toPem(certificate), { mode: 0o644, flag: 'wx' });
  }
  const parsed = new X509Certificate(certificate);
  return { key, certificate, publicKey: new Uint8Array(parsed.publicKey.export({ format: 'der', type: 'spki' })), commonName: CA_COMMON_NAME };
}
