/**
 * yubico-piv-tool 2.2 (Debian 12) against TPM virtual smart cards: management-key
 * authentication, key generation in every kind of slot, certificates, import of
 * software keys, PIN/PUK/management-key changes, retry counters, unblock and reset.
 * Real swtpm, pcscd + vpcd, tpmvscd, yubico-piv-tool, ykman and openssl.
 *
 * Debian 12's yubico-piv-tool 2.2.0 cannot self-sign on OpenSSL 3 (it fails inside
 * OpenSSL before sending any signing APDU: Yubico/yubico-piv-tool#388). The test still
 * runs its selfsign and checks that the card was not the reason (no GENERAL AUTHENTICATE
 * was refused); the card-signed certificate then comes from ykman, whose signature
 * openssl verifies, and yubico-piv-tool imports it.
 */
import test from 'ava';
import { createPrivateKey, createPublicKey } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startStack, type Stack } from '../helpers/stack.js';
import {
  CREATE_WITH_PUK,
  DEFAULT_MANAGEMENT_KEY,
  DEFAULT_PIN,
  certificatePublicKey,
  pinTriesLeft,
  pivTool,
  readerName,
  relaxTpmLockout,
  tempDir,
  verifySelfSigned,
  ykmanPiv,
} from '../helpers/piv_tools.js';

let stack: Stack;
let work: { path: string; cleanup: () => Promise<void> };

test.before(async () => {
  stack = await startStack({ readers: 4 });
  work = await tempDir();
  await relaxTpmLockout(stack);
  for (let card = 0; card < 3; card++) {
    const created = await stack.cli(CREATE_WITH_PUK);
    if (created.code !== 0) throw new Error(`create failed: ${created.stderr}`);
  }
});

test.after.always(async () => {
  await stack?.stop();
  await work?.cleanup();
});

/** GET METADATA (Yubico F7) of a slot through opensc-tool: the raw answer text. */
async function metadata(reader: number, slot: string): Promise<string> {
  const { stdout } = await stack.run('opensc-tool', ['-r', String(reader), '-s', '00A4040005A000000308', '-s', `00F700${slot}00`]);
  return stdout.split('Sending: 00 F7')[1] ?? '';
}

/** Every file under the daemon's state directory, concatenated. */
async function stateText(): Promise<string> {
  const entries = await readdir(stack.stateDir, { recursive: true, withFileTypes: true });
  const texts = await Promise.all(entries.filter((e) => e.isFile()).map((e) => readFile(join(e.parentPath, e.name), 'utf8')));
  return texts.join('\n');
}

const SLOTS: Array<{ slot: string; algorithm: string; explicitKey: boolean }> = [
  { slot: '9a', algorithm: 'RSA2048', explicitKey: false },
  { slot: '9e', algorithm: 'RSA2048', explicitKey: true },
  { slot: '9c', algorithm: 'ECCP256', explicitKey: false },
  { slot: '9d', algorithm: 'ECCP256', explicitKey: true },
  { slot: '82', algorithm: 'ECCP384', explicitKey: false },
];

test.serial('generate, self-sign, import and verify certificates in 9A, 9E, 9C, 9D and 82', async (t) => {
  const reader = readerName(0);
  for (const { slot, algorithm, explicitKey } of SLOTS) {
    const key = explicitKey ? [`--key=${DEFAULT_MANAGEMENT_KEY}`] : [];
    const generated = await pivTool(stack, reader, [...key, '-a', 'generate', '-s', slot, '-A', algorithm]);
    t.is(generated.code, 0, `${slot}: ${generated.stderr}`);
    t.regex(generated.stdout, /BEGIN PUBLIC KEY/);
    const publicKey = createPublicKey(generated.stdout);
    const publicKeyFile = join(work.path, `${slot}.pub.pem`);
    await writeFile(publicKeyFile, generated.stdout);

    // yubico-piv-tool's own selfsign: the card must not be why it fails.
    const selfsign = await pivTool(stack, reader, ['--verbose=2', '-a', 'verify-pin', '-P', DEFAULT_PIN, '-a', 'selfsign', '-S', `/CN=${slot}/`, '-s', slot], generated.stdout);
    let certificate: string;
    if (selfsign.code === 0) {
      certificate = selfsign.stdout;
    } else {
      t.regex(selfsign.stderr, /Successfully verified PIN/, `${slot}: the PIN was accepted`);
      t.notRegex(selfsign.stderr, /> 00 87/, `${slot}: selfsign failed inside the client, not on a card answer`);
      const generatedCertificate = await ykmanPiv(stack, reader, ['certificates', 'generate', '-s', `CN=${slot}`, '-P', DEFAULT_PIN, '-m', DEFAULT_MANAGEMENT_KEY, slot, publicKeyFile]);
      t.is(generatedCertificate.code, 0, `${slot}: ykman certificates generate: ${generatedCertificate.stderr}`);
      const read = await pivTool(stack, reader, ['-a', 'read-certificate', '-s', slot]);
      t.is(read.code, 0, read.stderr);
      certificate = read.stdout;
      const deleted = await pivTool(stack, reader, ['-a', 'delete-certificate', '-s', slot]);
      t.is(deleted.code, 0, deleted.stderr);
      t.not((await pivTool(stack, reader, ['-a', 'read-certificate', '-s', slot])).code, 0, `${slot}: certificate deleted`);
    }
    // The TPM signed the certificate correctly, with the key of this slot.
    const verified = await verifySelfSigned(work.path, certificate, slot);
    t.is(verified.code, 0, `${slot}: openssl verify: ${verified.stdout}${verified.stderr}`);
    t.true(createPublicKey(await certificatePublicKey(work.path, certificate, slot)).equals(publicKey), `${slot}: certificate holds the slot's key`);

    const imported = await pivTool(stack, reader, ['-a', 'import-certificate', '-s', slot], certificate);
    t.is(imported.code, 0, `${slot}: ${imported.stderr}`);
    const readBack = await pivTool(stack, reader, ['-a', 'read-certificate', '-s', slot]);
    t.is(readBack.stdout.trim(), certificate.trim(), `${slot}: the stored certificate reads back`);
  }

  // A corrupted signature must fail the same openssl check (the check can fail).
  const certificate = (await pivTool(stack, reader, ['-a', 'read-certificate', '-s', '9a'])).stdout;
  const der = Buffer.from(certificate.replace(/-----[^-]+-----|\s/g, ''), 'base64');
  der[der.length - 5]! ^= 0x01;
  const corrupted = `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n')}\n-----END CERTIFICATE-----\n`;
  t.not((await verifySelfSigned(work.path, corrupted, 'corrupted')).code, 0, 'a bad signature is detected');

  const status = await pivTool(stack, reader, ['-a', 'status']);
  t.is(status.code, 0, status.stderr);
  for (const { slot, algorithm } of SLOTS) {
    t.regex(status.stdout, new RegExp(`Slot ${slot}:\\s*\\n\\s*Algorithm:\\s*${algorithm}\\s*\\n\\s*Subject DN:\\s*CN=${slot}`), `status lists ${slot}`);
  }

  // yubico-piv-tool's own round trips: sign (and RSA decrypt) with the key in the slot, checked against its certificate.
  // (test-signature / test-decipher read the certificate from stdin.)
  for (const slot of ['9a', '9c', '9d', '9e', '82']) {
    const slotCertificate = (await pivTool(stack, reader, ['-a', 'read-certificate', '-s', slot])).stdout;
    const signed = await pivTool(stack, reader, ['-a', 'verify-pin', '-P', DEFAULT_PIN, '-a', 'test-signature', '-s', slot], slotCertificate);
    t.is(signed.code, 0, `test-signature ${slot}: ${signed.stdout}${signed.stderr}`);
  }
  const deciphered = await pivTool(stack, reader, ['-a', 'verify-pin', '-P', DEFAULT_PIN, '-a', 'test-decipher', '-s', '9a'], certificate);
  t.is(deciphered.code, 0, `test-decipher 9a: ${deciphered.stdout}${deciphered.stderr}`);
});

test.serial('management key: default and explicit -k, wrong key refused, set-mgm-key 3DES', async (t) => {
  const reader = readerName(1);
  const newKey = '0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a09080';
  const generate = (key: string[]) => pivTool(stack, reader, [...key, '-a', 'generate', '-s', '9a', '-A', 'ECCP256']);
  t.is((await generate([])).code, 0, 'default key');
  t.is((await generate([`--key=${DEFAULT_MANAGEMENT_KEY}`])).code, 0, 'explicit default key');
  const wrong = await generate([`--key=${newKey}`]);
  t.not(wrong.code, 0);
  t.regex(wrong.stderr, /Failed authentication/);

  const changed = await pivTool(stack, reader, ['-a', 'set-mgm-key', '-n', newKey]);
  t.is(changed.code, 0, changed.stderr);
  t.not((await generate([])).code, 0, 'the old (default) key no longer authenticates');
  t.is((await generate([`--key=${newKey}`])).code, 0, 'the new key authenticates');
  const back = await pivTool(stack, reader, [`--key=${newKey}`, '-a', 'set-mgm-key', '-n', DEFAULT_MANAGEMENT_KEY]);
  t.is(back.code, 0, back.stderr);
  t.is((await generate([])).code, 0, 'default key again');
});

test.serial('import-key of software RSA-2048 and P-256 keys: TPM-only blobs that sign correctly', async (t) => {
  const reader = readerName(1);
  const keys = [
    { slot: '9d', args: ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'], parts: ['d', 'p', 'q', 'dp', 'dq', 'qi'] },
    { slot: '9c', args: ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], parts: ['d'] },
  ];
  for (const { slot, args, parts } of keys) {
    const keyFile = join(work.path, `import-${slot}.pem`);
    const genpkey = await stack.run('openssl', ['genpkey', ...args, '-out', keyFile]);
    t.is(genpkey.code, 0, genpkey.stderr);
    const privateKey = createPrivateKey(await readFile(keyFile, 'utf8'));
    const imported = await pivTool(stack, reader, ['-a', 'import-key', '-s', slot, '-i', keyFile]);
    t.is(imported.code, 0, `${slot}: ${imported.stderr}`);
    t.regex(imported.stderr, /Successfully imported/);

    // GET METADATA: origin 02 = imported.
    t.regex(await metadata(1, slot), /03 01 02/, `${slot}: origin imported`);

    // The card signs a certificate with the imported key; the software public key verifies it.
    const publicKeyFile = join(work.path, `import-${slot}.pub.pem`);
    await writeFile(publicKeyFile, createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }));
    const certified = await ykmanPiv(stack, reader, ['certificates', 'generate', '-s', `CN=imported ${slot}`, '-P', DEFAULT_PIN, '-m', DEFAULT_MANAGEMENT_KEY, slot, publicKeyFile]);
    t.is(certified.code, 0, certified.stderr);
    const certificate = (await pivTool(stack, reader, ['-a', 'read-certificate', '-s', slot])).stdout;
    t.is((await verifySelfSigned(work.path, certificate, `import-${slot}`)).code, 0, `${slot}: card signature verifies with the software key`);
    const signed = await pivTool(stack, reader, ['-a', 'verify-pin', '-P', DEFAULT_PIN, '-a', 'test-signature', '-s', slot], certificate);
    t.is(signed.code, 0, `${slot}: test-signature: ${signed.stdout}${signed.stderr}`);

    // No private component in clear anywhere in the daemon's files (hex, base64 or base64url).
    const jwk = privateKey.export({ format: 'jwk' }) as Record<string, string>;
    const state = (await stateText()).toLowerCase();
    for (const part of parts) {
      const bytes = Buffer.from(jwk[part]!, 'base64url');
      for (const encoding of [bytes.toString('hex'), bytes.toString('base64'), bytes.toString('base64url')]) {
        t.false(state.includes(encoding.slice(0, 24).toLowerCase()), `${slot}: ${part} not in the state files`);
      }
    }
  }
});

test.serial('change-pin, change-puk, pin-retries, unblock-pin and reset', async (t) => {
  const reader = readerName(2);
  const verify = (pin: string) => pivTool(stack, reader, ['-a', 'verify-pin', '-P', pin]);
  const status = async () => pinTriesLeft((await pivTool(stack, reader, ['-a', 'status'])).stdout);

  t.is((await pivTool(stack, reader, ['-a', 'change-pin', '-P', DEFAULT_PIN, '-N', '87654321'])).code, 0);
  t.not((await verify(DEFAULT_PIN)).code, 0, 'old PIN refused');
  t.is((await verify('87654321')).code, 0, 'new PIN accepted');
  t.is((await pivTool(stack, reader, ['-a', 'change-puk', '-P', '12345678', '-N', '11223344'])).code, 0);
  t.not((await pivTool(stack, reader, ['-a', 'change-puk', '-P', '12345678', '-N', '55667788'])).code, 0, 'old PUK refused');

  // pin-retries needs the management key and the PIN; PIN and PUK go back to defaults.
  t.not((await pivTool(stack, reader, ['-a', 'pin-retries', '--pin-retries', '6', '--puk-retries', '4'])).code, 0, 'without the PIN');
  const retries = await pivTool(stack, reader, ['-a', 'verify-pin', '-P', '87654321', '-a', 'pin-retries', '--pin-retries', '6', '--puk-retries', '4']);
  t.is(retries.code, 0, retries.stderr);
  t.is(await status(), 6);
  t.is((await verify(DEFAULT_PIN)).code, 0, 'PIN is the default again');

  // A key, to see the reset remove it.
  t.is((await pivTool(stack, reader, ['-a', 'generate', '-s', '9a', '-A', 'ECCP256'])).code, 0);
  t.regex(await metadata(2, '9A'), /SW1=0x90/);

  // Six wrong PINs: 5..1 tries left, then blocked; the PUK (default again) unblocks.
  for (let left = 5; left >= 1; left--) {
    t.regex((await verify('99999999')).stderr, new RegExp(`${left} tries left`), `${left} tries left`);
  }
  t.regex((await verify('99999999')).stderr, /blocked/);
  t.regex((await verify(DEFAULT_PIN)).stderr, /blocked/, 'even the right PIN is refused');
  t.is(await status(), 0);
  const unblocked = await pivTool(stack, reader, ['-a', 'unblock-pin', '-P', '12345678', '-N', '24682468']);
  t.is(unblocked.code, 0, unblocked.stderr);
  t.is((await verify('24682468')).code, 0);
  t.is(await status(), 6);

  // Reset refuses while the codes work; block both, then reset restores every default.
  t.not((await pivTool(stack, reader, ['-a', 'reset'])).code, 0, 'reset refused while PIN/PUK are not blocked');
  for (let i = 0; i < 6; i++) await verify('99999999');
  for (let i = 0; i < 4; i++) await pivTool(stack, reader, ['-a', 'unblock-pin', '-P', '99999999', '-N', '24682468']);
  t.regex((await pivTool(stack, reader, ['-a', 'unblock-pin', '-P', '12345678', '-N', '24682468'])).stderr, /puk code is blocked/);
  t.not((await pivTool(stack, reader, ['-a', 'reset'])).code, 0, 'reset refused without the management key (README)');
  const reset = await pivTool(stack, reader, ['-k', '-a', 'set-mgm-key', '-a', 'reset'], `${DEFAULT_MANAGEMENT_KEY}\n`.repeat(3));
  t.is(reset.code, 0, reset.stderr);
  t.is((await verify(DEFAULT_PIN)).code, 0, 'default PIN after reset');
  t.is((await pivTool(stack, reader, ['-a', 'change-puk', '-P', '12345678', '-N', '12345678'])).code, 0, 'default PUK after reset');
  // The card keeps its configured retry totals (like its PIN policy) across a reset.
  t.is(await status(), 5, 'RESET is a factory reset: the default 5 PIN tries again');
  t.regex(await metadata(2, '9A'), /SW1=0x6A, SW2=0x88/, 'the key is gone');
  t.is((await pivTool(stack, reader, ['-a', 'generate', '-s', '9a', '-A', 'ECCP256'])).code, 0, 'default management key after reset');
});
