/**
 * The attestation limits' encoding (attestation/attestation_limits.ts): the exact DER drawn in
 * its comment, what OpenSSL reads from a certificate carrying them, and the check that finds a
 * certificate without them.
 */
import test from 'ava';
import { generateKeyPairSync, sign } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { AIK_PATH_LENGTH, ROOT_PATH_LENGTH, attestationCaExtensions, missingAttestationLimits, slotCertificateExtensions } from '../../attestation/attestation_limits.js';
import { buildCertificate, toPem } from '../../attestation/certificate_builder.js';
import { OID } from '../../attestation/oids.js';

const run = promisify(execFile);
const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

async function selfSigned(role: { caPathLength: number } | 'slot'): Promise<Uint8Array> {
  const pair = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = new Uint8Array(pair.publicKey.export({ format: 'der', type: 'spki' }));
  return buildCertificate(
    { subjectCommonName: 'limits', issuerCommonName: 'limits', subjectPublicKey: spki, issuerPublicKey: spki, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 3_600_000), role },
    async (tbs) => new Uint8Array(sign('sha256', tbs, pair.privateKey)),
  );
}

test('the name constraints are the DER the comment draws', (t) => {
  const value = attestationCaExtensions(AIK_PATH_LENGTH).find((e) => e.oid === OID.nameConstraints)!;
  const invalid = Buffer.from('invalid').toString('hex');
  const expected = `3052a00b30098107${invalid}a143` + '30028200' + `300a8708${'00'.repeat(8)}` + `30228720${'00'.repeat(32)}` + '30028100' + `30098107${invalid}`;
  t.is(hex(value.value), expected);
  t.true(value.critical);
});

test('basic constraints, key usage and EKU of CAs and slot certificates', (t) => {
  const ca = new Map(attestationCaExtensions(ROOT_PATH_LENGTH).map((e) => [e.oid, e]));
  t.is(hex(ca.get(OID.basicConstraints)!.value), '30060101ff020101');
  t.is(hex(attestationCaExtensions(AIK_PATH_LENGTH).find((e) => e.oid === OID.basicConstraints)!.value), '30060101ff020100');
  t.is(hex(ca.get(OID.keyUsage)!.value), '03020204', 'keyCertSign only');
  const slot = new Map(slotCertificateExtensions().map((e) => [e.oid, e]));
  t.is(hex(slot.get(OID.basicConstraints)!.value), '3000');
  t.is(hex(slot.get(OID.keyUsage)!.value), '03020780', 'digitalSignature');
  t.true([...ca.values(), ...slot.values()].every((e) => e.critical));
});

test('openssl reads the limits; missingAttestationLimits finds a certificate without them', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-limits-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const limited = await selfSigned({ caPathLength: AIK_PATH_LENGTH });
  await writeFile(join(dir, 'ca.pem'), toPem(limited));
  const { stdout } = await run('openssl', ['x509', '-in', join(dir, 'ca.pem'), '-noout', '-ext', 'basicConstraints,keyUsage,extendedKeyUsage,nameConstraints']);
  t.regex(stdout, /Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
  t.regex(stdout, /Key Usage: critical\s+Certificate Sign\n/);
  t.regex(stdout, /Extended Key Usage: critical\s+2\.23\.133\.8\.3, 2\.25\.186257027045783777968932578990947688637\.4/);
  t.regex(stdout, /Permitted:\s+email:invalid\s+Excluded:\s+DNS:\s+IP:0\.0\.0\.0\/0\.0\.0\.0\s+IP:0:0:0:0:0:0:0:0\/0:0:0:0:0:0:0:0\s+email:\s+email:invalid/);
  t.deepEqual(missingAttestationLimits(limited, AIK_PATH_LENGTH), []);
  t.deepEqual(missingAttestationLimits(limited, ROOT_PATH_LENGTH), ['pathLenConstraint 1']);
  const leaf = await selfSigned('slot');
  t.deepEqual(missingAttestationLimits(leaf, AIK_PATH_LENGTH), [
    'pathLenConstraint 0',
    'keyUsage keyCertSign only',
    'extendedKeyUsage attestation only',
    'name constraints excluding every DNS name, IP address and mail address',
  ]);
});
