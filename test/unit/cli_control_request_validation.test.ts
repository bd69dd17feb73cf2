import test from 'ava';
import { DEFAULT_PIN_POLICY, type CreateRequest } from '../../common/control_protocol.js';
import { TpmvscError } from '../../common/errors.js';
import { validateControlRequest } from '../../daemon/control_request_validation.js';

const CREATE: CreateRequest = {
  op: 'create',
  name: 'Card',
  adminKeyHex: '010203040506070801020304050607080102030405060708',
  adminKeyRandom: false,
  pin: '12345678',
  puk: null,
  pinPolicy: DEFAULT_PIN_POLICY,
  generate: true,
  pinLifetime: null,
  attestation: null,
};

test('a create request may name a verified-PIN lifetime, or leave it out (an older tpmvscmgr): the daemon default', (t) => {
  const once = { ...CREATE, pinLifetime: { seconds: 45, once: true } };
  t.deepEqual(validateControlRequest(once), once);
  const unlimited = { ...CREATE, pinLifetime: { seconds: null, once: false } };
  t.deepEqual(validateControlRequest(unlimited), unlimited);
  const { pinLifetime: _omitted, ...older } = CREATE;
  t.deepEqual(validateControlRequest(older), { ...CREATE, pinLifetime: null });
});

test('valid requests pass, instance IDs canonicalised', (t) => {
  t.deepEqual(validateControlRequest(CREATE), CREATE);
  t.deepEqual(validateControlRequest({ op: 'destroy', instance: 'root\\smartcardreader\\0001' }), { op: 'destroy', instance: 'ROOT\\SMARTCARDREADER\\0001' });
  t.deepEqual(validateControlRequest({ op: 'list' }), { op: 'list' });
  t.deepEqual(validateControlRequest({ op: 'status' }), { op: 'status' });
});

const refused: Array<{ name: string; request: unknown; code?: 'BAD_REQUEST' | 'PIN_POLICY'; want: RegExp }> = [
  { name: 'not an object', request: [1], want: /must be a JSON object/ },
  { name: 'null', request: null, want: /must be a JSON object/ },
  { name: 'unknown op', request: { op: 'format' }, want: /"op" must be/ },
  { name: 'unknown field', request: { op: 'list', extra: 1 }, want: /unknown field "extra"/ },
  { name: 'missing field', request: { ...CREATE, generate: undefined }, want: /missing field "generate"|"generate" must be true or false/ },
  { name: 'name wrong type', request: { ...CREATE, name: 5 }, want: /"name" must be a string/ },
  { name: 'name empty', request: { ...CREATE, name: '' }, want: /"name" must be 1 to 64/ },
  { name: 'name too long', request: { ...CREATE, name: 'n'.repeat(65) }, want: /"name" must be 1 to 64/ },
  { name: 'admin key short', request: { ...CREATE, adminKeyHex: '0102' }, want: /48 hexadecimal/ },
  { name: 'admin key not hex', request: { ...CREATE, adminKeyHex: 'g'.repeat(48) }, want: /48 hexadecimal/ },
  { name: 'pin policy minLength 3', request: { ...CREATE, pinPolicy: { ...DEFAULT_PIN_POLICY, minLength: 3 } }, want: /minlen/ },
  { name: 'pin policy min > max', request: { ...CREATE, pinPolicy: { ...DEFAULT_PIN_POLICY, minLength: 8, maxLength: 7 } }, want: /must not exceed/ },
  { name: 'pin policy maxLength 9 (PIV clients send 8 bytes)', request: { ...CREATE, pinPolicy: { ...DEFAULT_PIN_POLICY, maxLength: 9 } }, want: /maxlen must be an integer from 6 to 8: PIV clients send at most 8 bytes/ },
  { name: 'pin policy fractional', request: { ...CREATE, pinPolicy: { ...DEFAULT_PIN_POLICY, minLength: 8.5 } }, want: /minlen/ },
  { name: 'pin policy extra field', request: { ...CREATE, pinPolicy: { ...DEFAULT_PIN_POLICY, history: 3 } }, want: /unknown field "history"/ },
  { name: 'pin policy bad class', request: { ...CREATE, pinPolicy: { ...DEFAULT_PIN_POLICY, digits: 'SOMETIMES' } }, want: /ALLOWED, DISALLOWED or REQUIRED/ },
  { name: 'pin too short', request: { ...CREATE, pin: '1234' }, code: 'PIN_POLICY', want: /exactly 8 characters long/ },
  { name: 'pin too long', request: { ...CREATE, pin: '123456789' }, code: 'PIN_POLICY', want: /exactly 8 characters long: .*PIV clients send at most 8 bytes/ },
  { name: 'pin not a string', request: { ...CREATE, pin: 12345678 }, want: /"pin" must be a string/ },
  { name: 'puk too short', request: { ...CREATE, puk: '123' }, code: 'PIN_POLICY', want: /PUK must be exactly 8/ },
  { name: 'puk too long', request: { ...CREATE, puk: '123456789' }, code: 'PIN_POLICY', want: /PUK must be exactly 8 .*PIV clients send at most 8 bytes/ },
  { name: 'puk wrong type', request: { ...CREATE, puk: 1 }, want: /"puk" must be a string or null/ },
  { name: 'attestation bad', request: { ...CREATE, attestation: 'YES' }, want: /"attestation" must be/ },
  { name: 'pin lifetime 0 s', request: { ...CREATE, pinLifetime: { seconds: 0, once: false } }, want: /"pinLifetime" must be null or/ },
  { name: 'pin lifetime over a day', request: { ...CREATE, pinLifetime: { seconds: 86_401, once: false } }, want: /"pinLifetime" must be null or/ },
  { name: 'pin lifetime without once', request: { ...CREATE, pinLifetime: { seconds: 30 } }, want: /"pinLifetime" must be null or/ },
  { name: 'pin lifetime extra field', request: { ...CREATE, pinLifetime: { seconds: 30, once: false, uses: 2 } }, want: /"pinLifetime" must be null or/ },
  { name: 'destroy bad instance', request: { op: 'destroy', instance: 'ROOT\\SMARTCARDREADER\\99' }, want: /"instance" must be/ },
  { name: 'destroy instance wrong type', request: { op: 'destroy', instance: 0 }, want: /"instance" must be/ },
  { name: 'status bad instance', request: { op: 'status', instance: 'x' }, want: /"instance" must be/ },
];

for (const row of refused) {
  test(`refused: ${row.name}`, (t) => {
    const request = row.request !== null && typeof row.request === 'object' ? JSON.parse(JSON.stringify(row.request)) : row.request;
    const error = t.throws(() => validateControlRequest(request), { instanceOf: TpmvscError });
    t.is(error?.code, row.code ?? 'BAD_REQUEST');
    t.regex(error?.detail ?? '', row.want);
    t.false(error?.message.includes('12345678') ?? true, 'no secret in the error');
  });
}
