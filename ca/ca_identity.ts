/**
 * The attestation CA's own key and certificate, created on first start in --state-dir:
 *   ca-key.pem   ECDSA P-256 private key, PKCS#8 PEM, mode 0600
 *   ca.pem       self-signed CA certificate (what relying parties trust: verify-attestation --ca)
 */
import { createPrivateKey, generateKeyPairSync, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildCertificate, certificatesFromPem, toPem } from '../attestation/certificate_builder.js';

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

export async function loadOrCreateIdentity(stateDir: string): Promise<CaIdentity> {
  await mkdir(stateDir, { recursive: true, mode: 0o700 });
  const keyPath = join(stateDir, 'ca-key.pem');
  const certPath = join(stateDir, 'ca.pem');
  let key: KeyObject;
  let certificate: Uint8Array;
  try {
    key = createPrivateKey(await readFile(keyPath));
    certificate = certificatesFromPem(await readFile(certPath, 'latin1'))[0]!;
    if (!certificate) throw new Error(`${certPath} holds no certificate`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    key = pair.privateKey;
    const spki = new Uint8Array(pair.publicKey.export({ format: 'der', type: 'spki' }));
    const now = Date.now();
    certificate = await buildCertificate(
      {
        subjectCommonName: CA_COMMON_NAME,
        issuerCommonName: CA_COMMON_NAME,
        subjectPublicKey: spki,
        issuerPublicKey: spki,
        notBefore: new Date(now - 5 * 60_000),
        notAfter: new Date(now + 20 * YEAR_MS),
        isCa: true,
      },
      caSigner(key),
    );
    // 'wx': never overwrite a key another process just created.
    await writeFile(keyPath, key.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600, flag: 'wx' });
    await chmod(keyPath, 0o600);
    await writeFile(certPath, toPem(certificate), { mode: 0o644, flag: 'wx' });
  }
  const parsed = new X509Certificate(certificate);
  return { key, certificate, publicKey: new Uint8Array(parsed.publicKey.export({ format: 'der', type: 'spki' })), commonName: CA_COMMON_NAME };
}
