import test from 'ava';
import fc from 'fast-check';
import { DEFAULT_PIN_POLICY, type PinPolicy } from '../../common/control_protocol.js';
import { EXIT, TpmvscError } from '../../common/errors.js';
import { checkPin, checkPuk } from '../../common/pin_rules.js';
import { normaliseAdminKeyHex, randomAdminKeyHex } from '../../cli/admin_key.js';

const policy = (changes: Partial<PinPolicy>): PinPolicy => ({ ...DEFAULT_PIN_POLICY, ...changes });

const rows: Array<{ name: string; pin: string; policy: PinPolicy; want: RegExp | null }> = [
  { name: 'default 8 digits', pin: '12345678', policy: DEFAULT_PIN_POLICY, want: null },
  { name: 'too short for default', pin: '1234567', policy: DEFAULT_PIN_POLICY, want: /at least 8 characters/ },
  { name: '127 is fine', pin: 'a'.repeat(127), policy: DEFAULT_PIN_POLICY, want: null },
  { name: '128 is too long', pin: 'a'.repeat(128), policy: DEFAULT_PIN_POLICY, want: /at most 127/ },
  { name: 'policy minlen 4', pin: '1234', policy: policy({ minLength: 4, maxLength: 8 }), want: null },
  { name: 'policy maxlen 8', pin: '123456789', policy: policy({ minLength: 4, maxLength: 8 }), want: /at most 8/ },
  { name: 'non-ASCII', pin: '1234567é', policy: DEFAULT_PIN_POLICY, want: /printable ASCII/ },
  { name: 'control character', pin: '1234567\t', policy: DEFAULT_PIN_POLICY, want: /printable ASCII/ },
  { name: 'uppercase required', pin: 'abcdefgh', policy: policy({ uppercase: 'REQUIRED' }), want: /must contain uppercase/ },
  { name: 'digits disallowed', pin: 'abcdefg1', policy: policy({ digits: 'DISALLOWED' }), want: /must not contain digits/ },
  { name: 'special required', pin: 'abcdefg!', policy: policy({ specialChars: 'REQUIRED' }), want: null },
  { name: 'space counts as special', pin: 'abcd efg', policy: policy({ specialChars: 'DISALLOWED' }), want: /must not contain special/ },
];

for (const row of rows) {
  test(`checkPin: ${row.name}`, (t) => {
    if (row.want === null) return t.notThrows(() => checkPin(row.pin, row.policy));
    const error = t.throws(() => checkPin(row.pin, row.policy), { instanceOf: TpmvscError });
    t.is(error?.code, 'PIN_POLICY');
    t.is(error?.exitCode, EXIT.rejected);
    t.regex(error?.detail ?? '', row.want);
  });
}

test('PIN errors never contain the PIN', (t) => {
  fc.assert(
    // PINs of 5+ characters from a set no message contains 5 in a row of, so a hit is a leak.
    fc.property(fc.stringMatching(/^[0-9#%@]{5,40}$/), (pin) => {
      try {
        checkPin(pin, policy({ uppercase: 'REQUIRED', digits: 'REQUIRED', maxLength: 20 }));
      } catch (error) {
        if (!(error instanceof TpmvscError)) return false;
        return !error.message.includes(pin);
      }
      return true;
    }),
  );
  t.pass();
});

test('PUK: 8..127 printable ASCII', (t) => {
  t.notThrows(() => checkPuk('12345678'));
  t.throws(() => checkPuk('1234567'), { message: /PUK must be at least 8/ });
  t.throws(() => checkPuk('x'.repeat(128)), { message: /PUK must be at most 127/ });
});

test('admin key: 48 hex digits, separators tolerated, errors never echo the value', (t) => {
  t.is(normaliseAdminKeyHex('01:02:03:04:05:06:07:08 01020304050607080102030405060708'), '010203040506070801020304050607080102030405060708');
  const error = t.throws(() => normaliseAdminKeyHex('0102030405060708010203040506070801020304050607'), { instanceOf: TpmvscError });
  t.is(error?.detail, '/AdminKey PROMPT needs 48 hexadecimal characters (24 bytes)');
  t.throws(() => normaliseAdminKeyHex('zz02030405060708010203040506070801020304050607zz'));
  const random = randomAdminKeyHex();
  t.regex(random, /^[0-9A-F]{48}$/);
  t.not(random, randomAdminKeyHex());
});
