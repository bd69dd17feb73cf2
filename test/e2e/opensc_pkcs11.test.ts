/**
 * OpenSC end to end: pkcs11-tool, pkcs15-tool and opensc-tool against two TPM virtual
 * smart cards in a private stack (swtpm, pcscd + vpcd, tpmvscd). Every signature is
 * verified and every decryption / ECDH result compared with openssl.
 *
 * Card A (reader 0): 9A RSA2048, 9C ECCP256, 9D RSA2048, 9E RSA2048.
 * Card B (reader 1): 9A RSA2048, 9D ECCP256 (ECDH).
 */
import test from 'ava';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { runProgram, startStack, type CommandResult, type Stack } from '../helpers/stack.js';
import {
  DEFAULT_PIN, OPENSC_MODULE, createDefaultCard, makeTestCa, mustSucceed, provisionSlot, type ProvisionedSlot,
} from '../helpers/card_setup.js';

const READER_A = 'TPM Virtual Smart Card 0 00 00';
const READER_B = 'TPM Virtual Smart Card 0 00 01';

interface Fixture {
  stack: Stack;
  dir: string;
  a: Record<string, ProvisionedSlot>;
  b: Record<string, ProvisionedSlot>;
}

let fixture: Fixture | undefined;

test.before(async () => {
  const stack = await startStack({ readers: 2 });
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-opensc-'));
  fixture = { stack, dir, a: {}, b: {} };
  await createDefaultCard(stack, 'Alice');
  await createDefaultCard(stack, 'Bob');
  const ca = await makeTestCa(dir);
  for (const [slot, algorithm] of [['9a', 'RSA2048'], ['9c', 'ECCP256'], ['9d', 'RSA2048'], ['9e', 'RSA2048']] as const) {
    fixture.a[slot] = await provisionSlot(stack, { reader: READER_A, slot, algorithm, subject: `/CN=Alice ${slot}`, ca, dir, prefix: 'a' });
  }
  for (const [slot, algorithm] of [['9a', 'RSA2048'], ['9d', 'ECCP256']] as const) {
    fixture.b[slot] = await provisionSlot(stack, { reader: READER_B, slot, algorithm, subject: `/CN=Bob ${slot}`, ca, dir, prefix: 'b' });
  }
});

test.after.always(async () => {
  await fixture?.stack.stop();
  if (fixture) await rm(fixture.dir, { recursive: true, force: true });
});

function fx(): Fixture {
  if (!fixture) throw new Error('fixture not set up');
  return fixture;
}

/** pkcs11-tool on the token whose 9A certificate says "<label> 9a" (the OpenSC token label). */
function pkcs11(label: string, args: string[]): Promise<CommandResult> {
  return fx().stack.run('pkcs11-tool', ['--module', OPENSC_MODULE, '--token-label', `${label} 9a`, ...args]);
}

async function tempFile(name: string, content: Uint8Array | string): Promise<string> {
  const path = join(fx().dir, name);
  await writeFile(path, content);
  return path;
}

test.serial('pkcs11-tool lists both tokens, their objects, and its self-test passes', async (t) => {
  const listing = mustSucceed(await fx().stack.run('pkcs11-tool', ['--module', OPENSC_MODULE, '-L']), 'pkcs11-tool -L');
  t.regex(listing.stdout, /token label\s+:\s+Alice 9a/);
  t.regex(listing.stdout, /token label\s+:\s+Bob 9a/);
  const serials = [...listing.stdout.matchAll(/serial num\s+:\s+(\S+)/g)].map((m) => m[1]);
  t.is(serials.length, 2, listing.stdout);
  t.not(serials[0], serials[1], 'each card has its own token serial (CHUID GUID)');
  for (const serial of serials) t.notRegex(serial!, /^0+$/, 'the token serial comes from the CHUID, not zeros');

  const objects = mustSucceed(await pkcs11('Alice', ['-O']), 'pkcs11-tool -O');
  for (const label of ['PIV AUTH pubkey', 'SIGN pubkey', 'KEY MAN pubkey', 'CARD AUTH pubkey']) t.true(objects.stdout.includes(label), label);
  for (const subject of ['Alice 9a', 'Alice 9c', 'Alice 9d', 'Alice 9e']) t.true(objects.stdout.includes(`CN=${subject}`), subject);
  t.true(objects.stdout.includes('CARD AUTH key'), '9E private key visible without login');
  t.false(objects.stdout.includes('PIV AUTH key'), '9A private key hidden before login');

  const selfTest = await pkcs11('Alice', ['-l', '-p', DEFAULT_PIN, '-t']);
  t.is(selfTest.code, 0, selfTest.stderr);
  t.true(selfTest.stdout.includes('No errors'), selfTest.stdout);
});

test.serial('pkcs15-tool -D shows PIN, PUK, keys and certificates', async (t) => {
  const dump = mustSucceed(await fx().stack.run('pkcs15-tool', ['--reader', '0', '-D']), 'pkcs15-tool -D');
  for (const item of ['PIN [PIN]', 'PIN [PIV PUK]', 'Private RSA Key [PIV AUTH key]', 'Private EC Key [SIGN key]',
    'Private RSA Key [KEY MAN key]', 'Private RSA Key [CARD AUTH key]', 'X.509 Certificate [Certificate for PIV Authentication]',
    'X.509 Certificate [Certificate for Card Authentication]']) {
    t.true(dump.stdout.includes(item), `${item} in:\n${dump.stdout}`);
  }
  t.notRegex(dump.stdout, /Serial number\s+:\s+0+\s*$/m);
});

test.serial('RSA-PKCS and RSA-PSS signatures from 9A verify with openssl', async (t) => {
  const data = await tempFile('sign-data.bin', randomBytes(1000));
  const { publicKey } = fx().a['9a']!;
  const pkcs1 = join(fx().dir, 'sig-pkcs1.bin');
  mustSucceed(await pkcs11('Alice', ['-l', '-p', DEFAULT_PIN, '--sign', '--id', '01', '-m', 'SHA256-RSA-PKCS', '-i', data, '-o', pkcs1]), 'sign PKCS#1');
  const verified = await runProgram('openssl', ['dgst', '-sha256', '-verify', publicKey, '-signature', pkcs1, data]);
  t.is(verified.code, 0, verified.stdout + verified.stderr);
  t.true(verified.stdout.includes('Verified OK'));

  const pss = join(fx().dir, 'sig-pss.bin');
  mustSucceed(await pkcs11('Alice', ['-l', '-p', DEFAULT_PIN, '--sign', '--id', '01', '-m', 'SHA256-RSA-PKCS-PSS', '-i', data, '-o', pss]), 'sign PSS');
  const pssOk = await runProgram('openssl', ['dgst', '-sha256', '-sigopt', 'rsa_padding_mode:pss', '-sigopt', 'rsa_pss_saltlen:auto',
    '-verify', publicKey, '-signature', pss, data]);
  t.is(pssOk.code, 0, pssOk.stdout + pssOk.stderr);

  // A changed message must not verify (the check above can fail).
  const other = await tempFile('sign-other.bin', randomBytes(1000));
  t.not((await runProgram('openssl', ['dgst', '-sha256', '-verify', publicKey, '-signature', pkcs1, other])).code, 0);
});

test.serial('ECDSA over a SHA-256 hash with the 9C key verifies with openssl', async (t) => {
  const hash = await tempFile('ecdsa-hash.bin', createHash('sha256').update(randomBytes(64)).digest());
  const signature = join(fx().dir, 'sig-ecdsa.der');
  mustSucceed(await pkcs11('Alice', ['-l', '-p', DEFAULT_PIN, '--sign', '--id', '02', '-m', 'ECDSA', '--signature-format', 'openssl',
    '-i', hash, '-o', signature]), 'ECDSA sign');
  const verified = await runProgram('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', fx().a['9c']!.publicKey, '-in', hash, '-sigfile', signature]);
  t.is(verified.code, 0, verified.stdout + verified.stderr);
  t.true(verified.stdout.includes('Signature Verified Successfully'));
});

test.serial('9E signs without login', async (t) => {
  // pkcs11-tool --sign always logs in on a login-required token, so sign through openssl's
  // pkcs11 engine, which logs in only when the key is not visible without it.
  const hash = await tempFile('card-auth.hash', createHash('sha256').update(randomBytes(100)).digest());
  const signature = join(fx().dir, 'sig-9e.bin');
  const signed = await fx().stack.run('openssl', ['pkeyutl', '-engine', 'pkcs11', '-keyform', 'engine', '-sign',
    '-inkey', 'pkcs11:token=Alice%209a;object=CARD%20AUTH%20key;type=private', '-pkeyopt', 'digest:sha256', '-in', hash, '-out', signature]);
  t.is(signed.code, 0, signed.stderr);
  const verified = await runProgram('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', fx().a['9e']!.publicKey, '-pkeyopt', 'digest:sha256',
    '-in', hash, '-sigfile', signature]);
  t.is(verified.code, 0, verified.stdout + verified.stderr);
  // The 9A key needs the PIN: the same call without one fails.
  const locked = await fx().stack.run('openssl', ['pkeyutl', '-engine', 'pkcs11', '-keyform', 'engine', '-sign',
    '-inkey', 'pkcs11:token=Alice%209a;object=PIV%20AUTH%20key;type=private', '-pkeyopt', 'digest:sha256', '-in', hash, '-out', signature]);
  t.not(locked.code, 0, '9A is not usable without the PIN');
});

test.serial('RSA decryption on 9D: PKCS#1 v1.5 and OAEP', async (t) => {
  const message = randomBytes(48);
  const plain = await tempFile('plain.bin', message);
  const { publicKey } = fx().a['9d']!;
  const cases: Array<{ mechanism: string[]; pkeyopt: string[] }> = [
    { mechanism: ['-m', 'RSA-PKCS'], pkeyopt: [] },
    {
      mechanism: ['-m', 'RSA-PKCS-OAEP', '--hash-algorithm', 'SHA256', '--mgf', 'MGF1-SHA256'],
      pkeyopt: ['-pkeyopt', 'rsa_padding_mode:oaep', '-pkeyopt', 'rsa_oaep_md:sha256', '-pkeyopt', 'rsa_mgf1_md:sha256'],
    },
  ];
  for (const { mechanism, pkeyopt } of cases) {
    const encrypted = join(fx().dir, `enc-${mechanism[1]}.bin`);
    const decrypted = join(fx().dir, `dec-${mechanism[1]}.bin`);
    mustSucceed(await runProgram('openssl', ['pkeyutl', '-encrypt', '-pubin', '-inkey', publicKey, ...pkeyopt, '-in', plain, '-out', encrypted]), 'encrypt');
    const result = await pkcs11('Alice', ['-l', '-p', DEFAULT_PIN, '--decrypt', '--id', '03', ...mechanism, '-i', encrypted, '-o', decrypted]);
    t.is(result.code, 0, `${mechanism[1]}: ${result.stderr}`);
    t.deepEqual(await readFile(decrypted), message, `${mechanism[1]} round trip`);
  }
});

test.serial('ECDH derive on card B 9D matches openssl from the peer side', async (t) => {
  const peerKey = join(fx().dir, 'peer.key');
  const peerDer = join(fx().dir, 'peer.pub.der');
  mustSucceed(await runProgram('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', peerKey]), 'peer key');
  mustSucceed(await runProgram('openssl', ['pkey', '-in', peerKey, '-pubout', '-outform', 'DER', '-out', peerDer]), 'peer public');
  const cardSecret = join(fx().dir, 'ecdh-card.bin');
  mustSucceed(await pkcs11('Bob', ['-l', '-p', DEFAULT_PIN, '--derive', '-m', 'ECDH1-DERIVE', '--id', '03', '--input-file', peerDer,
    '--output-file', cardSecret]), 'ECDH on the card');
  const peerSecret = join(fx().dir, 'ecdh-peer.bin');
  mustSucceed(await runProgram('openssl', ['pkeyutl', '-derive', '-inkey', peerKey, '-peerkey', fx().b['9d']!.publicKey, '-out', peerSecret]), 'peer ECDH');
  const fromCard = await readFile(cardSecret);
  t.is(fromCard.length, 32);
  t.deepEqual(fromCard, await readFile(peerSecret));
});

test.serial('9C needs a VERIFY before every signature (raw APDUs through opensc-tool)', async (t) => {
  const hash = createHash('sha256').update('pin always').digest('hex');
  // 7C 24 { 82 00, 81 20 <hash> }: ECDSA P-256 (alg 11) with the 9C key.
  const sign = `0087119c26 7c24 8200 8120 ${hash} 00`.replace(/ /g, '');
  const verify = `0020008008${Buffer.from(DEFAULT_PIN).toString('hex')}`;
  const { stdout } = await fx().stack.run('opensc-tool', ['-r', '0', '-s', '00a4040005a000000308', '-s', verify, '-s', sign, '-s', sign,
    '-s', verify, '-s', sign]);
  const statuses = [...stdout.matchAll(/Received \(SW1=0x([0-9A-F]{2}), SW2=0x([0-9A-F]{2})\)/g)].map((m) => `${m[1]}${m[2]}`);
  t.deepEqual(statuses, ['9000', '9000', '9000', '6982', '9000', '9000'], stdout);
});

test.serial('two cards: addressed by --slot, token label and serial; a signature of one does not verify with the other', async (t) => {
  const listing = mustSucceed(await fx().stack.run('pkcs11-tool', ['--module', OPENSC_MODULE, '-L']), '-L');
  const slots = [...listing.stdout.matchAll(/^Slot \d+ \((0x[0-9a-f]+)\): (.*)$\n\s+token label\s+:\s+(.*)$/gm)].map((m) => ({
    id: m[1]!, reader: m[2]!.trim(), label: m[3]!.trim(),
  }));
  const slotA = slots.find((s) => s.reader === READER_A);
  const slotB = slots.find((s) => s.reader === READER_B);
  t.is(slotA?.label, 'Alice 9a');
  t.is(slotB?.label, 'Bob 9a');

  // By slot id: each slot shows its own card's certificate.
  for (const [slot, name] of [[slotA!, 'Alice'], [slotB!, 'Bob']] as const) {
    const objects = mustSucceed(await fx().stack.run('pkcs11-tool', ['--module', OPENSC_MODULE, '--slot', slot.id, '-O']), `-O ${slot.id}`);
    t.true(objects.stdout.includes(`CN=${name} 9a`), `${slot.id} is ${name}`);
    t.false(objects.stdout.includes(`CN=${name === 'Alice' ? 'Bob' : 'Alice'} 9a`));
  }
  // By serial: p11-kit URIs carry the serial; p11tool resolves it to the right token.
  const tokens = mustSucceed(await fx().stack.run('p11tool', ['--provider', OPENSC_MODULE, '--list-tokens']), 'p11tool');
  const bobUrl = /URL: (pkcs11:[^\n]*token=Bob%209a)/.exec(tokens.stdout)?.[1];
  t.truthy(bobUrl, tokens.stdout);
  const serial = /serial=([0-9a-f]+)/.exec(bobUrl ?? '')?.[1] ?? '';
  const bySerial = mustSucceed(await fx().stack.run('p11tool', ['--provider', OPENSC_MODULE, '--list-all-certs', `pkcs11:serial=${serial}`]), 'by serial');
  t.regex(bySerial.stdout, /token=Bob%209a;.*object=Certificate%20for%20PIV%20Authentication/, bySerial.stdout);
  t.false(bySerial.stdout.includes('Alice'), bySerial.stdout);

  const data = await tempFile('two-cards.bin', randomBytes(200));
  const signature = join(fx().dir, 'sig-bob.bin');
  mustSucceed(await fx().stack.run('pkcs11-tool', ['--module', OPENSC_MODULE, '--slot', slotB!.id, '-l', '-p', DEFAULT_PIN, '--sign', '--id', '01',
    '-m', 'SHA256-RSA-PKCS', '-i', data, '-o', signature]), 'sign on Bob');
  t.is((await runProgram('openssl', ['dgst', '-sha256', '-verify', fx().b['9a']!.publicKey, '-signature', signature, data])).code, 0, 'Bob key verifies');
  t.not((await runProgram('openssl', ['dgst', '-sha256', '-verify', fx().a['9a']!.publicKey, '-signature', signature, data])).code, 0, 'Alice key does not');
});
