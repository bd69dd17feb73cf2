/**
 * Which EK certificates the CA trusts:
 * - chain: the EK certificate chains (signature, issuer name, validity, CA flag on every issuer)
 *   to a root in --ek-roots (PEM files of TPM manufacturers' roots and intermediates);
 * - allow-list (optional --ek-allow-list FILE): one SHA-256 (hex) of an EK's
 *   SubjectPublicKeyInfo per line, '#' comments; checked first (the strongest trust).
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { certificatesFromPem } from '../attestation/certificate_builder.js';
import type { AikTrust } from '../attestation/oids.js';
import { CaRefusal } from './ca_error.js';

export interface EkTrustStore {
  /** Certificates from --ek-roots: self-signed ones are roots, the others intermediates. */
  certificates: X509Certificate[];
  allowList: Set<string>;
}

export async function loadEkTrust(rootsDir: string, allowListFile?: string): Promise<EkTrustStore> {
  const certificates: X509Certificate[] = [];
  for (const entry of (await readdir(rootsDir)).sort()) {
    if (!/\.(pem|crt|cer)$/i.test(entry)) continue;
    for (const der of certificatesFromPem(await readFile(join(rootsDir, entry), 'latin1'))) certificates.push(new X509Certificate(der));
  }
  const allowList = new Set<string>();
  if (allowListFile) {
    for (const line of (await readFile(allowListFile, 'utf8')).split('\n')) {
      const text = line.replace(/#.*/, '').trim().toLowerCase();
      if (text === '') continue;
      if (!/^[0-9a-f]{64}$/.test(text)) throw new Error(`${allowListFile}: "${text.slice(0, 70)}" is not a SHA-256 in hex`);
      allowList.add(text);
    }
  }
  return { certificates, allowList };
}

export function ekKeyFingerprint(certificate: X509Certificate): string {
  return createHash('sha256').update(certificate.publicKey.export({ format: 'der', type: 'spki' })).digest('hex');
}

function valid(certificate: X509Certificate, at: Date): boolean {
  return at >= new Date(certificate.validFrom) && at <= new Date(certificate.validTo);
}

/** How the EK certificate is trusted; CaRefusal(403) if it is not. */
export function checkEkCertificate(ek: X509Certificate, extra: X509Certificate[], store: EkTrustStore, at = new Date()): AikTrust {
  if (store.allowList.has(ekKeyFingerprint(ek))) return 'ek-allow-list';
  if (!valid(ek, at)) throw new CaRefusal(403, 'the EK certificate is expired or not yet valid');
  const pool = [...store.certificates, ...extra];
  const isTrustedRoot = (c: X509Certificate): boolean => store.certificates.some((root) => root.raw.equals(c.raw) && root.checkIssued(root));
  let current = ek;
  for (let depth = 0; depth < 8; depth++) {
    const issuer = pool.find((candidate) => current.checkIssued(candidate) && candidate.ca && valid(candidate, at) && current.verify(candidate.publicKey));
    if (!issuer) break;
    if (isTrustedRoot(issuer)) return 'ek-chain';
    if (issuer.raw.equals(current.raw)) break;
    current = issuer;
  }
  throw new CaRefusal(403, 'the EK certificate does not chain to a trusted TPM manufacturer root and is not on the allow-list');
}
