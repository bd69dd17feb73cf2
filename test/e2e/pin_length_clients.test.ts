/**
 * Every PIN and PUK tpmvscmgr accepts works with the PIV clients people use, and every one it
 * refuses gets a reason (common/pin_rules.ts: at most 8 bytes, PIV clients send no more).
 *
 * Accepted: the shortest and longest of each rule (8 without a policy; /pinpolicy 4..8 with 4
 * and 8 characters, 4..6 with 5, 6..6), each character class (digits, lower, upper, special
 * characters with a space), every class REQUIRED. Each card: OpenSC logs in (`pkcs11-tool -l`),
 * yubico-piv-tool verifies the PIN and unblocks it with the PUK (to a PIN of 6 or more where the
 * PIN is shorter: PIV clients set no shorter one, which is why a policy's maxlen is at least 6).
 * Refused: one line with the reason and the documented exit code, from tpmvscmgr create and
 * unblock, and from the card (6A80, no try spent).
 *
 * A card created before the limit (a 12-character PIN and a 14-character PUK, made here by the
 * daemon's own card manager, which is what the earlier daemon ran) keeps working: its long PIN
 * still verifies when a client sends it whole, and it moves to 8-byte values that every client
 * can send.
 */
import test from 'ava';
import { DEFAULT_PIN_POLICY } from '../../common/pin_rules.js';
import { CardDirectory } from '../../daemon/card_directory.js';
import { CardManager } from '../../daemon/card_manager.js';
import { Tpm } from '../../tpm/index.js';
import { OPENSC_MODULE } from '../helpers/card_setup.js';
import type { PcscClient, PcscConnection } from '../helpers/pcsc_client.js';
import { cardTries, pivTool, readerName, sendApdu, startPcscStack, withPivSession } from '../helpers/piv_tools.js';
import { READER_FRIENDLY_NAME, type CommandResult, type Stack } from '../helpers/stack.js';

let stack: Stack;
let pcsc: PcscClient;
let stopStack: (() => Promise<void>) | undefined;

test.before(async () => {
  ({ stack, pcsc, stop: stopStack } = await startPcscStack(2));
});

test.after.always(() => stopStack?.());

const INSTANCE = 'ROOT\\SMARTCARDREADER\\0000';
const READER = readerName(0);
const PIV_REASON = 'PIV clients send at most 8 bytes (yubico-piv-tool refuses longer ones, OpenSC answers CKR_PIN_LEN_RANGE)';

/** The one line tpmvscmgr printed on stderr (progress lines aside). */
function errorLine(result: CommandResult): string {
  return result.stderr.split('\n').filter((line) => line.startsWith('tpmvscmgr: ')).join('\n');
}

async function createCard(args: string[], input: string): Promise<void> {
  const created = await stack.cli(['create', '/name', 'Len', '/AdminKey', 'DEFAULT', '/generate', ...args], { input });
  if (created.code !== 0) throw new Error(`create failed (${created.code}): ${created.stderr}`);
}

async function destroyCard(): Promise<void> {
  const destroyed = await stack.cli(['destroy', '/instance', INSTANCE]);
  if (destroyed.code !== 0) throw new Error(`destroy failed: ${destroyed.stderr}`);
}

function pkcs11Login(pin: string): Promise<CommandResult> {
  return stack.run('pkcs11-tool', ['--module', OPENSC_MODULE, '--login', '--pin', pin, '--list-objects'], { timeoutMs: 90_000 });
}

/** A card session of its own: no PIN state a previous client left, none left behind. */
const withCard = <T>(use: (connection: PcscConnection) => Promise<T>): Promise<T> => withPivSession(pcsc, READER, use);

/** PIN tries from the daemon, which no client's PIN state can change. */
const pinTries = async (): Promise<number> => (await cardTries(stack, INSTANCE)).pin;

/**
 * Both clients log in with the PIN; yubico-piv-tool's unblock-pin with the PUK sets `unblockTo`
 * (the PIN itself, or a 6..8-character one where the PIN is shorter: PIV clients set no PIN
 * shorter than 6), which both clients then log in with.
 */
async function assertClientsAccept(
  t: { is: (a: unknown, b: unknown, m?: string) => void },
  what: string,
  pin: string,
  puk: string,
  unblockTo = pin,
): Promise<void> {
  const opensc = await pkcs11Login(pin);
  t.is(opensc.code, 0, `${what}: pkcs11-tool -l: ${opensc.stderr}`);
  const verified = await pivTool(stack, READER, ['-a', 'verify-pin', '-P', pin]);
  t.is(verified.code, 0, `${what}: yubico-piv-tool verify-pin: ${verified.stderr}`);
  const unblocked = await pivTool(stack, READER, ['-a', 'unblock-pin', '-P', puk, '-N', unblockTo]);
  t.is(unblocked.code, 0, `${what}: yubico-piv-tool unblock-pin: ${unblocked.stderr}`);
  t.is((await pivTool(stack, READER, ['-a', 'verify-pin', '-P', unblockTo])).code, 0, `${what}: yubico-piv-tool verify-pin after unblock-pin`);
  t.is((await pkcs11Login(unblockTo)).code, 0, `${what}: pkcs11-tool -l after unblock-pin`);
  t.is(await pinTries(), 5, `${what}: no try was spent`);
}

const ACCEPTED: Array<{ what: string; policy: string[]; pin: string; puk: string; unblockTo?: string }> = [
  { what: 'no policy, digits', policy: [], pin: '86420135', puk: '97531864' },
  { what: 'no policy, lowercase PIN, uppercase PUK', policy: [], pin: 'abcdefgh', puk: 'QWERTYUI' },
  { what: 'no policy, uppercase PIN, lowercase PUK', policy: [], pin: 'ZXCVBNMA', puk: 'poiuytre' },
  { what: 'no policy, special characters and a space', policy: [], pin: '!@# $%^&', puk: '*()_+{}~' },
  { what: 'no policy, every class', policy: [], pin: 'Aa1!Bb2@', puk: 'Zz9?Y y8' },
  { what: '/pinpolicy minlen 4 (maxlen 8): 4 characters, the shortest', policy: ['minlen', '4'], pin: '2468', puk: '12345678', unblockTo: '246813' },
  { what: '/pinpolicy minlen 4 (maxlen 8): 8 characters, the longest', policy: ['minlen', '4'], pin: 'ab12cd34', puk: '87654321' },
  { what: '/pinpolicy minlen 4 maxlen 6: 5 characters', policy: ['minlen', '4', 'maxlen', '6'], pin: 'abc12', puk: '11223344', unblockTo: 'abc123' },
  { what: '/pinpolicy minlen 6 maxlen 6, digits DISALLOWED', policy: ['minlen', '6', 'maxlen', '6', 'digits', 'DISALLOWED'], pin: 'abc-ef', puk: '11223344' },
  {
    what: '/pinpolicy every class REQUIRED in 4 characters (maxlen 6)',
    policy: ['minlen', '4', 'maxlen', '6', 'uppercase', 'REQUIRED', 'lowercase', 'REQUIRED', 'digits', 'REQUIRED', 'specialchars', 'REQUIRED'],
    pin: 'aB3$',
    puk: '55667788',
    unblockTo: 'aB3$cD',
  },
];

for (const [index, row] of ACCEPTED.entries()) {
  test.serial(`accepted ${index + 1}: ${row.what}: OpenSC logs in, yubico-piv-tool verifies and unblocks`, async (t) => {
    t.timeout(240_000);
    const policy = row.policy.length > 0 ? ['/pinpolicy', ...row.policy] : [];
    await createCard(['/PIN', 'PROMPT', '/PUK', 'PROMPT', ...policy], `${row.pin}\n${row.puk}\n`);
    try {
      await assertClientsAccept(t, row.what, row.pin, row.puk, row.unblockTo);
    } finally {
      await destroyCard();
    }
  });
}

test.serial('refused by tpmvscmgr create: one line with the reason, the documented exit code, no card', async (t) => {
  t.timeout(240_000);
  const refusals: Array<{ args: string[]; input: string; exit: number; line: string }> = [
    { args: ['/PIN', 'PROMPT'], input: '123456789\n', exit: 9, line: `tpmvscmgr: the PIN must be exactly 8 characters long: Windows' minimum is 8 and ${PIV_REASON}` },
    { args: ['/PIN', 'PROMPT'], input: '1234567\n', exit: 9, line: `tpmvscmgr: the PIN must be exactly 8 characters long: Windows' minimum is 8 and ${PIV_REASON}` },
    { args: ['/PIN', 'PROMPT', '/pinpolicy', 'minlen', '4'], input: 'abcdefghi\n', exit: 9, line: `tpmvscmgr: the PIN must be at most 8 characters long: ${PIV_REASON}` },
    { args: ['/PIN', 'PROMPT', '/pinpolicy', 'minlen', '4'], input: 'abc\n', exit: 9, line: 'tpmvscmgr: the PIN must be at least 4 characters long' },
    { args: ['/PIN', 'PROMPT', '/pinpolicy', 'maxlen', '12'], input: 'abcdefghij\n', exit: 2, line: `tpmvscmgr: /pinpolicy maxlen must be an integer from 6 to 8: ${PIV_REASON}` },
    { args: ['/PIN', 'PROMPT', '/pinpolicy', 'minlen', '3'], input: 'abc\n', exit: 2, line: 'tpmvscmgr: /pinpolicy minlen must be an integer from 4 to 8' },
    {
      args: ['/PIN', 'PROMPT', '/pinpolicy', 'minlen', '4', 'maxlen', '4'], input: '2468\n', exit: 2,
      line: 'tpmvscmgr: /pinpolicy maxlen must be an integer from 6 to 8: PIV clients set no PIN shorter than 6 (yubico-piv-tool change-pin and unblock-pin, OpenSC), so the PIN could never be changed or unblocked with them',
    },
    { args: ['/PIN', 'PROMPT', '/pinpolicy', 'uppercase', 'REQUIRED'], input: 'abcdefgh\n', exit: 9, line: 'tpmvscmgr: the PIN must contain uppercase letters' },
    { args: ['/PIN', 'PROMPT'], input: 'p\u00e4sswort\n', exit: 9, line: 'tpmvscmgr: the PIN must contain only printable ASCII characters' },
    { args: ['/PUK', 'PROMPT'], input: 'Unlock#Puk77\n', exit: 9, line: `tpmvscmgr: the PUK must be exactly 8 characters long: Windows' minimum is 8 and ${PIV_REASON}` },
    { args: ['/PUK', 'PROMPT'], input: '1234567\n', exit: 9, line: `tpmvscmgr: the PUK must be exactly 8 characters long: Windows' minimum is 8 and ${PIV_REASON}` },
  ];
  for (const refusal of refusals) {
    const result = await stack.cli(['create', '/name', 'No', '/AdminKey', 'DEFAULT', ...refusal.args], { input: refusal.input });
    t.is(result.code, refusal.exit, `${refusal.args.join(' ')}: ${result.stderr}`);
    t.is(errorLine(result), refusal.line);
    t.false(result.stderr.includes(refusal.input.trim()), 'the value is never echoed');
  }
  const list = await stack.cli(['list', '--json']);
  t.deepEqual((JSON.parse(list.stdout) as { cards: unknown[] }).cards, [], 'no card was created');
});

test.serial('refused by the card and by tpmvscmgr unblock: a new PIN or PUK longer than 8, without spending a try', async (t) => {
  t.timeout(240_000);
  // A card without a PUK, /pinpolicy 4..8: unblock goes through tpmvscmgr.
  await createCard(['/PIN', 'PROMPT', '/pinpolicy', 'minlen', '4'], '2468\n');
  try {
    const long = await stack.cli(['unblock', '/instance', INSTANCE, '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT'], { input: 'abcdefghi\n' });
    t.is(long.code, 9);
    t.is(errorLine(long), `tpmvscmgr: the new PIN must be at most 8 characters long: ${PIV_REASON}`);
    const short = await stack.cli(['unblock', '/instance', INSTANCE, '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT'], { input: 'abc\n' });
    t.is(errorLine(short), 'tpmvscmgr: the new PIN must be at least 4 characters long');
    const unblocked = await stack.cli(['unblock', '/instance', INSTANCE, '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT'], { input: 'xy12\n' });
    t.is(unblocked.code, 0, unblocked.stderr);
    t.is((await pkcs11Login('xy12')).code, 0, 'OpenSC logs in with the PIN tpmvscmgr unblock set');

    // The clients' own limits, measured: yubico-piv-tool refuses a 9-character new PIN itself.
    const tool = await pivTool(stack, READER, ['-a', 'change-pin', '-P', 'xy12', '-N', 'abcdefghi']);
    t.not(tool.code, 0);
    t.log(`yubico-piv-tool change-pin to 9 characters: ${tool.stderr.trim().replace(/\n/g, ' | ')}`);
    // The card refuses one sent raw (old || new, each padded to 9): 6A80, no try spent.
    await withCard(async (connection) => {
      const old9 = Buffer.concat([Buffer.from('xy12'), Buffer.alloc(5, 0xff)]).toString('hex');
      t.is((await sendApdu(connection, `0024008012${old9}${Buffer.from('abcdefghi').toString('hex')}`)).sw, '6A80');
    });
    t.is(await pinTries(), 5, 'the refusals spent no try');
    t.is((await pivTool(stack, READER, ['-a', 'verify-pin', '-P', 'xy12'])).code, 0, 'the PIN is unchanged');
  } finally {
    await destroyCard();
  }

  // A card with a PUK: a 9-byte new PUK is refused by the card.
  await createCard(['/PUK', 'DEFAULT'], '');
  try {
    await withCard(async (connection) => {
      const puk9 = Buffer.concat([Buffer.from('12345678'), Buffer.alloc(1, 0xff)]).toString('hex');
      t.is((await sendApdu(connection, `0024008112${puk9}${Buffer.from('876543210').toString('hex')}`)).sw, '6A80', 'CHANGE REFERENCE DATA (PUK) to 9 bytes');
      t.is((await sendApdu(connection, `002C008012${puk9}${Buffer.from('876543210').toString('hex')}`)).sw, '6A80', 'RESET RETRY COUNTER to a 9-byte PIN');
    });
    t.is(await pinTries(), 5, 'the refusals spent no try');
    t.is((await pivTool(stack, READER, ['-a', 'unblock-pin', '-P', '12345678', '-N', '24682468'])).code, 0, 'the PUK is unchanged');
  } finally {
    await destroyCard();
  }
});

test.serial('a card created before the limit (12-character PIN, 14-character PUK, maxlen 12) keeps working and moves to 8 bytes', async (t) => {
  t.timeout(300_000);
  const legacyPin = 'Legacy#PIN12';
  const legacyPuk = 'Legacy#PUK1234';
  // Made the way the earlier daemon made it: its card manager, with the 8-byte rule not yet there
  // (the control server's checks are what changed). The daemon is stopped meanwhile: it holds swtpm.
  await stack.stopDaemon();
  const tpm = await Tpm.open({ tcti: stack.swtpm.tcti });
  try {
    const manager = new CardManager({
      tpm, tcti: stack.swtpm.tcti, directory: new CardDirectory(stack.stateDir), vpcdHost: '127.0.0.1', basePort: stack.pcscd.basePort,
      readers: 2, friendlyName: READER_FRIENDLY_NAME, readerNaming: 'numbered', version: 'earlier', insertTimeoutMs: 20_000,
    });
    await manager.start();
    await manager.create(
      {
        op: 'create', name: 'Legacy', adminKeyHex: '010203040506070801020304050607080102030405060708', adminKeyRandom: false,
        pin: legacyPin, puk: legacyPuk, pinPolicy: { ...DEFAULT_PIN_POLICY, minLength: 10, maxLength: 12 }, pinLifetime: null, generate: true, attestation: null,
      },
      () => undefined,
      new AbortController().signal,
    );
    await manager.stop();
  } finally {
    await tpm.close();
    await stack.startDaemon();
  }
  try {
    const hex = (text: string, padTo = text.length): string => Buffer.concat([Buffer.from(text), Buffer.alloc(padTo - text.length, 0xff)]).toString('hex');
    // The clients cannot send the long PIN: yubico-piv-tool refuses it before the card sees it.
    const tool = await pivTool(stack, READER, ['-a', 'verify-pin', '-P', legacyPin]);
    t.not(tool.code, 0);
    t.log(`yubico-piv-tool verify-pin with 12 characters: ${tool.stderr.trim().replace(/\n/g, ' | ')}`);
    const opensc = await pkcs11Login(legacyPin);
    t.not(opensc.code, 0);
    t.log(`pkcs11-tool --login with 12 characters: ${`${opensc.stdout}${opensc.stderr}`.trim().replace(/\n/g, ' | ')}`);
    t.is(await pinTries(), 5, 'neither client spent a try');

    await withCard(async (connection) => {
      t.is((await sendApdu(connection, `002000800C${hex(legacyPin)}`)).sw, '9000', 'the long PIN still verifies, sent whole');
      // A new PIN of 12 is refused, although the card's stored policy says maxlen 12.
      t.is((await sendApdu(connection, `0024008018${hex(legacyPin)}${hex('Legacy#PIN34')}`)).sw, '6A80');
      // 8 characters: the stored minlen 10 is clamped to 8. Both values padded to 12.
      t.is((await sendApdu(connection, `0024008018${hex(legacyPin)}${hex('New#PIN1', 12)}`)).sw, '9000');
      // The long PUK unblocks to an 8-character PIN, and moves to 8 characters itself.
      t.is((await sendApdu(connection, `002C00801C${hex(legacyPuk)}${hex('New#PIN2', 14)}`)).sw, '9000');
      t.is((await sendApdu(connection, `002400811C${hex(legacyPuk)}${hex('New#PUK1', 14)}`)).sw, '9000');
    });
    t.is(await pinTries(), 5);
    await assertClientsAccept(t, 'the card from before, after the move', 'New#PIN2', 'New#PUK1');
  } finally {
    await destroyCard();
  }
});
