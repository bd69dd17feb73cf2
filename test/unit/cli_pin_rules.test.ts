import test from 'ava';
import fc from 'fast-check';
import { DEFAULT_PIN_POLICY, type PinPolicy } from '../../common/control_protocol.js';
import { EXIT, TpmvscError } from '../../common/errors.js';
import { cardPinPolicy, checkPin, checkPinPolicy, checkPuk, WIDEST_PIN_POLICY } from '../../common/pin_rules.js';
import { normaliseAdminKeyHex, randomAdminKeyHex } from '../../cli/admin_key.js';

const policy = (changes: Partial<PinPolicy>): PinPolicy => ({ ...DEFAULT_PIN_POLICY, ...changes });

const PIV_REASON = /PIV clients send at most 8 bytes \(yubico-piv-tool refuses longer ones, OpenSC answers CKR_PIN_LEN_RANGE\)/;

const rows: Array<{ name: string; pin: string; policy: PinPolicy; want: RegExp | null }> = [
  { name: 'default 8 digits', pin: '12345678', policy: DEFAULT_PIN_POLICY, want: null },
  { name: 'no policy: 7 is too short (Windows)', pin: '1234567', policy: DEFAULT_PIN_POLICY, want: /^the PIN must be exactly 8 characters long: Windows' minimum is 8 and PIV clients/ },
  { name: 'no policy: 9 is too long (PIV)', pin: '123456789', policy: DEFAULT_PIN_POLICY, want: PIV_REASON },
  { name: 'no policy: 127 (Windows\' maximum) is too long', pin: 'a'.repeat(127), policy: DEFAULT_PIN_POLICY, want: /exactly 8 characters/ },
  { name: 'policy minlen 4', pin: '1234', policy: policy({ minLength: 4, maxLength: 8 }), want: null },
  { name: 'policy 4..8: 3 is too short', pin: '123', policy: policy({ minLength: 4, maxLength: 8 }), want: /^the PIN must be at least 4 characters long$/ },
  { name: 'policy 4..8: 9 is too long, with the reason', pin: '123456789', policy: policy({ minLength: 4, maxLength: 8 }), want: /^the PIN must be at most 8 characters long: PIV clients/ },
  { name: 'policy 4..6: 7 is too long, the policy says so', pin: '1234567', policy: policy({ minLength: 4, maxLength: 6 }), want: /^the PIN must be at most 6 characters long$/ },
  { name: 'policy 6..6: exactly 6', pin: '12345', policy: policy({ minLength: 6, maxLength: 6 }), want: /^the PIN must be exactly 6 characters long$/ },
  { name: 'stored policy maxlen 12 (older card): clamped to 8', pin: 'abcdefghi', policy: policy({ minLength: 8, maxLength: 12 }), want: PIV_REASON },
  { name: 'stored policy minlen 10 (older card): clamped to 8', pin: 'abcdefgh', policy: policy({ minLength: 10, maxLength: 12 }), want: null },
  { name: 'non-ASCII', pin: '1234567é', policy: DEFAULT_PIN_POLICY, want: /printable ASCII/ },
  { name: 'control character', pin: '1234567\t', policy: DEFAULT_PIN_POLICY, want: /printable ASCII/ },
  { name: 'uppercase required', pin: 'abcdefgh', policy: policy({ uppercase: 'REQUIRED' }), want: /must contain uppercase/ },
  { name: 'digits disallowed', pin: 'abcdefg1', policy: policy({ digits: 'DISALLOWED' }), want: /must not contain digits/ },
  { name: 'special required', pin: 'abcdefg!', policy: policy({ specialChars: 'REQUIRED' }), want: null },
  { name: 'space counts as special', pin: 'abcd efg', policy: policy({ specialChars: 'DISALLOWED' }), want: /must not contain special/ },
  { name: 'four classes fit in 4 characters', pin: 'aB3$', policy: policy({ minLength: 4, maxLength: 4, uppercase: 'REQUIRED', lowercase: 'REQUIRED', digits: 'REQUIRED', specialChars: 'REQUIRED' }), want: null },
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
    fc.property(fc.stringMatching(/^[0-9#%@]{5,12}$/), (pin) => {
      try {
        checkPin(pin, policy({ minLength: 4, uppercase: 'REQUIRED', digits: 'REQUIRED' }));
      } catch (error) {
        if (!(error instanceof TpmvscError)) return false;
        return !error.message.includes(pin);
      }
      return true;
    }),
  );
  t.pass();
});

test('PUK: exactly 8 printable ASCII characters, the reason said for a longer one', (t) => {
  t.notThrows(() => checkPuk('12345678'));
  t.notThrows(() => checkPuk('Ab3$ ~x!'));
  t.throws(() => checkPuk('1234567'), { message: /PUK must be exactly 8 characters long/ });
  t.throws(() => checkPuk('123456789'), { message: PIV_REASON });
  t.throws(() => checkPuk('x'.repeat(127)), { message: PIV_REASON });
  t.throws(() => checkPuk('1234567\u00e9'), { message: /printable ASCII/ });
});

test('/pinpolicy bounds: 4 <= minlen <= maxlen <= 8 and maxlen >= 6, the reason said', (t) => {
  t.notThrows(() => checkPinPolicy(policy({ minLength: 4, maxLength: 8 })));
  t.notThrows(() => checkPinPolicy(policy({ minLength: 4, maxLength: 6 })));
  t.notThrows(() => checkPinPolicy(policy({ minLength: 6, maxLength: 6 })));
  t.throws(() => checkPinPolicy(policy({ minLength: 3 })), { message: /^Invalid command line: \/pinpolicy minlen must be an integer from 4 to 8$/ });
  t.throws(() => checkPinPolicy(policy({ maxLength: 9 })), { message: PIV_REASON });
  t.throws(() => checkPinPolicy(policy({ minLength: 9, maxLength: 9 })), { message: /minlen must be an integer from 4 to 8: PIV clients/ });
  t.throws(() => checkPinPolicy(policy({ maxLength: 127 })), { message: PIV_REASON });
  t.throws(() => checkPinPolicy(policy({ minLength: 4, maxLength: 5 })), {
    message: /maxlen must be an integer from 6 to 8: PIV clients set no PIN shorter than 6 \(yubico-piv-tool change-pin and unblock-pin, OpenSC\)/,
  });
  t.throws(() => checkPinPolicy(policy({ minLength: 8, maxLength: 7 })), { message: /minlen \(8\) must not exceed maxlen \(7\)/ });
});

test('one table: without a policy a PIN is exactly 8 characters, the widest policy is 4..8', (t) => {
  t.deepEqual([DEFAULT_PIN_POLICY.minLength, DEFAULT_PIN_POLICY.maxLength], [8, 8]);
  t.deepEqual([WIDEST_PIN_POLICY.minLength, WIDEST_PIN_POLICY.maxLength], [4, 8]);
  t.deepEqual(cardPinPolicy(policy({ minLength: 10, maxLength: 127 })), policy({ minLength: 8, maxLength: 8 }));
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
