/**
 * Pure unit tests of tpm/: response-code decoding, TCTI parsing, marshalling round trips and
 * the union traps, bounds-checked parsing, names, DER conversion.
 */
import test from 'ava';
import fc from 'fast-check';
import { generateKeyPairSync, sign, verify } from 'node:crypto';
import {
  Reader, Writer,
} from '../../tpm/marshal.js';
import {
  TPM_ALG, TPM_ECC, TPM_RH, TpmError, TpmProtocolError, TpmTransportError, decodeRc, ecdsaSignatureToDer, eccKeyTemplate,
  handleName, isAuthFail, isLockout, marshalPublic, marshalPublic2b, objectName, parsePublic2b, parseTcti, rsaKeyTemplate,
  sealedDataTemplate, srkEccTemplate, writeScheme, type TpmPublic,
} from '../../tpm/index.js';
import { kdfa, kdfe } from '../../tpm/kdf.js';

const rcRows: { name: string; input: number; want: { name: string; base: number; warning: boolean; location: ReturnType<typeof decodeRc>['location'] } }[] = [
  { name: 'AUTH_FAIL on session 1', input: 0x98e, want: { name: 'TPM_RC_AUTH_FAIL', base: 0x08e, warning: false, location: { kind: 'session', index: 1 } } },
  { name: 'BAD_AUTH on session 2', input: 0xaa2, want: { name: 'TPM_RC_BAD_AUTH', base: 0x0a2, warning: false, location: { kind: 'session', index: 2 } } },
  { name: 'VALUE on parameter 3', input: 0x3c4, want: { name: 'TPM_RC_VALUE', base: 0x084, warning: false, location: { kind: 'parameter', index: 3 } } },
  { name: 'HANDLE on handle 1', input: 0x18b, want: { name: 'TPM_RC_HANDLE', base: 0x08b, warning: false, location: { kind: 'handle', index: 1 } } },
  { name: 'SIZE on parameter 1', input: 0x1d5, want: { name: 'TPM_RC_SIZE', base: 0x095, warning: false, location: { kind: 'parameter', index: 1 } } },
  { name: 'POLICY_FAIL session 1', input: 0x99d, want: { name: 'TPM_RC_POLICY_FAIL', base: 0x09d, warning: false, location: { kind: 'session', index: 1 } } },
  { name: 'LOCKOUT', input: 0x921, want: { name: 'TPM_RC_LOCKOUT', base: 0x921, warning: true, location: { kind: 'none' } } },
  { name: 'RETRY', input: 0x922, want: { name: 'TPM_RC_RETRY', base: 0x922, warning: true, location: { kind: 'none' } } },
  { name: 'NV_RATE', input: 0x920, want: { name: 'TPM_RC_NV_RATE', base: 0x920, warning: true, location: { kind: 'none' } } },
  { name: 'OBJECT_MEMORY', input: 0x902, want: { name: 'TPM_RC_OBJECT_MEMORY', base: 0x902, warning: true, location: { kind: 'none' } } },
  { name: 'INITIALIZE', input: 0x100, want: { name: 'TPM_RC_INITIALIZE', base: 0x100, warning: false, location: { kind: 'none' } } },
  { name: 'NV_DEFINED', input: 0x14c, want: { name: 'TPM_RC_NV_DEFINED', base: 0x14c, warning: false, location: { kind: 'none' } } },
  { name: 'FAILURE', input: 0x101, want: { name: 'TPM_RC_FAILURE', base: 0x101, warning: false, location: { kind: 'none' } } },
];

for (const row of rcRows) {
  test(`decodeRc: ${row.name}`, (t) => {
    const d = decodeRc(row.input);
    t.deepEqual({ name: d.name, base: d.base, warning: d.warning, location: d.location }, row.want);
    const e = new TpmError(row.input, 'Test');
    t.is(e.rcName, row.want.name);
    t.regex(e.message, new RegExp(row.want.name));
  });
}

test('isAuthFail / isLockout', (t) => {
  t.true(isAuthFail(new TpmError(0x98e, 'x')));
  t.true(isAuthFail(new TpmError(0x9a2, 'x')));
  t.false(isAuthFail(new TpmError(0x921, 'x')));
  t.true(isLockout(new TpmError(0x921, 'x')));
  t.false(isLockout(new Error('x')));
});

const tctiRows: { input: string; want: ReturnType<typeof parseTcti> | TpmTransportError['code'] }[] = [
  { input: '', want: { kind: 'device', path: '/dev/tpmrm0' } },
  { input: 'device', want: { kind: 'device', path: '/dev/tpmrm0' } },
  { input: 'device:/dev/tpmrm1', want: { kind: 'device', path: '/dev/tpmrm1' } },
  { input: '/dev/tpmrm0', want: { kind: 'device', path: '/dev/tpmrm0' } },
  { input: 'swtpm', want: { kind: 'swtpm', host: '127.0.0.1', port: 2321 } },
  { input: 'swtpm:port=4000', want: { kind: 'swtpm', host: '127.0.0.1', port: 4000 } },
  { input: 'swtpm:host=127.0.0.1,port=5', want: { kind: 'swtpm', host: '127.0.0.1', port: 5 } },
  { input: '/dev/tpm0', want: 'NO_RESOURCE_MANAGER' },
  { input: 'device:/dev/tpm1', want: 'NO_RESOURCE_MANAGER' },
  { input: 'device:tpmrm0', want: 'TCTI_SYNTAX' },
  { input: 'swtpm:port=0', want: 'TCTI_SYNTAX' },
  { input: 'swtpm:port=abc', want: 'TCTI_SYNTAX' },
  { input: 'swtpm:host=192.168.1.1', want: 'TCTI_SYNTAX' },
  { input: 'swtpm:color=blue', want: 'TCTI_SYNTAX' },
  { input: 'tabrmd', want: 'TCTI_SYNTAX' },
];

for (const row of tctiRows) {
  test(`parseTcti '${row.input}'`, (t) => {
    if (typeof row.want === 'string') {
      const e = t.throws(() => parseTcti(row.input), { instanceOf: TpmTransportError });
      t.is(e!.code, row.want);
    } else {
      t.deepEqual(parseTcti(row.input), row.want);
    }
  });
}

test('union trap: NULL and RSAES schemes marshal without a hash', (t) => {
  const w = new Writer();
  writeScheme(w, { scheme: TPM_ALG.RSAES });
  writeScheme(w, { scheme: TPM_ALG.NULL });
  writeScheme(w, { scheme: TPM_ALG.OAEP, hash: TPM_ALG.SHA256 });
  t.is(Buffer.from(w.finish()).toString('hex'), '0015' + '0010' + '0017000b');
});

test('SRK template marshals to the TCG layout', (t) => {
  // type ECC | nameAlg SHA256 | attrs 0x00030472 | authPolicy empty | AES-128-CFB | scheme NULL | P-256 | kdf NULL | x, y empty
  t.is(marshalPublic(srkEccTemplate()).toString('hex'), '0023000b00030472000000060080004300100003001000000000');
});

const bytes = (max: number): fc.Arbitrary<Uint8Array> => fc.uint8Array({ maxLength: max });
const hashAlg = fc.constantFrom(TPM_ALG.SHA1, TPM_ALG.SHA256, TPM_ALG.SHA384, TPM_ALG.SHA512);
const scheme = fc.oneof(
  fc.constant({ scheme: TPM_ALG.NULL } as const),
  fc.record({ scheme: fc.constantFrom(TPM_ALG.ECDSA, TPM_ALG.RSASSA, TPM_ALG.RSAPSS, TPM_ALG.OAEP), hash: hashAlg }),
);
const sym = fc.oneof(fc.constant({ algorithm: TPM_ALG.NULL } as const), fc.record({ algorithm: fc.constant(TPM_ALG.AES), keyBits: fc.constantFrom(128 as const, 256 as const), mode: fc.constant(TPM_ALG.CFB) }));
const common = { nameAlg: hashAlg, objectAttributes: fc.nat({ max: 0xffffffff }), authPolicy: bytes(64) };
const arbPublic: fc.Arbitrary<TpmPublic> = fc.oneof(
  fc.record({ type: fc.constant(TPM_ALG.RSA), ...common, symmetric: sym, scheme, keyBits: fc.constantFrom(2048 as const, 3072 as const), exponent: fc.nat({ max: 0xffffffff }), unique: bytes(384) }),
  fc.record({ type: fc.constant(TPM_ALG.ECC), ...common, symmetric: sym, scheme, curveId: fc.constantFrom(TPM_ECC.NIST_P256, TPM_ECC.NIST_P384), kdf: fc.constant({ scheme: TPM_ALG.NULL } as const), unique: fc.record({ x: bytes(48), y: bytes(48) }) }),
  fc.record({ type: fc.constant(TPM_ALG.KEYEDHASH), ...common, scheme: fc.oneof(fc.constant({ scheme: TPM_ALG.NULL } as const), fc.record({ scheme: fc.constant(TPM_ALG.HMAC), hash: hashAlg })), unique: bytes(64) }),
);

test('TPM2B_PUBLIC marshal / parse round trip (property)', (t) => {
  fc.assert(fc.property(arbPublic, (p) => {
    const back = parsePublic2b(marshalPublic2b(p));
    const norm = (x: TpmPublic): string => JSON.stringify(x, (_k, v: unknown) => (v instanceof Uint8Array ? Buffer.from(v).toString('hex') : v));
    return norm(back) === norm(p);
  }));
  t.pass();
});

test('parsing truncated or padded structures gives typed errors, never a crash (property)', (t) => {
  fc.assert(fc.property(arbPublic, fc.nat(), (p, cut) => {
    const full = marshalPublic2b(p);
    const n = cut % full.length;
    try {
      parsePublic2b(full.subarray(0, n));
      return false;
    } catch (e) {
      if (!(e instanceof TpmProtocolError)) return false;
    }
    try {
      parsePublic2b(Buffer.concat([full, Buffer.of(0)]));
      return false;
    } catch (e) {
      return e instanceof TpmProtocolError;
    }
  }));
  fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (junk) => {
    try {
      parsePublic2b(junk);
      return true;
    } catch (e) {
      return e instanceof TpmProtocolError;
    }
  }));
  t.throws(() => new Reader(Buffer.of(0, 5, 1)).tpm2b(), { instanceOf: TpmProtocolError });
});

test('names: permanent handles name themselves; objects are nameAlg || digest', (t) => {
  t.is(Buffer.from(handleName(TPM_RH.OWNER)).toString('hex'), '40000001');
  const n = objectName(rsaKeyTemplate(2048));
  t.is(n.length, 34);
  t.is(Buffer.from(n.subarray(0, 2)).toString('hex'), '000b');
  t.notDeepEqual(Buffer.from(objectName(eccKeyTemplate(TPM_ECC.NIST_P256))), Buffer.from(objectName(eccKeyTemplate(TPM_ECC.NIST_P384))));
  t.is(sealedDataTemplate().objectAttributes & (1 << 5), 0, 'sealed data must not set sensitiveDataOrigin');
});

test('KDFa / KDFe: requested length, label and context sensitivity', (t) => {
  const key = Buffer.alloc(32, 1);
  const a = kdfa(TPM_ALG.SHA256, key, 'CFB', Buffer.of(1), Buffer.of(2), 256);
  t.is(a.length, 32);
  t.is(kdfa(TPM_ALG.SHA256, key, 'CFB', Buffer.of(1), Buffer.of(2), 520).length, 65);
  t.notDeepEqual(a, kdfa(TPM_ALG.SHA256, key, 'ATH', Buffer.of(1), Buffer.of(2), 256));
  t.notDeepEqual(a, kdfa(TPM_ALG.SHA256, key, 'CFB', Buffer.of(2), Buffer.of(1), 256));
  // the bit count is an input: a shorter request is not a prefix of a longer one
  t.notDeepEqual(kdfa(TPM_ALG.SHA256, key, 'CFB', Buffer.of(1), Buffer.of(2), 128), a.subarray(0, 16));
  t.is(kdfe(TPM_ALG.SHA384, key, 'SECRET', Buffer.of(1), Buffer.of(2), 384).length, 48);
});

test('ecdsaSignatureToDer: node verifies converted P-256 and P-384 signatures (property)', (t) => {
  for (const namedCurve of ['P-256', 'P-384'] as const) {
    const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve });
    const size = namedCurve === 'P-256' ? 32 : 48;
    fc.assert(fc.property(fc.uint8Array({ minLength: 1, maxLength: 64 }), (msg) => {
      const raw = sign('sha256', msg, { key: privateKey, dsaEncoding: 'ieee-p1363' });
      // TPMs may return r or s without leading zeros
      const strip = (b: Buffer): Buffer => { let i = 0; while (i < b.length - 1 && b[i] === 0) i++; return b.subarray(i); };
      const der = ecdsaSignatureToDer({ sigAlg: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256, r: strip(raw.subarray(0, size)), s: strip(raw.subarray(size)) });
      return verify('sha256', msg, { key: publicKey, dsaEncoding: 'der' }, der);
    }), { numRuns: 30 });
  }
  t.pass();
});
