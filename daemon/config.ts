/**
 * tpmvscd's configuration: command-line flags, each with an environment equivalent (flags win).
 *
 *   tpmvscd [options]                                   run the daemon
 *   tpmvscd register-readers --conf-dir DIR --driver-dir DIR [pool options]
 *   tpmvscd guard-vpcd --daemon-user USER [--socket PATH] [pool options]
 *   tpmvscd --help | --version
 */
import { join } from 'node:path';
import { DEFAULT_CONTROL_SOCKET, MAX_REQUEST_LINE_BYTES } from '../common/control_protocol.js';
import { TpmvscError } from '../common/errors.js';
import { parseLoopbackAddress } from '../common/loopback_address.js';
import { DEFAULT_PIN_LIFETIME, parsePinLifetime, PIN_LIFETIME_MAX_SECONDS, type PinLifetime } from '../common/pin_lifetime.js';
import { DEFAULT_CONTROL_LIMITS, type ControlLimits } from './control_connection_limits.js';
import { DEFAULT_BASE_PORT, type ReaderNaming } from './reader_config.js';

export const DEFAULTS = {
  tcti: 'device:/dev/tpmrm0',
  stateDir: '/var/lib/tpmvsc',
  socketPath: DEFAULT_CONTROL_SOCKET,
  vpcdHost: '127.0.0.1',
  /** Below 1024: only root (pcscd) may listen on a reader port (reader_config.ts). */
  vpcdPort: DEFAULT_BASE_PORT,
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
  /** Verified-PIN lifetime of the cards created without create /pinlifetime. */
  pinLifetime: PinLifetime;
  /** Limits of the control socket. */
  control: ControlLimits;
  /** The admin guards the vpcd ports another way: start without the guard (daemon/vpcd_guard.ts), warning at every start. */
  allowUnprotectedVpcd: boolean;
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

/** Root installs the vpcd guard for a daemon that will run as another user (systemd's ExecStartPre=+). */
export interface GuardVpcdConfig extends PoolConfig {
  command: 'guard-vpcd';
  /** The user the daemon runs as (name or uid): let through, and the record is checked against it. */
  daemonUser: string;
  /** The daemon's control socket: the guard record goes into its directory. */
  socketPath: string;
}

export interface HelpConfig {
  command: 'help';
}

export type DaemonConfig = RunConfig | RegisterReadersConfig | GuardVpcdConfig | HelpConfig;

export const DAEMON_HELP = `tpmvscd: TPM virtual smart card daemon

Usage:
  tpmvscd [options]
  tpmvscd register-readers --conf-dir DIR --driver-dir DIR [pool options]
  tpmvscd guard-vpcd --daemon-user USER [--socket PATH] [pool options]
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
  --pin-lifetime SPEC  TPMVSC_PIN_LIFETIME how long a card keeps its PIN verified, for the cards
                                           created without /pinlifetime: SECONDS (1..${PIN_LIFETIME_MAX_SECONDS}) after
                                           the VERIFY, or unlimited (until power off, as real
                                           cards); ",once" adds: one private-key operation per
                                           VERIFY. Every local account can reach the cards and a
                                           card cannot tell who sends a command: whoever comes
                                           while the PIN is verified can use the owner's keys
                                           (default ${DEFAULT_PIN_LIFETIME.seconds}; see docs/CLIENTS.md)
  --allow-unprotected-vpcd TPMVSC_ALLOW_UNPROTECTED_VPCD=1
                                           start without the vpcd guard, because you keep other
                                           local users off the reader ports another way. Without
                                           the guard any local user can take a card's place and
                                           read its PIN; the daemon logs a warning at every start

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

The vpcd guard: before it connects any reader, the daemon makes sure only root (pcscd) and its
own user can connect to the pool's reader ports (PORT .. PORT+readers-1, whole blocks of two), on
every local address, and only root can send from them: an nftables table
"inet tpmvsc_vpcd_<first>_<last>", left in place when the daemon exits. Run as root, it installs
the table itself. Run as another user, it needs root to have run, with the same pool options and
--socket,
  tpmvscd guard-vpcd --daemon-user USER
which installs the table letting USER through and writes a root-owned record beside the control
socket (the systemd unit's ExecStartPre=+ does this). Without either the daemon exits with code 12
and says what to do, unless --allow-unprotected-vpcd.
`;

function usage(detail: string): TpmvscError {
  return new TpmvscError('USAGE', detail);
}

type FlagName =
  | 'tcti' | 'state-dir' | 'socket' | 'vpcd' | 'readers' | 'reader-name' | 'reader-naming' | 'conf-dir' | 'driver-dir' | 'tpm-lockout' | 'attestation-ca'
  | 'owner-auth-file' | 'endorsement-auth-file' | 'pin-lifetime' | 'allow-unprotected-vpcd' | 'daemon-user'
  | 'max-control-connections' | 'max-control-connections-per-user' | 'control-request-timeout';

/** Flags that take no value. */
const SWITCHES: readonly FlagName[] = ['allow-unprotected-vpcd'];

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
  'pin-lifetime': 'TPMVSC_PIN_LIFETIME',
  'max-control-connections': 'TPMVSC_MAX_CONTROL_CONNECTIONS',
  'max-control-connections-per-user': 'TPMVSC_MAX_CONTROL_CONNECTIONS_PER_USER',
  'control-request-timeout': 'TPMVSC_CONTROL_REQUEST_TIMEOUT',
  'allow-unprotected-vpcd': 'TPMVSC_ALLOW_UNPROTECTED_VPCD',
};

const RUN_FLAGS: readonly FlagName[] = [
  'tcti', 'state-dir', 'socket', 'vpcd', 'readers', 'reader-name', 'reader-naming', 'tpm-lockout', 'attestation-ca', 'owner-auth-file', 'endorsement-auth-file',
  'pin-lifetime', 'max-control-connections', 'max-control-connections-per-user', 'control-request-timeout', 'allow-unprotected-vpcd',
];
const REGISTER_FLAGS: readonly FlagName[] = ['vpcd', 'readers', 'reader-name', 'reader-naming', 'conf-dir', 'driver-dir'];
const GUARD_FLAGS: readonly FlagName[] = ['vpcd', 'readers', 'reader-name', 'reader-naming', 'socket', 'daemon-user'];
const COMMANDS = { 'register-readers': REGISTER_FLAGS, 'guard-vpcd': GUARD_FLAGS } as const;

/** Loopback only: 127.0.0.0/8, localhost (as 127.0.0.1) or [::1]. */
export function parseVpcdAddress(text: string, source: string): VpcdAddress {
  return parseLoopbackAddress(text, source, { example: `127.0.0.1:${DEFAULTS.vpcdPort}`, why: 'vpcd must not be reachable from the network' });
}

export function parseReaders(text: string, source: string): number {
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
  let command: 'run' | keyof typeof COMMANDS = 'run';
  if (tokens[0] !== undefined && Object.hasOwn(COMMANDS, tokens[0])) {
    command = tokens[0] as keyof typeof COMMANDS;
    tokens = tokens.slice(1);
  }
  const allowed = command === 'run' ? RUN_FLAGS : COMMANDS[command];
  const flags = new Map<FlagName, { value: string; source: string }>();
  for (let index = 0; index < tokens.length; index += 1) {
    const token = tokens[index]!;
    if (token === '--help' || token === '-h') return { command: 'help' };
    if (!token.startsWith('--')) throw usage(`unexpected argument "${token.slice(0, 60)}" (see tpmvscd --help)`);
    const equals = token.indexOf('=');
    const name = (equals >= 0 ? token.slice(2, equals) : token.slice(2)) as FlagName;
    if (!allowed.includes(name)) throw usage(`unknown option --${name.slice(0, 40)} for ${command === 'run' ? 'tpmvscd' : command} (see tpmvscd --help)`);
    if (flags.has(name)) throw usage(`--${name} is given more than once`);
    if (SWITCHES.includes(name)) {
      if (equals >= 0) throw usage(`--${name} takes no value`);
      flags.set(name, { value: 'yes', source: `--${name}` });
      continue;
    }
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
  const socketPath = setting('socket')?.value ?? DEFAULTS.socketPath;
  if (command === 'guard-vpcd') {
    const daemonUser = flags.get('daemon-user')?.value;
    if (daemonUser === undefined) throw usage('guard-vpcd needs --daemon-user USER: the user tpmvscd runs as (e.g. tpmvsc)');
    return { command, ...pool, socketPath, daemonUser };
  }
  return {
    command,
    ...pool,
    tcti: setting('tcti')?.value ?? DEFAULTS.tcti,
    stateDir: setting('state-dir')?.value ?? DEFAULTS.stateDir,
    socketPath,
    tpmLockout: parseLockoutMode(setting('tpm-lockout')),
    attestationCa: parseAttestationCa(setting('attestation-ca')),
    ownerAuthFile: passwordSource(setting('owner-auth-file'), env, OWNER_AUTH_CREDENTIAL),
    endorsementAuthFile: passwordSource(setting('endorsement-auth-file'), env, ENDORSEMENT_AUTH_CREDENTIAL),
    pinLifetime: daemonPinLifetime(setting('pin-lifetime')),
    control: {
      maxConnections: parseWholeNumber(setting('max-control-connections'), 1, 10_000) ?? DEFAULT_CONTROL_LIMITS.maxConnections,
      maxConnectionsPerUser: parseWholeNumber(setting('max-control-connections-per-user'), 1, 10_000) ?? DEFAULT_CONTROL_LIMITS.maxConnectionsPerUser,
      requestTimeoutMs: (parseWholeNumber(setting('control-request-timeout'), 1, 3600) ?? DEFAULT_CONTROL_LIMITS.requestTimeoutMs / 1000) * 1000,
    },
    allowUnprotectedVpcd: parseYesNo(setting('allow-unprotected-vpcd')),
  };
}

function parseWholeNumber(setting: { value: string; source: string } | undefined, min: number, max: number): number | undefined {
  if (setting === undefined) return undefined;
  const value = Number(setting.value);
  if (!/^\d{1,6}$/.test(setting.value) || value < min || value > max) throw usage(`${setting.source} must be a whole number from ${min} to ${max}`);
  return value;
}

/** A switch, or its variable: 1/yes/true or 0/no/false. */
export function parseYesNo(setting: { value: string; source: string } | undefined): boolean {
  if (setting === undefined) return false;
  const value = setting.value.trim().toLowerCase();
  if (value === '1' || value === 'yes' || value === 'true') return true;
  if (value === '0' || value === 'no' || value === 'false') return false;
  throw usage(`${setting.source} must be 1 or 0 (yes or no)`);
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

/** --pin-lifetime 30 | 30,once | unlimited (create /pinlifetime's words, joined by commas). */
function daemonPinLifetime(setting: { value: string; source: string } | undefined): PinLifetime {
  if (setting === undefined) return DEFAULT_PIN_LIFETIME;
  const words = setting.value.split(',').map((word) => word.trim());
  try {
    return parsePinLifetime(words, setting.source);
  } catch {
    throw usage(`${setting.source} must be SECONDS (1 to ${PIN_LIFETIME_MAX_SECONDS}) or unlimited, optionally followed by ,once (e.g. 30 or 30,once)`);
  }
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
