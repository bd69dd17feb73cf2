/**
 * Several cards at once in one daemon and one TPM: each has its own keys and
 * certificates, yubico-piv-tool addresses each by its reader, a key made on one is not
 * on the other, and destroying one leaves the other working. Real swtpm, pcscd + vpcd,
 * tpmvscd, yubico-piv-tool, ykman and openssl.
 */
import test from 'ava';
import { join } from 'node:path';
import { writeFile } from 'node:fs/promises';
import { startStack } from '../helpers/stack.js';
import { CREATE_WITH_PUK, DEFAULT_MANAGEMENT_KEY, DEFAULT_PIN, cardTries, pivTool, readerName, tempDir, verifySelfSigned, ykmanPiv } from '../helpers/piv_tools.js';

test('two cards with keys and certificates are independent; destroying one spares the other', async (t) => {
  const stack = await startStack({ readers: 4 });
  const work = await tempDir();
  t.teardown(async () => {
    await stack.stop();
    await work.cleanup();
  });
  const cards = [
    { reader: readerName(0), instance: 'ROOT\\SMARTCARDREADER\\0000', slot: '9a', algorithm: 'RSA2048' },
    { reader: readerName(1), instance: 'ROOT\\SMARTCARDREADER\\0001', slot: '9c', algorithm: 'ECCP256' },
  ];
  for (const card of cards) {
    const created = await stack.cli(CREATE_WITH_PUK);
    t.is(created.stdout.trim().split('\n').at(-1), card.instance, created.stderr);
  }

  const certificates: string[] = [];
  for (const [index, card] of cards.entries()) {
    const generated = await pivTool(stack, card.reader, ['-a', 'generate', '-s', card.slot, '-A', card.algorithm]);
    t.is(generated.code, 0, generated.stderr);
    const publicKeyFile = join(work.path, `card${index}.pub.pem`);
    await writeFile(publicKeyFile, generated.stdout);
    const certified = await ykmanPiv(stack, card.reader, ['certificates', 'generate', '-s', `CN=card${index}`, '-P', DEFAULT_PIN, '-m', DEFAULT_MANAGEMENT_KEY, card.slot, publicKeyFile]);
    t.is(certified.code, 0, certified.stderr);
    const certificate = (await pivTool(stack, card.reader, ['-a', 'read-certificate', '-s', card.slot])).stdout;
    t.is((await verifySelfSigned(work.path, certificate, `card${index}`)).code, 0, `card ${index} signed its certificate`);
    certificates.push(certificate);
  }

  // Each reader shows only its own card's key and certificate, and its own serial.
  const [first, second] = await Promise.all(cards.map((card) => pivTool(stack, card.reader, ['-a', 'status'])));
  t.regex(first!.stdout, /Slot 9a:[\s\S]*CN=card0/);
  t.notRegex(first!.stdout, /Slot 9c:/);
  t.regex(second!.stdout, /Slot 9c:[\s\S]*CN=card1/);
  t.notRegex(second!.stdout, /Slot 9a:/);
  const serial = (text: string) => /Serial Number:\s+(\d+)/.exec(text)?.[1];
  t.not(serial(first!.stdout), serial(second!.stdout));
  t.not((await pivTool(stack, cards[1]!.reader, ['-a', 'read-certificate', '-s', '9a'])).code, 0, 'card 0 certificate is not on card 1');
  const metadata = await stack.run('opensc-tool', ['-r', '1', '-s', '00A4040005A000000308', '-s', '00F7009A00']);
  t.regex(metadata.stdout.split('Sending: 00 F7')[1] ?? '', /SW1=0x6A, SW2=0x88/, 'card 0 key is not in card 1 slot 9A');

  // A PIN change and wrong PINs on one card leave the other untouched.
  t.is((await pivTool(stack, cards[0]!.reader, ['-a', 'change-pin', '-P', DEFAULT_PIN, '-N', '11112222'])).code, 0);
  await pivTool(stack, cards[0]!.reader, ['-a', 'verify-pin', '-P', '99999999']);
  t.is((await cardTries(stack, cards[1]!.instance)).pin, 5);
  t.is((await pivTool(stack, cards[1]!.reader, ['-a', 'verify-pin', '-P', DEFAULT_PIN])).code, 0);

  // Both work at the same time: concurrent signatures on both cards.
  const signatures = await Promise.all(
    cards.map((card, index) =>
      pivTool(stack, card.reader, ['-a', 'verify-pin', '-P', index === 0 ? '11112222' : DEFAULT_PIN, '-a', 'test-signature', '-s', card.slot], certificates[index]),
    ),
  );
  for (const [index, signed] of signatures.entries()) t.is(signed.code, 0, `card ${index}: ${signed.stdout}${signed.stderr}`);

  const destroyed = await stack.cli(['destroy', '/instance', cards[0]!.instance]);
  t.is(destroyed.code, 0, destroyed.stderr);
  t.not((await pivTool(stack, cards[0]!.reader, ['-a', 'status'])).code, 0, 'card 0 is gone');
  const survivor = await pivTool(stack, cards[1]!.reader, ['-a', 'verify-pin', '-P', DEFAULT_PIN, '-a', 'test-signature', '-s', '9c'], certificates[1]);
  t.is(survivor.code, 0, `card 1 still signs: ${survivor.stderr}`);
  t.is((await pivTool(stack, cards[1]!.reader, ['-a', 'read-certificate', '-s', '9c'])).stdout, certificates[1]);
  const generated = await pivTool(stack, cards[1]!.reader, ['-a', 'generate', '-s', '9d', '-A', 'ECCP384']);
  t.is(generated.code, 0, `card 1 still generates: ${generated.stderr}`);

  // Every reader of the pool holds a card: the next create says how to get more readers.
  for (const instance of ['0000', '0002', '0003']) {
    const created = await stack.cli(CREATE_WITH_PUK);
    t.is(created.stdout.trim().split('\n').at(-1), `ROOT\\SMARTCARDREADER\\${instance}`, created.stderr);
  }
  const full = await stack.cli(CREATE_WITH_PUK);
  t.is(full.code, 6);
  t.is(
    full.stderr.trim().split('\n').at(-1),
    'tpmvscmgr: The limit on the number of Smart Card Readers has been reached: all 4 readers of the pool hold a card: ' +
      'destroy one (tpmvscmgr destroy), or enlarge the pool: TPMVSC_READERS=N for tpmvscd and for tpmvscd register-readers ' +
      "(pcscd's readers), then restart pcscd and tpmvscd (npm start makes 2 readers of its own pcscd: TPMVSC_READERS=N npm start makes N)",
  );
});
