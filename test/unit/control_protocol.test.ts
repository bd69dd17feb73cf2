import test from 'ava';
import { instanceId, parseInstanceId } from '../../common/control_protocol.js';
import { ERROR_TABLE, TpmvscError } from '../../common/errors.js';

test('instance IDs print as Windows prints them and parse back, case-insensitive', (t) => {
  t.is(instanceId(0), 'ROOT\\SMARTCARDREADER\\0000');
  t.is(instanceId(12), 'ROOT\\SMARTCARDREADER\\0012');
  t.is(parseInstanceId('root\\smartcardreader\\0003'), 3);
  t.is(parseInstanceId('ROOT\\SMARTCARDREADER\\0016'), undefined, 'pcscd has at most 16 readers');
  t.is(parseInstanceId('ROOT\\SMARTCARDREADER\\3'), undefined, 'four digits, as Windows prints');
  t.is(parseInstanceId('0003'), undefined);
});

test('errors carry a stable code, the exit code of the table and a readable message', (t) => {
  const error = new TpmvscError('NOT_FOUND', 'ROOT\\SMARTCARDREADER\\0007');
  t.is(error.code, 'NOT_FOUND');
  t.is(error.exitCode, ERROR_TABLE.NOT_FOUND.exit);
  t.true(error.message.startsWith(ERROR_TABLE.NOT_FOUND.message));
});
