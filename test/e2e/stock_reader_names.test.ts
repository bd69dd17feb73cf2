/**
 * The vsmartcard-vpcd package's own reader pair (/etc/reader.conf.d/vpcd: FRIENDLYNAME
 * "Virtual PCD", no block number), as `npm start` finds it when Debian's pcscd already runs:
 * tpmvscd --reader-naming plain must report the names pcscd really shows ("Virtual PCD 00 00"),
 * since clients and tpmvscmgr unblock address the card by that name.
 */
import test from 'ava';
import { startStack } from '../helpers/stack.js';
import { CREATE_WITHOUT_PUK, pivTool } from '../helpers/piv_tools.js';

const INSTANCE = 'ROOT\\SMARTCARDREADER\\0000';
const READER = 'Virtual PCD 00 00';

test('cards in the stock "Virtual PCD" readers carry the names pcscd shows; unblock finds its card by that name', async (t) => {
  const stack = await startStack({ readers: 2, stockReaderNames: true });
  t.teardown(() => stack.stop());
  const created = await stack.cli([...CREATE_WITHOUT_PUK, '--json']);
  t.is(created.code, 0, created.stderr);
  t.is((JSON.parse(created.stdout) as { reader: string }).reader, READER);

  const listing = await stack.run('opensc-tool', ['-l']);
  t.regex(listing.stdout, /^0\s+Yes\s+Virtual PCD 00 00$/m, listing.stdout);
  t.regex(listing.stdout, /^1\s+No\s+Virtual PCD 00 01$/m, listing.stdout);
  const status = await stack.cli(['status', '/instance', INSTANCE, '--json']);
  t.is((JSON.parse(status.stdout) as { cards: Array<{ reader: string }> }).cards[0]!.reader, READER);

  for (let i = 0; i < 5; i++) await pivTool(stack, READER, ['-a', 'verify-pin', '-P', '00000000']);
  const unblocked = await stack.cli(['unblock', '/instance', INSTANCE, '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT']);
  t.is(unblocked.code, 0, unblocked.stderr);
  t.is((await pivTool(stack, READER, ['-a', 'verify-pin', '-P', '12345678'])).code, 0, 'the PIN works again');
});
