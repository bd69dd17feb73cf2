/**
 * The one parser of loopback HOST:PORT (daemon --vpcd, tpmvsc-ca --listen): anything that is not
 * loopback is refused with a usage error that says why.
 */
import test from 'ava';
import { TpmvscError } from '../../common/errors.js';
import { parseLoopbackAddress } from '../../common/loopback_address.js';

const options = { example: '127.0.0.1:8443', why: 'test reason' };

test('loopback forms are accepted; localhost becomes 127.0.0.1', (t) => {
  t.deepEqual(parseLoopbackAddress('127.0.0.1:8443', '--listen', options), { host: '127.0.0.1', port: 8443 });
  t.deepEqual(parseLoopbackAddress('127.1.2.3:1', '--listen', options), { host: '127.1.2.3', port: 1 });
  t.deepEqual(parseLoopbackAddress('LOCALHOST:80', '--listen', options), { host: '127.0.0.1', port: 80 });
  t.deepEqual(parseLoopbackAddress('[::1]:65535', '--listen', options), { host: '::1', port: 65535 });
  t.deepEqual(parseLoopbackAddress('127.0.0.1:0', '--listen', { ...options, minPort: 0 }), { host: '127.0.0.1', port: 0 });
});

for (const [text, message] of [
  ['0.0.0.0:8443', /--listen must be a loopback address .*: test reason/],
  ['[::]:8443', /must be a loopback address/],
  ['192.168.1.2:8443', /must be a loopback address/],
  ['127.0.0.256:8443', /must be a loopback address/],
  ['ca.example:8443', /must be a loopback address/],
  ['127.0.0.1', /--listen must be HOST:PORT, e\.g\. 127\.0\.0\.1:8443/],
  ['127.0.0.1:0', /--listen port must be 1\.\.65535/],
  ['127.0.0.1:65536', /port must be 1\.\.65535/],
] as const) {
  test(`refused: ${text}`, (t) => {
    const error = t.throws(() => parseLoopbackAddress(text, '--listen', options), { instanceOf: TpmvscError, message });
    t.is(error?.code, 'USAGE');
  });
}
