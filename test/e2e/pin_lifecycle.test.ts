/**
 * The PIN's life through real tools: tries left after each wrong PIN, blocking, PUK
 * unblock, the admin-key unblock of a card without PUK (refused on a card with one),
 * and a PIN policy enforced on change-pin. Real swtpm, pcscd + vpcd, tpmvscd,
 * yubico-piv-tool, and the pcsclite binding for the APDUs no tool sends.
 */
import test from 'ava';
import type { Stack } from '../helpers/stack.js';
import type { PcscClient, PcscConnection } from '../helpers/pcsc_client.js';
import {
  CREATE_WITH_PUK,
  CREATE_WITHOUT_PUK,
  DEFAULT_MANAGEMENT_KEY,
  DEFAULT_PIN,
  authenticateManagementKey,
  cardTries,
  paddedPin,
  pivTool,
  readerName,
  sendApdu,
  startPcscStack,
  withPivSession,
} from '../helpers/piv_tools.js';

let stack: Stack;
let pcsc: PcscClient;
let stopStack: (() => Promise<void>) | undefined;

test.before(async () => {
  ({ stack, pcsc, stop: stopStack } = await startPcscStack(4));
});

test.after.always(() => stopStack?.());

/** Creates a card; returns its reader, and its PIN tries as the daemon counts them. */
async function create(args: string[], input?: string): Promise<{ reader: string; pinTries: () => Promise<number> }> {
  const created = await stack.cli(args, input === undefined ? {} : { input });
  if (created.code !== 0) throw new Error(`create failed (${created.code}): ${created.stderr}`);
  const instance = created.stdout.trim().split('\n').at(-1)!;
  const slot = Number(instance.slice(-4));
  return { reader: readerName(slot), pinTries: async () => (await cardTries(stack, instance)).pin };
}

const withCard = <T>(reader: string, use: (connection: PcscConnection) => Promise<T>): Promise<T> => withPivSession(pcsc, reader, use);

/** Blocks the PIN with wrong VERIFYs through yubico-piv-tool; returns each try's message. */
async function blockPin(reader: string, tries: number): Promise<string[]> {
  const messages: string[] = [];
  for (let i = 0; i < tries; i++) messages.push((await pivTool(stack, reader, ['-a', 'verify-pin', '-P', '99999999'])).stderr.trim());
  return messages;
}

test.serial('wrong PINs count down, five block the PIN, the PUK unblocks it', async (t) => {
  const { reader, pinTries } = await create(CREATE_WITH_PUK);
  const messages = await blockPin(reader, 5);
  for (let i = 0; i < 4; i++) t.regex(messages[i]!, new RegExp(`${4 - i} tries left before pin is blocked`), `try ${i + 1}`);
  t.regex(messages[4]!, /Pin code blocked/, 'the fifth wrong PIN blocks');
  t.regex((await pivTool(stack, reader, ['-a', 'verify-pin', '-P', DEFAULT_PIN])).stderr, /Pin code blocked/, 'the right PIN is refused too');
  t.is(await pinTries(), 0);

  // A wrong PUK costs a PUK try and leaves the PIN blocked.
  const wrongPuk = await pivTool(stack, reader, ['-a', 'unblock-pin', '-P', '87654321', '-N', '24682468']);
  t.regex(wrongPuk.stderr, /4 tries left/);
  const unblocked = await pivTool(stack, reader, ['-a', 'unblock-pin', '-P', '12345678', '-N', '24682468']);
  t.is(unblocked.code, 0, unblocked.stderr);
  t.is(await pinTries(), 5);
  t.is((await pivTool(stack, reader, ['-a', 'verify-pin', '-P', '24682468'])).code, 0);

  // The admin path is refused on a card with a PUK, even after 9B authentication.
  await blockPin(reader, 5);
  await withCard(reader, async (connection) => {
    t.true(await authenticateManagementKey(connection, DEFAULT_MANAGEMENT_KEY), 'the admin key authenticates');
    const newPin = paddedPin('13572468');
    const answer = await sendApdu(connection, `002C008008${newPin}`);
    t.not(answer.sw, '9000', 'RESET RETRY COUNTER with the admin key is refused');
    t.is((await sendApdu(connection, '0020008000')).sw, '6983', 'the PIN is still blocked');
  });
  t.regex((await pivTool(stack, reader, ['-a', 'verify-pin', '-P', '13572468'])).stderr, /Pin code blocked/);
});

test.serial('a card without PUK: the admin key unblocks the PIN', async (t) => {
  const { reader, pinTries } = await create(CREATE_WITHOUT_PUK);
  const messages = await blockPin(reader, 5);
  t.regex(messages[4]!, /Pin code blocked/);
  const puk = await pivTool(stack, reader, ['-a', 'unblock-pin', '-P', '12345678', '-N', '24682468']);
  t.not(puk.code, 0, 'no PUK to unblock with');

  // Here the admin path is driven with raw APDUs; tpmvscmgr unblock, which does the same through
  // PC/SC, is covered in admin_unblock.test.ts and pin_length_clients.test.ts.
  await withCard(reader, async (connection) => {
    const newPin = paddedPin('13572468');
    t.is((await sendApdu(connection, `002C008008${newPin}`)).sw, '6982', 'not without the admin key');
    t.false(await authenticateManagementKey(connection, '0f0e0d0c0b0a09080706050403020100f0e0d0c0b0a09080'), 'a wrong admin key fails');
    t.true(await authenticateManagementKey(connection, DEFAULT_MANAGEMENT_KEY), 'the admin key authenticates');
    t.is((await sendApdu(connection, `002C008008${paddedPin('1234')}`)).sw, '6A80', 'a new PIN against the policy (min 8) is refused');
    t.is((await sendApdu(connection, `002C008008${newPin}`)).sw, '9000', 'unblocked');
  });
  t.is(await pinTries(), 5);
  t.is((await pivTool(stack, reader, ['-a', 'verify-pin', '-P', '13572468'])).code, 0, 'the new PIN works');
});

test.serial('a PIN policy set at create is enforced on yubico-piv-tool change-pin', async (t) => {
  const args = ['create', '/name', 'Policy', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'minlen', '8', 'maxlen', '8', 'digits', 'REQUIRED', 'uppercase', 'DISALLOWED'];
  t.not((await stack.cli(args, { input: 'ABCD1234\n' })).code, 0, 'create refuses an initial PIN against the policy');
  const { reader, pinTries } = await create(args, '24681357\n');
  t.is((await pivTool(stack, reader, ['-a', 'verify-pin', '-P', '24681357'])).code, 0, 'the prompted PIN');

  for (const bad of ['ABCD1234', 'abcdefgh', 'abcD1234']) {
    const refused = await pivTool(stack, reader, ['-a', 'change-pin', '-P', '24681357', '-N', bad]);
    t.not(refused.code, 0, `${bad} breaks the policy`);
  }
  // Refusals cost no try and changed nothing.
  t.is(await pinTries(), 5);
  const accepted = await pivTool(stack, reader, ['-a', 'change-pin', '-P', '24681357', '-N', 'abcd1234']);
  t.is(accepted.code, 0, accepted.stderr);
  t.is((await pivTool(stack, reader, ['-a', 'verify-pin', '-P', 'abcd1234'])).code, 0);
  t.not((await pivTool(stack, reader, ['-a', 'verify-pin', '-P', '24681357'])).code, 0);
});
