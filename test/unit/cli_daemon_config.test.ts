import test from 'ava';
import { TpmvscError } from '../../common/errors.js';
import { DAEMON_HELP, DEFAULTS, parseDaemonArguments } from '../../daemon/config.js';

test('defaults', (t) => {
  t.deepEqual(parseDaemonArguments([], {}), {
    command: 'run',
    tcti: 'device:/dev/tpmrm0',
    stateDir: '/var/lib/tpmvsc',
    socketPath: '/run/tpmvsc/control.sock',
    vpcd: { host: '127.0.0.1', port: 35963 },
    readers: 10,
    readerName: 'TPM Virtual Smart Card',
    readerNaming: 'numbered',
    tpmLockout: 'windows',
    attestationCa: undefined,
    ownerAuthFile: undefined,
    endorsementAuthFile: undefined,
    control: { maxConnections: 64, maxConnectionsPerUser: 16, requestTimeoutMs: 10_000 },
  });
});

test('control socket limits: flags, environment, bounds', (t) => {
  t.like(parseDaemonArguments(['--max-control-connections', '8', '--max-control-connections-per-user=2', '--control-request-timeout', '3'], {}), {
    control: { maxConnections: 8, maxConnectionsPerUser: 2, requestTimeoutMs: 3000 },
  });
  const env = { TPMVSC_MAX_CONTROL_CONNECTIONS: '100', TPMVSC_MAX_CONTROL_CONNECTIONS_PER_USER: '4', TPMVSC_CONTROL_REQUEST_TIMEOUT: '60' };
  t.like(parseDaemonArguments([], env), { control: { maxConnections: 100, maxConnectionsPerUser: 4, requestTimeoutMs: 60_000 } });
  t.like(parseDaemonArguments(['--max-control-connections', '5'], env), { control: { maxConnections: 5, maxConnectionsPerUser: 4 } });
  for (const [flag, value] of [['--max-control-connections', '0'], ['--max-control-connections-per-user', '-1'], ['--control-request-timeout', '1.5'], ['--control-request-timeout', '3601']] as const) {
    t.throws(() => parseDaemonArguments([flag, value], {}), { instanceOf: TpmvscError, message: new RegExp(`${flag} must be a whole number from 1 to`) });
  }
  t.throws(() => parseDaemonArguments([], { TPMVSC_MAX_CONTROL_CONNECTIONS: 'many' }), { message: /TPMVSC_MAX_CONTROL_CONNECTIONS must be a whole number/ });
  t.throws(() => parseDaemonArguments(['register-readers', '--conf-dir', '/c', '--driver-dir', '/d', '--max-control-connections', '3'], {}), { message: /unknown option/ });
});

test('--attestation-ca takes an http(s) URL, also from TPMVSC_ATTESTATION_CA', (t) => {
  t.like(parseDaemonArguments(['--attestation-ca', 'http://127.0.0.1:8443'], {}), { attestationCa: 'http://127.0.0.1:8443/' });
  t.like(parseDaemonArguments([], { TPMVSC_ATTESTATION_CA: 'https://ca.example/' }), { attestationCa: 'https://ca.example/' });
  t.throws(() => parseDaemonArguments(['--attestation-ca', 'ftp://x'], {}), { message: /http: or https:/ });
  t.throws(() => parseDaemonArguments(['--attestation-ca', 'not a url'], {}), { message: /must be a URL/ });
});

test('--reader-naming plain: the pair of readers of the vpcd package, two at most', (t) => {
  t.like(parseDaemonArguments(['--reader-naming', 'plain', '--reader-name', 'Virtual PCD'], {}), { readerNaming: 'plain', readers: 2, readerName: 'Virtual PCD' });
  t.like(parseDaemonArguments(['--readers', '1'], { TPMVSC_READER_NAMING: 'plain' }), { readerNaming: 'plain', readers: 1 });
  t.like(parseDaemonArguments(['register-readers', '--conf-dir', '/c', '--driver-dir', '/d', '--reader-naming', 'plain'], {}), { readerNaming: 'plain', readers: 2 });
  t.throws(() => parseDaemonArguments(['--reader-naming', 'plain', '--readers', '4'], {}), { message: /one block of two readers: use --readers 2 or 1/ });
  t.throws(() => parseDaemonArguments(['--reader-naming', 'stock'], {}), { message: /--reader-naming must be numbered or plain/ });
});

test('--tpm-lockout takes windows or keep', (t) => {
  t.like(parseDaemonArguments(['--tpm-lockout', 'keep'], {}), { tpmLockout: 'keep' });
  t.like(parseDaemonArguments([], { TPMVSC_TPM_LOCKOUT: 'keep' }), { tpmLockout: 'keep' });
  t.throws(() => parseDaemonArguments(['--tpm-lockout', 'never'], {}), { message: /--tpm-lockout must be windows or keep/ });
});

test('environment, overridden by flags', (t) => {
  const env = { TPMVSC_TCTI: 'swtpm:port=2321', TPMVSC_STATE_DIR: '/tmp/s', TPMVSC_SOCKET: '/tmp/c.sock', TPMVSC_VPCD: 'localhost:40000', TPMVSC_READERS: '4', TPMVSC_READER_NAME: 'Env Name' };
  t.like(parseDaemonArguments([], env), { tcti: 'swtpm:port=2321', stateDir: '/tmp/s', socketPath: '/tmp/c.sock', vpcd: { host: '127.0.0.1', port: 40000 }, readers: 4, readerName: 'Env Name' });
  t.like(parseDaemonArguments(['--readers', '16', '--vpcd=127.0.0.2:1000', '--reader-name', 'Flag Name', '--tcti', 'device:/dev/tpm0'], env), {
    readers: 16,
    vpcd: { host: '127.0.0.2', port: 1000 },
    readerName: 'Flag Name',
    tcti: 'device:/dev/tpm0',
  });
});

test('register-readers', (t) => {
  t.deepEqual(parseDaemonArguments(['register-readers', '--conf-dir', '/etc/reader.conf.d', '--driver-dir', '/usr/lib/tpmvsc/drivers', '--readers', '2'], {}), {
    command: 'register-readers',
    confDir: '/etc/reader.conf.d',
    driverDir: '/usr/lib/tpmvsc/drivers',
    readers: 2,
    vpcd: { host: DEFAULTS.vpcdHost, port: DEFAULTS.vpcdPort },
    readerName: DEFAULTS.readerName,
    readerNaming: 'numbered',
  });
});

test('--help', (t) => {
  t.deepEqual(parseDaemonArguments(['--help'], {}), { command: 'help' });
  for (const flag of ['--tcti', '--state-dir', '--socket', '--vpcd', '--readers', '--reader-name', '--reader-naming', 'register-readers', 'TPMVSC_VPCD', '--max-control-connections', 'TPMVSC_MAX_CONTROL_CONNECTIONS_PER_USER', 'TPMVSC_CONTROL_REQUEST_TIMEOUT']) t.true(DAEMON_HELP.includes(flag), flag);
});

const refused: Array<{ name: string; argv: string[]; env?: Record<string, string>; want: RegExp }> = [
  { name: 'non-loopback vpcd host', argv: ['--vpcd', '0.0.0.0:35963'], want: /loopback/ },
  { name: 'remote vpcd host', argv: ['--vpcd', '192.168.1.10:35963'], want: /loopback/ },
  { name: 'hostname', argv: ['--vpcd', 'example.com:35963'], want: /loopback/ },
  { name: 'non-loopback vpcd from env', argv: [], env: { TPMVSC_VPCD: '10.0.0.1:1' }, want: /TPMVSC_VPCD must be a loopback/ },
  { name: 'vpcd without port', argv: ['--vpcd', '127.0.0.1'], want: /HOST:PORT/ },
  { name: 'vpcd port 0', argv: ['--vpcd', '127.0.0.1:0'], want: /port must be 1..65535/ },
  { name: 'readers 0', argv: ['--readers', '0'], want: /1 to 16/ },
  { name: 'readers 17', argv: ['--readers', '17'], want: /1 to 16/ },
  { name: 'readers from env', argv: [], env: { TPMVSC_READERS: 'ten' }, want: /TPMVSC_READERS must be/ },
  { name: 'ports past 65535', argv: ['--vpcd', '127.0.0.1:65530', '--readers', '10'], want: /past port 65535/ },
  { name: 'reader name with a quote', argv: ['--reader-name', 'a"b'], want: /without quotes/ },
  { name: 'unknown flag', argv: ['--frob'], want: /unknown option --frob/ },
  { name: 'register flag on run', argv: ['--conf-dir', '/x'], want: /unknown option --conf-dir for tpmvscd/ },
  { name: 'missing value', argv: ['--tcti'], want: /--tcti needs a value/ },
  { name: 'duplicate', argv: ['--readers', '1', '--readers', '2'], want: /more than once/ },
  { name: 'stray word', argv: ['run'], want: /unexpected argument "run"/ },
  { name: 'register-readers without --conf-dir', argv: ['register-readers', '--driver-dir', '/d'], want: /needs --conf-dir/ },
  { name: 'register-readers without --driver-dir', argv: ['register-readers', '--conf-dir', '/c'], want: /needs --driver-dir/ },
];

for (const row of refused) {
  test(`refused: ${row.name}`, (t) => {
    const error = t.throws(() => parseDaemonArguments(row.argv, row.env ?? {}), { instanceOf: TpmvscError });
    t.is(error?.code, 'USAGE');
    t.regex(error?.detail ?? '', row.want);
  });
}
