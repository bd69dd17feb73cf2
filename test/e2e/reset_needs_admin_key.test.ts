/**
 * PIV RESET (00 FB) needs the admin (management) key proven in the same card session, besides
 * PIN and PUK blocked (applet/instructions/reset.ts). Every local account reaches the card
 * through pcscd and can block both codes with wrong guesses: here uid nobody does exactly
 * that through the real pcscd, with yubico-piv-tool, ykman and a raw APDU, right after the
 * owner's own admin work with ykman and yubico-piv-tool, and the owner's keys, certificate and
 * objects survive. The owner then resets with the commands the README gives (yubico-piv-tool
 * with set-mgm-key in the same run; ykman's Python library in one session). Real swtpm,
 * pcscd + vpcd, tpmvscd, yubico-piv-tool 2.2, ykman 4.0.9, opensc-tool.
 */
import test from 'ava';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startStack, REPO, type Stack } from '../helpers/stack.js';
import { pivTool, readerName, relaxTpmLockout, tempDir, ykmanPiv } from '../helpers/piv_tools.js';
import { runAsNobody } from '../helpers/other_user.js';
import { openWinscardApp, type WinscardApp } from '../helpers/winscard.js';
import { connectPivCard, publicKeyId, type PivCard } from '../helpers/piv_card.js';

/** The owner's admin key (3DES, not the public default). */
const OWNER_KEY = '9f8e7d6c5b4a39281706f5e4d3c2b1a00112233445566778';
const DEFAULT_KEY = '010203040506070801020304050607080102030405060708';
const PIN = '12345678';
const CARDS = {
  withPuk: { slot: 0, create: ['/PUK', 'DEFAULT'] },
  withoutPuk: { slot: 1, create: [] },
  ykman: { slot: 2, create: ['/PUK', 'DEFAULT'] },
} as const;

let stack: Stack;
let app: WinscardApp;
let work: { path: string; cleanup: () => Promise<void> };

test.before(async () => {
  stack = await startStack({ readers: 4 });
  work = await tempDir();
  await relaxTpmLockout(stack, 1000);
  for (const [name, card] of Object.entries(CARDS)) {
    const created = await stack.cli(['create', '/name', name, '/AdminKey', 'PROMPT', '/PIN', 'DEFAULT', ...card.create, '/generate'], { input: `${OWNER_KEY}\n` });
    if (created.code !== 0) throw new Error(`create ${name}: ${created.stderr}`);
  }
  stack.pcscd.useInThisProcess();
  app = await openWinscardApp();
});

test.after.always(async () => {
  await app?.close();
  await stack?.stop();
  await work?.cleanup();
});

/** Runs `use` on the card in this process, then resets the card (nothing stays authenticated). */
async function onCard<T>(slot: number, use: (card: PivCard) => Promise<T>): Promise<T> {
  const { card, connection } = await connectPivCard(app, readerName(slot));
  try {
    return await use(card);
  } finally {
    await connection.disconnect('reset');
  }
}

/** What the owner has on the card: key ids per slot, the 9A certificate object, the CHUID. */
async function ownerAssets(slot: number): Promise<Record<string, string | undefined>> {
  return onCard(slot, async (card) => {
    const assets: Record<string, string | undefined> = {};
    for (const keySlot of [0x9a, 0x9d, 0x9e]) {
      const key = await card.slotPublicKey(keySlot);
      assets[`key ${keySlot.toString(16)}`] = key && publicKeyId(key);
    }
    assets['certificate 9a'] = (await card.getData(0x5fc105))?.toString('hex');
    assets['CHUID'] = (await card.getData(0x5fc102))?.toString('hex');
    return assets;
  });
}

async function triesLeft(slot: number, reference: 0x80 | 0x81): Promise<number> {
  return onCard(slot, async (card) => (await card.retries(reference)).remaining);
}

/** uid nobody blocks the PIN and (when there is one) the PUK with wrong guesses through yubico-piv-tool. */
async function nobodyBlocksCodes(slot: number, withPuk: boolean): Promise<void> {
  for (let i = 0; i < 5; i++) await runAsNobody(stack, 'yubico-piv-tool', ['-r', readerName(slot), '-a', 'verify-pin', '-P', '99999999']);
  if (withPuk) {
    for (let i = 0; i < 5; i++) await runAsNobody(stack, 'yubico-piv-tool', ['-r', readerName(slot), '-a', 'unblock-pin', '-P', '99999999', '-N', '11112222']);
  }
}

/** RESET as a raw APDU from uid nobody (opensc-tool): the status word of 00 FB. */
async function nobodySendsReset(slot: number): Promise<string> {
  const { stdout } = await runAsNobody(stack, 'opensc-tool', ['-r', String(slot), '-s', '00A4040005A000000308', '-s', '00FB0000']);
  const answers = [...stdout.matchAll(/Received \(SW1=0x([0-9A-F]{2}), SW2=0x([0-9A-F]{2})\)/g)].map((m) => `${m[1]}${m[2]}`);
  return answers[1] ?? `no answer: ${stdout}`;
}

async function serialOf(slot: number): Promise<number> {
  const { stdout } = await stack.cli(['status', '--json']);
  return (JSON.parse(stdout) as { cards: Array<{ slot: number; serial: number }> }).cards.find((card) => card.slot === slot)!.serial;
}

test.serial("uid nobody blocks PIN and PUK and sends RESET (raw, yubico-piv-tool, ykman) right after the owner's admin work: refused, nothing lost", async (t) => {
  const { slot } = CARDS.withPuk;
  const reader = readerName(slot);
  t.is((await pivTool(stack, reader, [`--key=${OWNER_KEY}`, '-a', 'generate', '-s', '9a', '-A', 'ECCP256'])).code, 0);
  const publicKeyFile = join(work.path, '9a.pem');
  t.is((await ykmanPiv(stack, reader, ['keys', 'generate', '-m', OWNER_KEY, '-a', 'ECCP256', '9a', publicKeyFile])).code, 0);
  const certified = await ykmanPiv(stack, reader, ['certificates', 'generate', '-m', OWNER_KEY, '-P', PIN, '-s', 'CN=owner', '9a', publicKeyFile]);
  t.is(certified.code, 0, certified.stderr);
  const before = await ownerAssets(slot);
  t.truthy(before['key 9a']);
  t.truthy(before['certificate 9a']);

  await nobodyBlocksCodes(slot, true);
  t.is(await triesLeft(slot, 0x80), 0, 'PIN blocked by nobody');
  t.is(await triesLeft(slot, 0x81), 0, 'PUK blocked by nobody');

  // The owner's admin work, then at once the attacker: ykman powers the card off when it is done.
  t.is((await ykmanPiv(stack, reader, ['keys', 'generate', '-m', OWNER_KEY, '-a', 'ECCP256', '9d', join(work.path, '9d.pem')])).code, 0);
  t.is(await nobodySendsReset(slot), '6982', 'RESET right after ykman proved the admin key');
  // yubico-piv-tool resets the card when it disconnects.
  t.is((await pivTool(stack, reader, [`--key=${OWNER_KEY}`, '-a', 'generate', '-s', '9e', '-A', 'ECCP256'])).code, 0);
  t.is(await nobodySendsReset(slot), '6982', 'RESET right after yubico-piv-tool proved the admin key');
  const viaPivTool = await runAsNobody(stack, 'yubico-piv-tool', ['-r', reader, '-a', 'reset']);
  t.not(viaPivTool.code, 0);
  t.regex(viaPivTool.stderr, /Reset failed/);
  const guessingDefault = await runAsNobody(stack, 'yubico-piv-tool', ['-r', reader, `--key=${DEFAULT_KEY}`, '-a', 'set-mgm-key', `--new-key=${DEFAULT_KEY}`, '-a', 'reset']);
  t.not(guessingDefault.code, 0, 'the default admin key is not this card\'s');
  const viaYkman = await runAsNobody(stack, 'ykman', ['--reader', reader, 'piv', 'reset', '-f']);
  t.not(viaYkman.code, 0);

  const after = await ownerAssets(slot);
  t.deepEqual({ ...after, 'key 9d': undefined, 'key 9e': undefined }, { ...before, 'key 9d': undefined, 'key 9e': undefined }, "the owner's 9A key, certificate and CHUID are all still there");
  t.truthy(after['key 9d']);
  t.truthy(after['key 9e']);
  const serial = await serialOf(slot);
  const refusals = stack.daemonLog().split('\n').filter((line) => line.includes('"event":"refused"') && line.includes(`"serial":${serial}`));
  t.true(refusals.length >= 3, `the daemon logs every refused RESET:\n${refusals.join('\n')}`);
  t.regex(refusals[0]!, /"instruction":"RESET","reason":"RESET needs the management key \(9B\) authenticated in this card session"/);

  // Windows' rules: a card with a PUK is unblocked with the PUK only, and the admin key cannot.
  const unblock = await stack.cli(['unblock', '/instance', `ROOT\\SMARTCARDREADER\\000${slot}`, '/AdminKey', 'PROMPT', '/PIN', 'PROMPT'], {
    input: `${OWNER_KEY}\n87654321\n`,
  });
  t.is(unblock.code, 9);
  t.regex(unblock.stderr, /has a PUK/);
  t.is(await triesLeft(slot, 0x80), 0, 'still blocked: the owner can only reset (with the admin key) or destroy');
});

test.serial('the owner resets with yubico-piv-tool, proving the admin key in the same run (README)', async (t) => {
  const { slot } = CARDS.withPuk;
  const reader = readerName(slot);
  t.is(await triesLeft(slot, 0x81), 0, 'left blocked by the previous test');
  const alone = await pivTool(stack, reader, ['-a', 'reset']);
  t.not(alone.code, 0, '-a reset alone proves no admin key');
  t.truthy((await ownerAssets(slot))['key 9a']);
  // As the README says: the admin key, then the same key twice as the "new" one, on stdin.
  const reset = await pivTool(stack, reader, ['-k', '-a', 'set-mgm-key', '-a', 'reset'], `${OWNER_KEY}\n${OWNER_KEY}\n${OWNER_KEY}\n`);
  t.is(reset.code, 0, reset.stderr);
  t.regex(reset.stdout + reset.stderr, /Successfully reset the application/);
  const after = await ownerAssets(slot);
  t.deepEqual([after['key 9a'], after['key 9d'], after['key 9e'], after['certificate 9a']], [undefined, undefined, undefined, undefined]);
  t.truthy(after['CHUID'], 'a /generate card keeps its CHUID');
  t.is((await pivTool(stack, reader, ['-a', 'verify-pin', '-P', PIN])).code, 0, 'the default PIN again');
  t.is((await pivTool(stack, reader, ['-a', 'generate', '-s', '9a', '-A', 'ECCP256'])).code, 0, 'the default admin key again');
});

/** The README's yubikit script (section "Starting a card over"), as the README prints it. */
async function readmeResetScript(): Promise<string> {
  const readme = await readFile(join(REPO, 'README.md'), 'utf8');
  const match = /\n {2}cat > piv-reset\.py <<'EOF'\n([\s\S]*?)\n {2}EOF\n/.exec(readme);
  if (!match) throw new Error('README: the piv-reset.py block is missing');
  return match[1]!.replace(/^ {2}/gm, '');
}

test.serial('ykman: `ykman piv reset` is refused and loses nothing; the README\'s ykman-library script resets in one session', async (t) => {
  const { slot } = CARDS.ykman;
  const reader = readerName(slot);
  t.is((await ykmanPiv(stack, reader, ['keys', 'generate', '-m', OWNER_KEY, '-a', 'ECCP256', '9a', join(work.path, 'y9a.pem')])).code, 0);
  for (let i = 0; i < 5; i++) await ykmanPiv(stack, reader, ['access', 'change-pin', '-P', '99999999', '-n', '11112222']);
  for (let i = 0; i < 5; i++) await ykmanPiv(stack, reader, ['access', 'unblock-pin', '-p', '99999999', '-n', '11112222']);
  t.is(await triesLeft(slot, 0x80), 0);
  t.is(await triesLeft(slot, 0x81), 0);
  const key = (await ownerAssets(slot))['key 9a'];
  t.truthy(key);

  const ykmanReset = await ykmanPiv(stack, reader, ['reset', '-f']);
  t.not(ykmanReset.code, 0);
  t.regex(ykmanReset.stderr, /6a80/i, 'it stops at its empty PUK (measured: ykman 4.0.9 cannot reset these cards)');
  t.is((await ownerAssets(slot))['key 9a'], key, 'nothing lost');

  const script = join(work.path, 'piv-reset.py');
  await writeFile(script, await readmeResetScript());
  const wrong = await stack.run('/usr/bin/python3', [script, reader], { input: `${DEFAULT_KEY}\n` });
  t.not(wrong.code, 0, 'a wrong admin key resets nothing');
  t.is((await ownerAssets(slot))['key 9a'], key);
  const reset = await stack.run('/usr/bin/python3', [script, reader], { input: `${OWNER_KEY}\n` });
  t.is(reset.code, 0, reset.stderr);
  t.regex(reset.stdout, /^Reset: PIN and PUK 12345678/);
  t.is((await ownerAssets(slot))['key 9a'], undefined, 'the key is gone');
  t.is(await triesLeft(slot, 0x80), 5);
  t.is((await ykmanPiv(stack, reader, ['access', 'change-pin', '-P', PIN, '-n', '87654321'])).code, 0, 'the default PIN again');
});

test.serial('a card without a PUK: nobody blocks the PIN, RESET is refused; the owner unblocks with the admin key and signs again', async (t) => {
  const { slot } = CARDS.withoutPuk;
  const reader = readerName(slot);
  t.is((await pivTool(stack, reader, [`--key=${OWNER_KEY}`, '-a', 'generate', '-s', '9a', '-A', 'ECCP256'])).code, 0);
  const { key9a } = await onCard(slot, async (card) => ({ key9a: await card.slotPublicKey(0x9a) }));
  await nobodyBlocksCodes(slot, false);
  t.is(await triesLeft(slot, 0x80), 0);
  t.is(await nobodySendsReset(slot), '6982');
  // The owner: Windows' admin-key unblock, then the same key signs.
  const unblock = await stack.cli(['unblock', '/instance', `ROOT\\SMARTCARDREADER\\000${slot}`, '/AdminKey', 'PROMPT', '/PIN', 'PROMPT'], {
    input: `${OWNER_KEY}\n87654321\n`,
  });
  t.is(unblock.code, 0, unblock.stderr);
  const signed = await onCard(slot, (card) => card.signAndCheck(0x9a, key9a!, Buffer.from('still mine'), '87654321'));
  t.deepEqual(signed, { sw: '9000', valid: true });
  // And a RESET with the PIN working is refused even with the admin key (6985): it needs the PIN blocked.
  const refused = await onCard(slot, async (card) => {
    if (!(await card.authenticate(OWNER_KEY))) throw new Error('the owner key is refused');
    return (await card.send('00FB0000')).sw;
  });
  t.is(refused, '6985');
});
