/**
 * ykman 4.0.9 (python3-ykman / yubikey-manager) against a TPM virtual smart card on a
 * non-Yubico reader: piv info, key generation, certificates, and AES management keys
 * (yubico-piv-tool 2.2 only knows 3DES ones). Real swtpm, pcscd + vpcd, tpmvscd.
 * ykman needs the full reader name: vpcd makes two readers per port, and ykman refuses
 * a --reader filter that matches more than one.
 */
import test from 'ava';
import { createPublicKey } from 'node:crypto';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import { startStack, type Stack } from '../helpers/stack.js';
import { CREATE_WITH_PUK, DEFAULT_MANAGEMENT_KEY, DEFAULT_PIN, pivTool, readerName, tempDir, verifySelfSigned, ykmanPiv } from '../helpers/piv_tools.js';

let stack: Stack;
let work: { path: string; cleanup: () => Promise<void> };
const reader = readerName(0);

test.before(async () => {
  stack = await startStack({ readers: 2 });
  work = await tempDir();
  const created = await stack.cli(CREATE_WITH_PUK);
  if (created.code !== 0) throw new Error(`create failed: ${created.stderr}`);
});

test.after.always(async () => {
  await stack?.stop();
  await work?.cleanup();
});

test.serial('ykman piv info, keys generate, certificates generate and export', async (t) => {
  const empty = await ykmanPiv(stack, reader, ['info']);
  t.is(empty.code, 0, empty.stderr);
  t.regex(empty.stdout, /PIV version:\s+5\.4\.3/);
  t.regex(empty.stdout, /PIN tries remaining:\s+5/);

  const publicKeyFile = join(work.path, '9a.pub.pem');
  const generated = await ykmanPiv(stack, reader, ['keys', 'generate', '-a', 'ECCP384', '-m', DEFAULT_MANAGEMENT_KEY, '9a', publicKeyFile]);
  t.is(generated.code, 0, generated.stderr);
  const publicKey = createPublicKey(await readFile(publicKeyFile, 'utf8'));
  t.is(publicKey.asymmetricKeyDetails?.namedCurve, 'secp384r1');

  const certified = await ykmanPiv(stack, reader, ['certificates', 'generate', '-s', 'CN=ykman', '-a', 'SHA384', '-P', DEFAULT_PIN, '-m', DEFAULT_MANAGEMENT_KEY, '9a', publicKeyFile]);
  t.is(certified.code, 0, certified.stderr);
  const exported = await ykmanPiv(stack, reader, ['certificates', 'export', '9a', '-']);
  t.is(exported.code, 0, exported.stderr);
  t.regex(exported.stdout, /BEGIN CERTIFICATE/);
  const verified = await verifySelfSigned(work.path, exported.stdout, '9a');
  t.is(verified.code, 0, `the TPM's ECDSA P-384 signature verifies: ${verified.stdout}${verified.stderr}`);
  // yubico-piv-tool reads the same certificate.
  t.is((await pivTool(stack, reader, ['-a', 'read-certificate', '-s', '9a'])).stdout.trim(), exported.stdout.trim());

  const info = await ykmanPiv(stack, reader, ['info']);
  t.is(info.code, 0, info.stderr);
  t.regex(info.stdout, /Slot 9a:\s*\n\s*Algorithm:\s+ECCP384\s*\n\s*Subject DN:\s+CN=ykman/);
});

test.serial('AES-128/192/256 management keys set with ykman: the new key works, the old one fails', async (t) => {
  const keys: Array<[string, string]> = [
    ['AES128', '00112233445566778899aabbccddeeff'],
    ['AES192', '00112233445566778899aabbccddeeff0011223344556677'],
    ['AES256', '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff'],
    ['TDES', DEFAULT_MANAGEMENT_KEY],
  ];
  let current = DEFAULT_MANAGEMENT_KEY;
  for (const [algorithm, key] of keys) {
    const changed = await ykmanPiv(stack, reader, ['access', 'change-management-key', '-a', algorithm, '-m', current, '-n', key, '-f']);
    t.is(changed.code, 0, `${algorithm}: ${changed.stderr}`);
    const old = await ykmanPiv(stack, reader, ['keys', 'generate', '-a', 'ECCP256', '-m', current, '9d', join(work.path, 'old.pem')]);
    t.not(old.code, 0, `${algorithm}: the previous key is refused`);
    const fresh = await ykmanPiv(stack, reader, ['keys', 'generate', '-a', 'ECCP256', '-m', key, '9d', join(work.path, 'new.pem')]);
    t.is(fresh.code, 0, `${algorithm}: the new key authenticates: ${fresh.stderr}`);
    const info = await ykmanPiv(stack, reader, ['info']);
    t.regex(info.stdout, new RegExp(`Management key algorithm:\\s+${algorithm}`), `${algorithm}: piv info names it`);
    current = key;
  }
  // Back on the default 3DES key, yubico-piv-tool's default -k works again.
  t.is((await pivTool(stack, reader, ['-a', 'generate', '-s', '9e', '-A', 'ECCP256'])).code, 0);
});

test.serial('status shows the GUID the card presents after ykman rewrote its CHUID, not the one from create', async (t) => {
  const guid = async (): Promise<string | null> => {
    const { stdout } = await stack.cli(['status', '/instance', 'ROOT\\SMARTCARDREADER\\0000', '--json']);
    return (JSON.parse(stdout) as { cards: Array<{ guid: string | null }> }).cards[0]!.guid;
  };
  const fromCreate = await guid();
  t.regex(fromCreate ?? '', /^[0-9a-f]{32}$/);
  const rewritten = await ykmanPiv(stack, reader, ['objects', 'generate', '-m', DEFAULT_MANAGEMENT_KEY, 'chuid']);
  t.is(rewritten.code, 0, rewritten.stderr);
  // The GUID as a client reads it: tag 34 (16 bytes) of the CHUID yubico-piv-tool prints.
  const chuid = /CHUID:\s*([0-9a-f]+)/i.exec((await pivTool(stack, reader, ['-a', 'status'])).stdout)?.[1]?.toLowerCase() ?? '';
  const onCard = /3410([0-9a-f]{32})/.exec(chuid)?.[1];
  t.truthy(onCard, `a GUID in the CHUID ${chuid}`);
  t.not(onCard, fromCreate, 'ykman wrote a new GUID');
  t.is(await guid(), onCard ?? 'none');
  t.true((await stack.cli(['status'])).stdout.includes(`GUID ${onCard}`), 'the text report shows it too');
});
