/**
 * `tpmvscmgr unblock`: Windows' admin-key unblock of a card without PUK, done by the admin
 * tool with the card itself (challenge/response through PC/SC). Secrets come on stdin.
 */
import test from 'ava';
import { startStack, type Stack } from '../helpers/stack.js';
import { CREATE_WITH_PUK, CREATE_WITHOUT_PUK, cardTries, pivTool, readerName } from '../helpers/piv_tools.js';

const READER = readerName(0);
const INSTANCE = 'ROOT\\SMARTCARDREADER\\0000';

const tries = (stack: Stack): Promise<{ pin: number; puk: number | null }> => cardTries(stack, INSTANCE);

async function blockPin(t: { is: (a: unknown, b: unknown, m?: string) => void }, stack: Stack): Promise<void> {
  for (let i = 0; i < 5; i++) await pivTool(stack, READER, ['-a', 'verify-pin', '-P', '00000000']);
  t.is((await tries(stack)).pin, 0, 'five wrong PINs block the PIN');
}

test('a card without PUK: the admin key unblocks the PIN with a new one; a wrong admin key does not', async (t) => {
  const stack = await startStack({ readers: 2 });
  t.teardown(() => stack.stop());
  t.is((await stack.cli(CREATE_WITHOUT_PUK)).code, 0);
  await blockPin(t, stack);

  const wrongKey = await stack.cli(['unblock', '/instance', INSTANCE, '/AdminKey', 'PROMPT', '/PIN', 'PROMPT'], {
    input: `${'11'.repeat(24)}\n87654321\n`,
  });
  t.is(wrongKey.code, 9, wrongKey.stderr);
  t.is(wrongKey.stderr.trim().split('\n').at(-1), 'tpmvscmgr: The card rejected the PIN, PUK or admin key: the card refused the admin key');
  t.is((await tries(stack)).pin, 0, 'still blocked');

  const unblocked = await stack.cli(['unblock', '/instance', INSTANCE, '/AdminKey', 'PROMPT', '/PIN', 'PROMPT'], {
    input: `${'0102030405060708'.repeat(3)}\n87654321\n`,
  });
  t.is(unblocked.code, 0, unblocked.stderr);
  t.is(unblocked.stdout.trim(), INSTANCE);
  t.false(`${unblocked.stdout}${unblocked.stderr}`.includes('87654321'), 'the new PIN is never echoed');
  t.is((await tries(stack)).pin, 5, 'tries restored');
  t.is((await pivTool(stack, READER, ['-a', 'verify-pin', '-P', '87654321'])).code, 0, 'the new PIN works');
  t.not((await pivTool(stack, READER, ['-a', 'verify-pin', '-P', '12345678'])).code, 0, 'the old PIN does not');

  const policy = await stack.cli(['unblock', '/instance', INSTANCE, '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT'], { input: '1234567\n' });
  t.is(policy.code, 9, "a new PIN shorter than the card's policy (8) is refused by the card");
});

test('a card with a PUK refuses the admin-key unblock and keeps its PUK tries', async (t) => {
  const stack = await startStack({ readers: 2 });
  t.teardown(() => stack.stop());
  t.is((await stack.cli(CREATE_WITH_PUK)).code, 0);
  await blockPin(t, stack);
  const refused = await stack.cli(['unblock', '/instance', INSTANCE, '/AdminKey', 'DEFAULT']);
  t.is(refused.code, 9);
  t.regex(refused.stderr, /has a PUK: unblock its PIN with the PUK/);
  t.deepEqual(await tries(stack), { pin: 0, puk: 5 });
  t.is((await stack.cli(['unblock', '/instance', 'ROOT\\SMARTCARDREADER\\0001', '/AdminKey', 'DEFAULT'])).code, 7, 'unknown card');
});
