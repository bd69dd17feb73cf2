/**
 * tpmvscd's configuration: command-line flags, each with an environment equivalent (flags win).
 *
 *   tpmvscd [options]                                   run the daemon
 *   tpmvscd register-readers --conf-dir DIR --driver-dir DIR [pool options]
 *   tpmvscd --help | --version
 */
import { join } from 'node:path';
import { DEFAULT_CONTROL_SOCKET, MAX_REQUEST_LINE_BYTES } from '../common/control_protocol.js';
import { TpmvscError } from '../common/errors.js';
import { parseLoopbackAddress } from '../common/loopback_address.js';
import { DEFAULT_CONTROL_LIMITS, type ControlLimits } from './control_connection_limits.js';
import type { ReaderNaming } from './reader_config.js';

export const DEFAULTS = {
  tcti: 'device:/dev/tpmrm0',
  stateDir: '/var/lib/tpmvsc',
  socketPath: DEFAULT_CONTROL_SOCKET,
  vpcdHost: '127.0.0.1',
  /** vpcd's own port, 0x8C7B. */
  vpcdPort: 35963,
  readers: 10,
  readerName: 'TPM Virtual Smart Card',
} as const;

/** pcscd handles at most 16 readers. */
export const MAX_READERS = 16;

/** Where the first reader's vpcd listens; reader n is on port + n. Loopback only. */
export interface VpcdAddress {
  host: string;
  port: number;
}

/** Options shared by the daemon and register-readers: the reader pool. */
export interface PoolConfig {
  vpcd: VpcdAddress;
  /** Pool size, 1..16. */
  readers: number;
  /** pcscd FRIENDLYNAME base of the readers. */
  readerName: string;
  /** Whether FRIENDLYNAMEs carry the block number (ours) or not (the vpcd package's own pair). */
  readerNaming: ReaderNaming;
}

export interface RunConfig extends PoolConfig {
  command: 'run';
  /** TPM transport, e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321. */
  tcti: string;
  stateDir: string;
  socketPath: string;
  /** What to do with a TPM whose dictionary-attack policy is stricter than the cards need. */
  tpmLockout: TpmLockoutMode;
  /** URL of the attestation CA (tpmvsc-ca) for /attestation AIK_AND_CERT; undefined: none. */
  attestationCa: string | undefined;
  /** Where the TPM owner password is read from (daemon/tpm_password_file.ts); undefined: empty password. */
  ownerAuthFile: TpmPasswordSource | undefined;
  /** The same for the endorsement hierarchy (attestation with an EK: /attestation AIK_AND_CERT). */
  endorsementAuthFile: TpmPasswordSource | undefined;
  /** Limits of the control socket. */
  control: ControlLimits;
}

/** The systemd credentials (LoadCredential=tpm-owner-auth:PATH) read when no option names a file. */
export const OWNER_AUTH_CREDENTIAL = 'tpm-owner-auth';
export const ENDORSEMENT_AUTH_CREDENTIAL = 'tpm-endorsement-auth';

/**
 * A file holding a TPM hierarchy password. 'option': --owner-auth-file or TPMVSC_OWNER_AUTH_FILE
 * (--endorsement-auth-file...), must exist; 'credential': $CREDENTIALS_DIRECTORY/tpm-owner-auth
 * (tpm-endorsement-auth), used only if it exists.
 */
export interface TpmPasswordSource {
  path: string;
  /** What named it, for messages: '--owner-auth-file', 'TPMVSC_OWNER_AUTH_FILE' or the credential. */
  source: string;
  kind: 'option' | 'credential';
}

export type TpmLockoutMode = 'windows' | 'keep';

export interface RegisterReadersConfig extends PoolConfig {
  command: 'register-readers';
  /** Where the pcscd reader configuration goes (e.g. /etc/reader.conf.d). */
  confDir: string;
  /** Where the copies of the vpcd driver go. */
  driverDir: string;
}

export interface HelpConfig {
  command: 'help';
}

export type DaemonConfig = RunConfig | RegisterReadersConfig | HelpConfig;

export const DAEMON_HELP = `tpmvscd: TPM virtual smart card daemon

Usage:
  tpmvscd [options]
  tpmvscd register-readers --conf-dir DIR --driver-dir DIR [pool options]
  tpmvscd --help

Options (each also read from the environment variable shown; the flag wins):
  --tcti SPEC          TPMVSC_TCTI         TPM transport (default ${DEFAULTS.tcti})
  --state-dir DIR      TPMVSC_STATE_DIR    card state, sealed by the TPM (default ${DEFAULTS.stateDir})
  --socket PATH        TPMVSC_SOCKET       control socket for tpmvscmgr (default ${DEFAULTS.socketPath})
  --tpm-lockout MODE   TPMVSC_TPM_LOCKOUT  windows: when the TPM locks out after fewer than 32 wrong
                                           authorizations, set Windows' policy (32 failures, one
                                           forgiven every 10 minutes) so 5 PIN + 5 PUK tries fit
                                           (only if the lockout password is empty: a TPM with
                                           one is left alone); keep: never change it (default
                                           windows)
  --attestation-ca URL TPMVSC_ATTESTATION_CA
                                           attestation CA (tpmvsc-ca) that certifies card AIKs
                                           for create /attestation AIK_AND_CERT, e.g.
                                           http://127.0.0.1:8443 (default: none; AIK_AND_CERT fails)
  --owner-auth-file PATH TPMVSC_OWNER_AUTH_FILE
                                           file holding the TPM owner password (as given to
                                           tpm2_changeauth -c owner; one trailing newline is
                                           ignored); mode 0600 or stricter, owned by the daemon's
                                           user. Default: the systemd credential
                                           ${'$'}CREDENTIALS_DIRECTORY/tpm-owner-auth if present, else an
                                           empty owner password
  --endorsement-auth-file PATH TPMVSC_ENDORSEMENT_AUTH_FILE
                                           the same for the endorsement hierarchy's password
                                           (tpm2_changeauth -c endorsement), which attestation
                                           with the EK needs (create /attestation AIK_AND_CERT);
                                           credential tpm-endorsement-auth

Control socket limits (so no caller can tie up the daemon with idle connections):
  --max-control-connections N TPMVSC_MAX_CONTROL_CONNECTIONS
                                           open connections of all users but root together
                                           (default ${DEFAULT_CONTROL_LIMITS.maxConnections}); one more is refused (tpmvscmgr: exit 1)
  --max-control-connections-per-user N TPMVSC_MAX_CONTROL_CONNECTIONS_PER_USER
                                           open connections of one user, root included
                                           (default ${DEFAULT_CONTROL_LIMITS.maxConnectionsPerUser}); tpmvscmgr uses one per command
  --control-request-timeout SECONDS TPMVSC_CONTROL_REQUEST_TIMEOUT
                                           time from connecting to a complete request line
                                           (default ${DEFAULT_CONTROL_LIMITS.requestTimeoutMs / 1000}); tpmvscmgr asks PROMPT secrets before it
                                           connects, and a create runs as long as it needs
  A request line is at most ${MAX_REQUEST_LINE_BYTES} bytes.

Pool options (daemon and register-readers):
  --vpcd HOST:PORT     TPMVSC_VPCD         vpcd port of reader 0; reader n uses PORT+n; loopback
                                           addresses only (default ${DEFAULTS.vpcdHost}:${DEFAULTS.vpcdPort})
  --readers N          TPMVSC_READERS      number of readers, 1..${MAX_READERS} (default ${DEFAULTS.readers})
  --reader-name NAME   TPMVSC_READER_NAME  reader friendly name (default "${DEFAULTS.readerName}")
  --reader-naming numbered|plain
                       TPMVSC_READER_NAMING
                                           numbered: pcscd shows "NAME <block> 00 0n" (the readers
                                           register-readers writes); plain: "NAME 00 0n", one block
                                           of 2 readers, e.g. the vsmartcard-vpcd package's own
                                           "Virtual PCD" pair (default numbered)

register-readers writes pcscd's reader configuration for the pool into --conf-dir and copies of
the vpcd driver into --driver-dir, then exits; restart pcscd afterwards.
`;

function usage(detail: string): TpmvscError {
  return new TpmvscError('USAGE', detail);
}

type FlagName =
  | 'tcti' | 'state-dir' | 'socket' | 'vpcd' | 'readers' | 'reader-name' | 'reader-naming' | 'conf-dir' | 'driver-dir' | 'tpm-lockout' | 'attestation-ca'
  | 'owner-auth-file' | 'endorsement-auth-file'
  | 'max-control-connections' | 'max-control-connections-per-user' | 'control-request-timeout';

const ENVIRONMENT: Partial<Record<FlagName, string>> = {
  tcti: 'TPMVSC_TCTI',
  'state-dir': 'TPMVSC_STATE_DIR',
  socket: 'TPMVSC_SOCKET',
  vpcd: 'TPMVSC_VPCD',
  readers: 'TPMVSC_READERS',
  'reader-name': 'TPMVSC_READER_NAME',
  'reader-naming': 'TPMVSC_READER_NAMING',
  'tpm-lockout': 'TPMVSC_TPM_LOCKOUT',
  'attestation-ca': 'TPMVSC_ATTESTATION_CA',
  'owner-auth-file': 'TPMVSC_OWNER_AUTH_FILE',
  'endorsement-auth-file': 'TPMVSC_ENDORSEMENT_AUTH_FILE',
  'max-control-connections': 'TPMVSC_MAX_CONTROL_CONNECTIONS',
  'max-control-connections-per-user': 'TPMVSC_MAX_CONTROL_CONNECTIONS_PER_USER',
  'control-request-timeout': 'TPMVSC_CONTROL_REQUEST_TIMEOUT',
};

const RUN_FLAGS: readonly FlagName[] = [
  'tcti', 'state-dir', 'socket', 'vpcd', 'readers', 'reader-name', 'reader-naming', 'tpm-lockout', 'attestation-ca', 'owner-auth-file', 'endorsement-auth-file',
  'max-control-connections', 'max-control-connections-per-user', 'control-request-timeout',
];
const REGISTER_FLAGS: readonly FlagName[] = ['vpcd', 'readers', 'reader-name', 'reader-naming', 'conf-dir', 'driver-dir'];

/** Loopback only: 127.0.0.0/8, localhost (as 127.0.0.1) or [::1]. */
export function parseVpcdAddress(text: string, source: string): VpcdAddress {
  return parseLoopbackAddress(text, source, { example: '127.0.0.1:35963', why: 'vpcd must not be reachable from the network' });
}

function parseReaders(text: string, source: string): number {
  if (!/^\d{1,2}$/.test(text.trim()) || Number(text) < 1 || Number(text) > MAX_READERS) {
    throw usage(`${source} must be a number of readers from 1 to ${MAX_READERS}`);
  }
  return Number(text);
}

function parseReaderName(text: string, source: string): string {
  // pcscd's reader.conf FRIENDLYNAME is a quoted string; pcscd adds " 00 0n" to it.
  if (!/^[\x20-\x7e]{1,40}$/.test(text) || text.includes('"') || text.trim() !== text) {
    throw usage(`${source} must be 1 to 40 printable ASCII characters without quotes or surrounding spaces`);
  }
  return text;
}

function requireValue(text: string, source: string): string {
  if (text.length === 0) throw usage(`${source} needs a value`);
  return text;
}

/**
 * Reads the daemon's configuration from argv (without node and the script) and the environment.
 * Throws TpmvscError('USAGE') naming the fix.
 */
export function parseDaemonArguments(argv: readonly string[], env: NodeJS.ProcessEnv): DaemonConfig {
  let tokens = [...argv];
  let command: 'run' | 'register-readers' = 'run';
  if (tokens[0] === 'register-readers') {
    command = 'register-readers';
    tokens = tokens.slice(1);
  }
  const allowed = command === 'run' ? RUN_FLAGS : REGISTER_FLAGS;
  const flags = new Map<FlagName, { value: string; source: string }>();
  for (let index = 0; index < tokens.length; index += 1) {
    const token = tokens[index]!;
    if (token === '--help' || token === '-h') return { command: 'help' };
    if (!token.startsWith('--')) throw usage(`unexpected argument "${token.slice(0, 60)}" (see tpmvscd --help)`);
    const equals = token.indexOf('=');
    const name = (equals >= 0 ? token.slice(2, equals) : token.slice(2)) as FlagName;
    if (!allowed.includes(name)) throw usage(`unknown option --${name.slice(0, 40)} for ${command === 'run' ? 'tpmvscd' : 'register-readers'} (see tpmvscd --help)`);
    if (flags.has(name)) throw usage(`--${name} is given more than once`);
    let value: string | undefined;
    if (equals >= 0) value = token.slice(equals + 1);
    else {
      value = tokens[index + 1];
      index += 1;
      if (value === undefined || value.startsWith('--')) throw usage(`--${name} needs a value`);
    }
    flags.set(name, { value: requireValue(value, `--${name}`), source: `--${name}` });
  }
  const setting = (name: FlagName): { value: string; source: string } | undefined => {
    const flag = flags.get(name);
    if (flag) return flag;
    const variable = ENVIRONMENT[name];
    const fromEnv = variable === undefined ? undefined : env[variable];
    return fromEnv === undefined || fromEnv === '' ? undefined : { value: fromEnv, source: variable! };
  };

  const vpcdSetting = setting('vpcd');
  const readersSetting = setting('readers');
  const nameSetting = setting('reader-name');
  const readerNaming = parseReaderNaming(setting('reader-naming'));
  // A plain-named pool is one block: two readers unless told fewer.
  const defaultReaders = readerNaming === 'plain' ? 2 : DEFAULTS.readers;
  const pool: PoolConfig = {
    vpcd: vpcdSetting ? parseVpcdAddress(vpcdSetting.value, vpcdSetting.source) : { host: DEFAULTS.vpcdHost, port: DEFAULTS.vpcdPort },
    readers: readersSetting ? parseReaders(readersSetting.value, readersSetting.source) : defaultReaders,
    readerName: nameSetting ? parseReaderName(nameSetting.value, nameSetting.source) : DEFAULTS.readerName,
    readerNaming,
  };
  if (readerNaming === 'plain' && pool.readers > 2) throw usage('--reader-naming plain names one block of two readers: use --readers 2 or 1');
  if (pool.vpcd.port + pool.readers - 1 > 65535) throw usage('the vpcd port plus the number of readers goes past port 65535');

  if (command === 'register-readers') {
    const confDir = flags.get('conf-dir')?.value;
    const driverDir = flags.get('driver-dir')?.value;
    if (confDir === undefined) throw usage('register-readers needs --conf-dir DIR (e.g. /etc/reader.conf.d)');
    if (driverDir === undefined) throw usage('register-readers needs --driver-dir DIR (e.g. /usr/lib/tpmvsc/drivers)');
    return { command, ...pool, confDir, driverDir };
  }
  return {
    command,
    ...pool,
    tcti: setting('tcti')?.value ?? DEFAULTS.tcti,
    stateDir: setting('state-dir')?.value ?? DEFAULTS.stateDir,
    socketPath: setting('socket')?.value ?? DEFAULTS.socketPath,
    tpmLockout: parseLockoutMode(setting('tpm-lockout')),
    attestationCa: parseAttestationCa(setting('attestation-ca')),
    ownerAuthFile: passwordSource(setting('owner-auth-file'), env, OWNER_AUTH_CREDENTIAL),
    endorsementAuthFile: passwordSource(setting('endorsement-auth-file'), env, ENDORSEMENT_AUTH_CREDENTIAL),
    control: {
      maxConnections: parseWholeNumber(setting('max-control-connections'), 1, 10_000) ?? DEFAULT_CONTROL_LIMITS.maxConnections,
      maxConnectionsPerUser: parseWholeNumber(setting('max-control-connections-per-user'), 1, 10_000) ?? DEFAULT_CONTROL_LIMITS.maxConnectionsPerUser,
      requestTimeoutMs: (parseWholeNumber(setting('control-request-timeout'), 1, 3600) ?? DEFAULT_CONTROL_LIMITS.requestTimeoutMs / 1000) * 1000,
    },
  };
}

function parseWholeNumber(setting: { value: string; source: string } | undefined, min: number, max: number): number | undefined {
  if (setting === undefined) return undefined;
  const value = Number(setting.value);
  if (!/^\d{1,6}$/.test(setting.value) || value < min || value > max) throw usage(`${setting.source} must be a whole number from ${min} to ${max}`);
  return value;
}

/** The option or variable wins; otherwise systemd's credential, if the service has a credentials directory. */
function passwordSource(setting: { value: string; source: string } | undefined, env: NodeJS.ProcessEnv, credential: string): TpmPasswordSource | undefined {
  if (setting !== undefined) return { path: setting.value, source: setting.source, kind: 'option' };
  const credentials = env.CREDENTIALS_DIRECTORY;
  if (credentials === undefined || credentials === '') return undefined;
  return { path: join(credentials, credential), source: `systemd credential ${credential}`, kind: 'credential' };
}

function parseAttestationCa(setting: { value: string; source: string } | undefined): string | undefined {
  if (setting === undefined) return undefined;
  let url: URL;
  try {
    url = new URL(setting.value);
  } catch {
    throw usage(`${setting.source} must be a URL, e.g. http://127.0.0.1:8443`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw usage(`${setting.source} must be an http: or https: URL`);
  return url.href;
}

function parseReaderNaming(setting: { value: string; source: string } | undefined): ReaderNaming {
  if (setting === undefined) return 'numbered';
  if (setting.value === 'numbered' || setting.value === 'plain') return setting.value;
  throw usage(`${setting.source} must be numbered or plain`);
}

function parseLockoutMode(setting: { value: string; source: string } | undefined): TpmLockoutMode {
  if (setting === undefined) return 'windows';
  if (setting.value === 'windows' || setting.value === 'keep') return setting.value;
  throw usage(`${setting.source} must be windows or keep`);
}
