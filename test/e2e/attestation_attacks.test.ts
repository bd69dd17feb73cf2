/**
 * The attacks of a root user on a card's machine against relying parties (issue 14), run for real:
 * swtpm with EK certificates, tpmvsc-ca, tpmvscd, yubico-piv-tool for the card's own attestations,
 * tpm2-tools with the card's files for the attacker (test/helpers/attestation_attacker.ts), and
 * the relying party's tools run as `nobody`: openssl verify, NSS certutil -V, tpmvscmgr
 * verify-attestation.
 *
 *   1. the AIK signs a certificate for a bank's TLS name (DNS, IP) or a mail address: the AIK's
 *      genuine signature, which every verifier refuses because of the chain's limits;
 *   2. the AIK certifies a key made with tpm2_create: verify-attestation refuses it, naming why;
 *      a copy of the card's own template with a password root knows is what it cannot tell.
 */
import test from 'ava';
import { X509Certificate } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { projectProgram, runProgram, type CommandResult, type Stack, startStack } from '../helpers/stack.js';
import { CREATE_WITH_PUK, DEFAULT_MANAGEMENT_KEY, pivTool, readerName } from '../helpers/piv_tools.js';
import { createLocalCa, provisionEkState } from '../helpers/swtpm_ek.js';
import { startCaProcess, type CaProcess } from '../helpers/attestation_ca.js';
import { RootAttacker, extendedKeyUsage, mintCertificate, readCardFiles, someSubjectKey, subjectAltName } from '../helpers/attestation_attacker.js';
import { buildCertificate, certificatesFromPem, toPem } from '../../attestation/certificate_builder.js';
import { OID_TPM_KEY_EVIDENCE } from '../../attestation/oids.js';
import { encodeKeyEvidence, qualifyingDataFor } from '../../attestation/tpm_evidence.js';
import { slotCertificateCommonName } from '../../attestation/tpm_key_attestor.js';
import { CERTIFY_POLICY_DIGEST } from '../../vault/attestation_key.js';
import { publicKeyToNode } from '../../tpm/index.js';

interface Card {
  mode: 'AIK_AND_CERT' | 'AIK_ONLY';
  slot: number;
  /** openssl verify's chain options: the trust anchor (and the AIK certificate as untrusted). */
  chain: string[];
  /** The anchor the relying party trusts. */
  anchor: string;
  aikPem: string;
  slotPem: string;
}

let stack: Stack | undefined;
let ca: CaProcess | undefined;
let work: string;
/** What the relying party sees: world-readable, used by the tools run as nobody. */
let rp: string;
const cards: Card[] = [];

const SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const EMAIL_PROTECTION = '1.3.6.1.5.5.7.3.4';

async function publish(name: string, content: string | Uint8Array): Promise<string> {
  const path = join(rp, name);
  await writeFile(path, content);
  await chmod(path, 0o644);
  return path;
}

/** A relying party's program, run as an unprivileged user. */
function asNobody(program: string, args: string[]): Promise<CommandResult> {
  return runProgram('setpriv', ['--reuid=nobody', '--regid=nogroup', '--clear-groups', program, ...args]);
}

const verifyAttestationAsNobody = (args: string[]): Promise<CommandResult> =>
  asNobody(process.execPath, [...projectProgram('cli/main'), 'verify-attestation', ...args]);

test.before(async () => {
  work = await mkdtemp(join(tmpdir(), 'tpmvsc-attack-'));
  rp = await mkdtemp(join(tmpdir(), 'tpmvsc-rp-'));
  await chmod(rp, 0o755);
  const manufacturer = await createLocalCa(work);
  const swtpmStateDir = await provisionEkState(work, manufacturer);
  ca = await startCaProcess(join(work, 'ca'), manufacturer.rootsDir);
  stack = await startStack({ readers: 2, swtpmStateDir, daemonArgs: ['--attestation-ca', ca.url] });
  const root = await publish('root.pem', await readFile(join(ca.stateDir, 'ca.pem')));
  for (const [slot, mode] of [[0, 'AIK_AND_CERT'], [1, 'AIK_ONLY']] as const) {
    const created = await stack.cli([...CREATE_WITH_PUK, '/attestation', mode]);
    if (created.code !== 0) throw new Error(`create ${mode}: ${created.stderr}`);
    const reader = readerName(slot);
    const generated = await pivTool(stack, reader, [`--key=${DEFAULT_MANAGEMENT_KEY}`, '-a', 'generate', '-s', '9a', '-A', 'ECCP256']);
    if (generated.code !== 0) throw new Error(`generate: ${generated.stderr}`);
    const attested = await pivTool(stack, reader, ['-a', 'attest', '-s', '9a']);
    const aik = await pivTool(stack, reader, ['-a', 'read-certificate', '-s', 'f9']);
    if (attested.code !== 0 || aik.code !== 0) throw new Error(`attest: ${attested.stderr}${aik.stderr}`);
    const aikPem = await publish(`${mode}-f9.pem`, aik.stdout);
    const slotPem = await publish(`${mode}-9a.pem`, attested.stdout);
    const anchor = mode === 'AIK_AND_CERT' ? root : aikPem;
    const chain = mode === 'AIK_AND_CERT' ? ['-CAfile', root, '-untrusted', aikPem] : ['-CAfile', aikPem];
    cards.push({ mode, slot, chain, anchor, aikPem, slotPem });
  }
});

test.after.always(async () => {
  await stack?.stop();
  await ca?.stop();
  if (work) await rm(work, { recursive: true, force: true });
  if (rp) await rm(rp, { recursive: true, force: true });
});

/** Stops the daemon (swtpm serves one connection) while root works on the TPM with the card files. */
async function asRootAttacker<T>(card: Card, attack: (attacker: RootAttacker, serial: number) => Promise<T>): Promise<T> {
  const files = await readCardFiles(stack!.stateDir, card.slot);
  await stack!.stopDaemon();
  try {
    return await attack(new RootAttacker(stack!.swtpm.tcti, work, files), files.serial);
  } finally {
    await stack!.startDaemon();
  }
}

const openssl = (card: Card, leaf: string, extra: string[] = []): Promise<CommandResult> => asNobody('openssl', ['verify', ...extra, ...card.chain, leaf]);

/** An NSS database (as nobody) trusting the card's anchor for everything, holding the chain and `leaves`. */
async function nssDatabase(card: Card, leaves: Record<string, string>): Promise<(nick: string, usage: string) => Promise<CommandResult>> {
  const db = `sql:${await mkdtemp(join(rp, `nss-${card.mode}-`))}`;
  await chmod(db.slice(4), 0o777);
  const certutil = (args: string[]): Promise<CommandResult> => asNobody('certutil', ['-d', db, ...args]);
  await certutil(['-N', '--empty-password']);
  await certutil(['-A', '-n', 'anchor', '-t', 'CT,C,C', '-i', card.anchor]);
  if (card.mode === 'AIK_AND_CERT') await certutil(['-A', '-n', 'aik', '-t', ',,', '-i', card.aikPem]);
  for (const [nick, path] of Object.entries(leaves)) await certutil(['-A', '-n', nick, '-t', ',,', '-i', path]);
  return (nick, usage) => certutil(['-V', '-n', nick, '-u', usage]);
}

test.serial('slot certificates verify as PIV attestations are checked (openssl verify, -purpose any) and pass no TLS or mail purpose (OpenSSL, NSS)', async (t) => {
  for (const card of cards) {
    const plain = await openssl(card, card.slotPem);
    t.is(plain.code, 0, `${card.mode}: ${plain.stdout}${plain.stderr}`);
    t.is((await openssl(card, card.slotPem, ['-purpose', 'any'])).code, 0, card.mode);
    for (const purpose of ['sslserver', 'sslclient', 'smimesign']) {
      const refused = await openssl(card, card.slotPem, ['-purpose', purpose]);
      t.not(refused.code, 0, `${card.mode} ${purpose}`);
      t.regex(refused.stdout + refused.stderr, /unsuitable certificate purpose/);
    }
    const nss = await nssDatabase(card, { slot: card.slotPem });
    for (const usage of ['V', 'C', 'S', 'R']) {
      const result = await nss('slot', usage);
      t.regex(result.stdout + result.stderr, /certificate is invalid/, `${card.mode} NSS -u ${usage}`);
    }
    const verified = await verifyAttestationAsNobody([...(card.mode === 'AIK_AND_CERT' ? ['--ca', card.anchor] : ['--self-issued']), card.slotPem, card.aikPem]);
    t.is(verified.code, 0, verified.stdout + verified.stderr);
    t.regex(verified.stdout, /ok {4}the chain is limited to attestation/);
  }
});

test.serial('root mints TLS and mail certificates with a card\'s AIK (TPM2_Hash ticket + TPM2_Sign): genuine AIK signatures, refused by openssl (with and without -purpose sslserver) and NSS', async (t) => {
  for (const card of cards) {
    const aikDer = certificatesFromPem(await readFile(card.aikPem, 'latin1'))[0]!;
    const minted = await asRootAttacker(card, async (attacker) => {
      const mint = (subjectCommonName: string, extensions: Parameters<typeof mintCertificate>[0]['extensions']): Promise<Uint8Array> =>
        mintCertificate({ issuer: aikDer, subjectCommonName, subjectPublicKey: someSubjectKey(), extensions }, (tbs) => attacker.signWithAik(tbs));
      return {
        dns: await mint('www.bank.example', [subjectAltName({ dns: ['www.bank.example'] }), extendedKeyUsage([SERVER_AUTH])]),
        ip: await mint('bank by address', [subjectAltName({ ip: [Uint8Array.of(192, 0, 2, 1), Uint8Array.of(0x20, 0x01, 0x0d, 0xb8, ...new Array<number>(11).fill(0), 1)] }), extendedKeyUsage([SERVER_AUTH])]),
        email: await mint('bank CEO', [subjectAltName({ email: ['ceo@bank.example'] }), extendedKeyUsage([EMAIL_PROTECTION])]),
      };
    });
    const aikKey = new X509Certificate(aikDer).publicKey;
    const paths: Record<string, string> = {};
    for (const [kind, der] of Object.entries(minted)) {
      t.true(new X509Certificate(der).verify(aikKey), `${card.mode} ${kind}: the AIK really signed it`);
      paths[kind] = await publish(`${card.mode}-minted-${kind}.pem`, toPem(der));
    }
    const nss = await nssDatabase(card, paths);
    for (const [kind, path] of Object.entries(paths)) {
      const plain = await openssl(card, path);
      t.not(plain.code, 0, `${card.mode} ${kind}`);
      t.regex(plain.stdout + plain.stderr, kind === 'email' ? /permitted subtree violation/ : /excluded subtree violation/, `${card.mode} ${kind}`);
      const server = await openssl(card, path, ['-purpose', kind === 'email' ? 'smimesign' : 'sslserver']);
      t.not(server.code, 0);
      t.regex(server.stdout + server.stderr, /unsuitable certificate purpose/);
      for (const usage of kind === 'email' ? ['V', 'S'] : ['V']) {
        const result = await nss(kind, usage);
        t.regex(result.stdout + result.stderr, /certificate is invalid/, `${card.mode} ${kind} NSS -u ${usage}: ${result.stdout}${result.stderr}`);
      }
    }
  }
});

/** A slot certificate as ATTEST makes it, for a key root made, with evidence the AIK made for it. */
async function forgedSlotCertificate(
  card: Card,
  attacker: RootAttacker,
  serial: number,
  key: Parameters<RootAttacker['createKey']>[0] | 'imported',
  password = '',
): Promise<string> {
  const aik = new X509Certificate(certificatesFromPem(await readFile(card.aikPem, 'latin1'))[0]!);
  const usage = { pinPolicy: 'once' as const, touchPolicy: 0 };
  const created = key === 'imported' ? await attacker.importKey() : await attacker.createKey({ ...key, password });
  const certified = await attacker.certifyWithAik(created, qualifyingDataFor(0x9a, serial, usage), password);
  const evidence = encodeKeyEvidence({ slot: 0x9a, serial, keyPublic: created.publicArea, attest: certified.attest, signature: certified.signature, usage });
  const der = await buildCertificate(
    {
      subjectCommonName: slotCertificateCommonName(0x9a),
      issuerCommonName: /CN=([^\n,]*)/.exec(aik.subject)![1]!,
      subjectPublicKey: new Uint8Array(publicKeyToNode(created.publicArea).export({ format: 'der', type: 'spki' })),
      issuerPublicKey: new Uint8Array(aik.publicKey.export({ format: 'der', type: 'spki' })),
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 86_400_000),
      role: 'slot',
      extensions: [{ oid: OID_TPM_KEY_EVIDENCE, critical: false, value: evidence }],
    },
    (tbs) => attacker.signWithAik(tbs),
  );
  return publish(`${card.mode}-forged-${attacker.keysMade}.pem`, toPem(der));
}

const CARD_ATTRIBUTES = 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|sign|decrypt';

test.serial('a key made with tpm2_create and certified by the card\'s AIK is refused by verify-attestation, which names the reason', async (t) => {
  const card = cards[0]!;
  const verify = (slotPem: string, json = false): Promise<CommandResult> =>
    verifyAttestationAsNobody(['--ca', card.anchor, slotPem, card.aikPem, ...(json ? ['--json'] : [])]);

  // Root's work, in one session: each key certified by the AIK, each certificate signed by it.
  const [plain, imported, noPolicy, lookalike] = await asRootAttacker(card, async (attacker, serial) => [
    // tpm2_create's defaults: no PIN, no card policy, not noDA.
    await forgedSlotCertificate(card, attacker, serial, {}),
    // A key made outside and brought in with tpm2_import: none of the three origin attributes.
    await forgedSlotCertificate(card, attacker, serial, 'imported'),
    // The card's attributes but no policy.
    await forgedSlotCertificate(card, attacker, serial, { attributes: CARD_ATTRIBUTES }),
    // The card's whole template with a password root knows.
    await forgedSlotCertificate(card, attacker, serial, { attributes: CARD_ATTRIBUTES, policy: CERTIFY_POLICY_DIGEST }, 'root-knows-this'),
  ]);
  const refused = await verify(plain);
  t.is(refused.code, 1, refused.stdout);
  t.regex(refused.stderr, /^tpmvscmgr: The attestation does not verify: the key's attributes \(.*\) are not a card key's \(-noDA\)\n$/);
  t.regex(refused.stdout, /ok {4}TPMS_ATTEST .* is signed by the AIK/, 'the TPM evidence itself is genuine');
  t.regex(refused.stdout, /FAIL {2}the key's attributes/);
  const json = JSON.parse((await verify(plain, true)).stdout) as { ok: boolean; verified: boolean; exitCode: number; checks: { check: string; result: string }[] };
  t.false(json.ok);
  t.is(json.exitCode, 1);
  t.deepEqual(json.checks.at(-1), { ...json.checks.at(-1)!, check: 'key-attributes', result: 'failed' });
  t.true(json.checks.slice(0, -1).every(({ result }) => result === 'passed'));

  const importedRefused = await verify(imported);
  t.is(importedRefused.code, 1);
  t.regex(importedRefused.stderr, /lacks fixedTPM, fixedParent, sensitiveDataOrigin: not generated in this TPM/);

  const noPolicyRefused = await verify(noPolicy);
  t.is(noPolicyRefused.code, 1);
  t.regex(noPolicyRefused.stderr, /the key's authPolicy \(empty: no policy\) is not the card's/);

  // What no attestation can tell: the look-alike passes.
  const lookalikeVerified = await verify(lookalike);
  t.is(lookalikeVerified.code, 0, 'documented limit (docs/ATTESTATION.md): a TPM never shows an authValue');
  t.regex(lookalikeVerified.stdout, /not proven: that the card application made the key/);
});

test.serial('verify-attestation --slot / --serial refuse an attestation of another slot or card', async (t) => {
  const card = cards[0]!;
  const files = await readCardFiles(stack!.stateDir, card.slot);
  const args = ['--ca', card.anchor, card.slotPem, card.aikPem];
  t.is((await verifyAttestationAsNobody([...args, '--slot', '9a', '--serial', String(files.serial)])).code, 0);
  const otherSlot = await verifyAttestationAsNobody([...args, '--slot', '9c']);
  t.is(otherSlot.code, 1);
  t.regex(otherSlot.stderr, /the evidence is for slot 9a, not the expected 9c/);
  const otherCard = await verifyAttestationAsNobody([...args, '--serial', String(files.serial + 1)]);
  t.is(otherCard.code, 1);
  t.regex(otherCard.stderr, /the evidence is for card \d+, not the expected \d+/);
  const badSlot = await verifyAttestationAsNobody([...args, '--slot', 'zz']);
  t.is(badSlot.code, 2);
  t.regex(badSlot.stderr, /--slot takes a PIV slot in hex/);
});
