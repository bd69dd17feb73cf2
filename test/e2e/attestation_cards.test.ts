/**
 * /attestation end to end: tpmvsc-ca trusting a test "manufacturer" (swtpm_localca), a swtpm
 * provisioned with EK certificates by swtpm_setup, tpmvscd with --attestation-ca, tpmvscmgr,
 * pcscd + vpcd and yubico-piv-tool / openssl as the relying party's tools.
 */
import test from 'ava';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runProgram, startStack, type Stack } from '../helpers/stack.js';
import { CREATE_WITH_PUK, DEFAULT_MANAGEMENT_KEY, pivTool, readerName, tempDir } from '../helpers/piv_tools.js';
import { createLocalCa, provisionEkState } from '../helpers/swtpm_ek.js';
import { startCaProcess, type CaProcess } from '../helpers/attestation_ca.js';
import { setHierarchyPassword } from '../helpers/tpm_passwords.js';

let stack: Stack | undefined;
let ca: CaProcess | undefined;
let work: { path: string; cleanup: () => Promise<void> };

test.before(async () => {
  work = await tempDir();
  const manufacturer = await createLocalCa(work.path);
  const swtpmStateDir = await provisionEkState(work.path, manufacturer);
  ca = await startCaProcess(join(work.path, 'ca'), manufacturer.rootsDir);
  stack = await startStack({ readers: 4, swtpmStateDir, daemonArgs: ['--attestation-ca', ca.url] });
});

test.after.always(async () => {
  await stack?.stop();
  await ca?.stop();
  await work?.cleanup();
});

/** Generates a key in `slot`, then fetches ATTEST's certificate and the F9 (AIK) certificate. */
async function attestSlot(reader: string, slot: string, algorithm: string, name: string): Promise<{ slotPem: string; aikPem: string }> {
  const generated = await pivTool(stack!, reader, [`--key=${DEFAULT_MANAGEMENT_KEY}`, '-a', 'generate', '-s', slot, '-A', algorithm]);
  if (generated.code !== 0) throw new Error(`generate ${slot}: ${generated.stderr}`);
  const attested = await pivTool(stack!, reader, ['-a', 'attest', '-s', slot]);
  if (attested.code !== 0) throw new Error(`attest ${slot}: ${attested.stderr}`);
  const aik = await pivTool(stack!, reader, ['-a', 'read-certificate', '-s', 'f9']);
  if (aik.code !== 0) throw new Error(`read f9: ${aik.stderr}`);
  const slotPem = join(work.path, `${name}-slot.pem`);
  const aikPem = join(work.path, `${name}-aik.pem`);
  await writeFile(slotPem, attested.stdout);
  await writeFile(aikPem, aik.stdout);
  return { slotPem, aikPem };
}

test.serial('AIK_AND_CERT: create, generate 9A, yubico-piv-tool attest; verify-attestation and openssl accept the chain', async (t) => {
  const created = await stack!.cli([...CREATE_WITH_PUK, '/attestation', 'AIK_AND_CERT']);
  t.is(created.code, 0, created.stderr);
  const reader = readerName(0);
  const { slotPem, aikPem } = await attestSlot(reader, '9a', 'ECCP256', 'cert');
  const caPem = join(ca!.stateDir, 'ca.pem');
  const verified = await stack!.cli(['verify-attestation', '--ca', caPem, slotPem, aikPem]);
  t.is(verified.code, 0, verified.stderr);
  t.regex(verified.stdout, /signed by the CA/);
  t.regex(verified.stdout, /AIK issuance policy: ek-chain/);
  t.regex(verified.stdout, /verified: the key in slot 9a/);
  const openssl = await runProgram('openssl', ['verify', '-CAfile', caPem, '-untrusted', aikPem, slotPem]);
  t.is(openssl.code, 0, openssl.stderr + openssl.stdout);
  // The same slot certificate does not verify against another trust anchor, nor when tampered.
  t.not((await stack!.cli(['verify-attestation', '--self-issued', slotPem, aikPem])).code, 0);
  const pem = await readFile(slotPem, 'utf8');
  const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  der[der.length - 80]! ^= 0x01;
  const tampered = join(work.path, 'tampered.der');
  await writeFile(tampered, der);
  const refused = await stack!.cli(['verify-attestation', '--ca', caPem, tampered, aikPem]);
  t.is(refused.code, 1);
  t.regex(refused.stderr, /does not verify/);
  t.true((await readFile(join(ca!.stateDir, 'issued.jsonl'), 'utf8')).includes('"trust":"ek-chain"'));
});

const KEY_SLOTS: Record<string, string[]> = { RSA2048: ['9a', '9c', '9d', '9e'], ECCP256: ['82', '83', '84', '85'], ECCP384: ['86', '87', '88', '89'] };
const ALGORITHM_NAMES: Record<string, string> = { RSA2048: 'rsa2048', ECCP256: 'eccp256', ECCP384: 'eccp384' };

for (const algorithm of Object.keys(KEY_SLOTS)) {
  test.serial(`${algorithm} with each PIN policy (slot default, never, once, always) attests and verifies (verify-attestation --json, openssl verify)`, async (t) => {
    const reader = readerName(0);
    const caPem = join(ca!.stateDir, 'ca.pem');
    const aikPem = join(work.path, 'cert-aik.pem');
    const givenPolicies = [undefined, 'never', 'once', 'always'];
    for (const [i, slot] of KEY_SLOTS[algorithm]!.entries()) {
      const given = givenPolicies[i];
      const expected = given ?? (slot === '9c' ? 'always' : slot === '9e' ? 'never' : 'once');
      const label = `${algorithm} in ${slot}, PIN policy ${given ?? `default (${expected})`}`;
      const generated = await pivTool(stack!, reader, [`--key=${DEFAULT_MANAGEMENT_KEY}`, '-a', 'generate', '-s', slot, '-A', algorithm, ...(given ? [`--pin-policy=${given}`] : [])]);
      t.is(generated.code, 0, `${label}: ${generated.stderr}`);
      const attested = await pivTool(stack!, reader, ['-a', 'attest', '-s', slot]);
      t.is(attested.code, 0, `${label}: ${attested.stderr}`);
      const slotPem = join(work.path, `policy-${slot}.pem`);
      await writeFile(slotPem, attested.stdout);
      const verified = await stack!.cli(['verify-attestation', '--ca', caPem, slotPem, aikPem, '--slot', slot, '--json']);
      t.is(verified.code, 0, `${label}: ${verified.stdout}${verified.stderr}`);
      const report = JSON.parse(verified.stdout) as { verified: boolean; pinPolicy: string; slot: number; key: { algorithm: string; attributes: string[] }; checks: { result: string }[] };
      t.true(report.verified, label);
      t.is(report.pinPolicy, expected, label);
      t.is(report.slot, parseInt(slot, 16), label);
      t.is(report.key.algorithm, ALGORITHM_NAMES[algorithm], label);
      t.true(['fixedTPM', 'fixedParent', 'sensitiveDataOrigin'].every((a) => report.key.attributes.includes(a)), label);
      t.true(report.checks.every(({ result }) => result === 'passed'), label);
      const openssl = await runProgram('openssl', ['verify', '-CAfile', caPem, '-untrusted', aikPem, slotPem]);
      t.is(openssl.code, 0, `${label}: ${openssl.stderr}${openssl.stdout}`);
    }
  });
}

test.serial('AIK_ONLY: the self-issued AIK certificate anchors the attestation; two cards have different AIKs', async (t) => {
  const created = await stack!.cli([...CREATE_WITH_PUK, '/attestation', 'AIK_ONLY']);
  t.is(created.code, 0, created.stderr);
  const { slotPem, aikPem } = await attestSlot(readerName(1), '9c', 'RSA2048', 'only');
  const verified = await stack!.cli(['verify-attestation', '--self-issued', slotPem, aikPem]);
  t.is(verified.code, 0, verified.stderr);
  t.regex(verified.stdout, /self-issued/);
  t.not((await stack!.cli(['verify-attestation', '--ca', join(ca!.stateDir, 'ca.pem'), slotPem, aikPem])).code, 0);
  const firstAik = await readFile(join(work.path, 'cert-aik.pem'), 'utf8');
  const keyOf = async (pem: string): Promise<string> => (await runProgram('openssl', ['x509', '-noout', '-pubkey', '-in', pem])).stdout;
  t.not(await keyOf(aikPem), await keyOf(join(work.path, 'cert-aik.pem')));
  t.truthy(firstAik);
});

async function persistentHandles(): Promise<string> {
  await stack!.stopDaemon();
  try {
    const result = await runProgram('tpm2_getcap', ['-T', stack!.swtpm.tcti, 'handles-persistent']);
    const nv = await runProgram('tpm2_getcap', ['-T', stack!.swtpm.tcti, 'handles-nv-index']);
    return result.stdout + nv.stdout;
  } finally {
    await stack!.startDaemon();
  }
}

async function stateFiles(): Promise<string[]> {
  return (await readdir(stack!.stateDir, { recursive: true })).map(String).sort();
}

test.serial('an endorsement password: AIK_AND_CERT fails clearly without it and works with --endorsement-auth-file', async (t) => {
  const listBefore = (await stack!.cli(['list'])).stdout;
  await stack!.stopDaemon();
  await setHierarchyPassword(stack!.swtpm.tcti, 'endorsement', 'endorsepass');
  await stack!.startDaemon();
  const refused = await stack!.cli([...CREATE_WITH_PUK, '/attestation', 'AIK_AND_CERT']);
  t.is(refused.code, 5, refused.stderr);
  t.regex(refused.stderr, /endorsement hierarchy's authorization: it has a password: give it with --endorsement-auth-file/, refused.stderr);
  t.is((await stack!.cli(['list'])).stdout, listBefore, 'no card is left behind');

  const file = join(work.path, 'endorsement-auth');
  await writeFile(file, 'endorsepass\n', { mode: 0o600 });
  await stack!.stopDaemon();
  await stack!.startDaemon(['--endorsement-auth-file', file]);
  const created = await stack!.cli([...CREATE_WITH_PUK, '/attestation', 'AIK_AND_CERT', '--json']);
  t.is(created.code, 0, created.stderr);
  const { instance, reader } = JSON.parse(created.stdout) as { instance: string; reader: string };
  const { slotPem, aikPem } = await attestSlot(reader, '9a', 'ECCP256', 'endorsement');
  const verified = await stack!.cli(['verify-attestation', '--ca', join(ca!.stateDir, 'ca.pem'), slotPem, aikPem]);
  t.is(verified.code, 0, verified.stderr);
  t.false(stack!.daemonLog().includes('endorsepass'), 'the password is not logged');
  t.is((await stack!.cli(['destroy', '/instance', instance])).code, 0);
});

test.serial('CA unreachable: create fails with a clear message and leaves no reader, file or TPM object', async (t) => {
  const handlesBefore = await persistentHandles();
  const filesBefore = await stateFiles();
  const listBefore = (await stack!.cli(['list'])).stdout;
  await ca!.stop();
  const created = await stack!.cli([...CREATE_WITH_PUK, '/attestation', 'AIK_AND_CERT']);
  t.is(created.code, 1, created.stdout);
  t.regex(created.stderr, /attestation CA .* is unreachable/);
  t.is((await stack!.cli(['list'])).stdout, listBefore);
  t.deepEqual(await stateFiles(), filesBefore);
  t.is(await persistentHandles(), handlesBefore);
});
