/**
 * Parses tpmvscmgr's command line, with the syntax of Windows' tpmvscmgr.exe:
 *
 *   create [/quiet] /name <name> /AdminKey {DEFAULT|PROMPT|RANDOM} [/PIN {DEFAULT|PROMPT}]
 *          [/PUK {DEFAULT|PROMPT}] [/generate] [/machine <machine name>] [/pinpolicy [policy options]]
 *          [/attestation {AIK_AND_CERT|AIK_ONLY}] [/?]
 *          [/pinlifetime {<seconds>|UNLIMITED} [ONCE]]                                (beyond Windows)
 *   destroy [/quiet] [/instance <device instance ID>] [/machine <machine name>] [/?]
 *   list [/machine <name>] | status [/instance <id>] [/machine <name>]      (beyond Windows)
 *   unblock /instance <id> /AdminKey {DEFAULT|PROMPT} [/PIN {DEFAULT|PROMPT}] [/machine <name>]   (beyond Windows)
 *
 * Switches are case-insensitive and may be written /switch or --switch; /json and /socket <path>
 * (--json, --socket) are accepted by every command. Keywords (DEFAULT, minlen...) are case-insensitive.
 * Nothing here reads a secret: PROMPT only records that one must be asked for.
 * Every failure is a TpmvscError('USAGE') whose detail names the fix.
 */
import { DEFAULT_PIN_POLICY, parseInstanceId, instanceId, type PinPolicy, type TriState } from '../common/control_protocol.js';
import { TpmvscError } from '../common/errors.js';
import { checkPinPolicy, isTriState, PIV_CLIENT_SET_MIN_LENGTH, PIV_SECRET_MAX_LENGTH, POLICY_MIN_LENGTH_BOUND } from '../common/pin_rules.js';
import { parsePinLifetime, type PinLifetime } from '../common/pin_lifetime.js';

export type AdminKeyMode = 'DEFAULT' | 'PROMPT' | 'RANDOM';
export type SecretMode = 'DEFAULT' | 'PROMPT';
export type AttestationMode = 'AIK_AND_CERT' | 'AIK_ONLY';
export type CommandName = 'create' | 'destroy' | 'list' | 'status' | 'unblock';

/** Options every command accepts. */
export interface CommonOptions {
  /** --json: stdout is one JSON object. */
  json: boolean;
  /** --socket: the daemon's control socket; undefined = TPMVSC_SOCKET or the default. */
  socketPath: string | undefined;
}

export interface HelpCommand {
  command: 'help';
  /** The command whose help was asked for, or undefined for the overview. */
  topic: CommandName | undefined;
}

export interface CreateCommand extends CommonOptions {
  command: 'create';
  quiet: boolean;
  name: string;
  adminKey: AdminKeyMode;
  pin: SecretMode;
  /** null: the card has no PUK (the switch was omitted). */
  puk: SecretMode | null;
  generate: boolean;
  /** /pinpolicy given (only with /PIN PROMPT); null = Windows' default rules (8..127). */
  pinPolicy: PinPolicy | null;
  /** /pinlifetime given; null = the daemon's default (tpmvscd --pin-lifetime). */
  pinLifetime: PinLifetime | null;
  machine: string | null;
  attestation: AttestationMode | null;
}

export interface DestroyCommand extends CommonOptions {
  command: 'destroy';
  quiet: boolean;
  /** Canonical instance ID, ROOT\SMARTCARDREADER\000n. */
  instance: string;
  machine: string | null;
}

export interface ListCommand extends CommonOptions {
  command: 'list';
  machine: string | null;
}

export interface StatusCommand extends CommonOptions {
  command: 'status';
  instance: string | null;
  machine: string | null;
}

/** Admin-key unblock of a card without PUK (Windows' challenge/response). */
export interface UnblockCommand extends CommonOptions {
  command: 'unblock';
  quiet: boolean;
  instance: string;
  adminKey: SecretMode;
  /** The new PIN. */
  pin: SecretMode;
  machine: string | null;
}

export type CliCommand = HelpCommand | CreateCommand | DestroyCommand | ListCommand | StatusCommand | UnblockCommand;

const COMMANDS: readonly CommandName[] = ['create', 'destroy', 'list', 'status', 'unblock'];
/** The local command that parses its own arguments (cli/commands/verify_attestation.ts). */
export const VERIFY_ATTESTATION = 'verify-attestation';
const HELP_TOKENS = new Set(['/?', '-?', '-h', '--help', '/help', '/h']);

/** Switches and whether they take a value; /pinpolicy takes a list and is handled apart. */
const SWITCHES_BY_COMMAND: Record<CommandName, Record<string, 'flag' | 'value' | 'policy'>> = {
  create: {
    quiet: 'flag',
    name: 'value',
    adminkey: 'value',
    pin: 'value',
    puk: 'value',
    generate: 'flag',
    machine: 'value',
    pinpolicy: 'policy',
    pinlifetime: 'policy',
    attestation: 'value',
    json: 'flag',
    socket: 'value',
  },
  destroy: { quiet: 'flag', instance: 'value', machine: 'value', json: 'flag', socket: 'value' },
  list: { machine: 'value', json: 'flag', socket: 'value' },
  status: { instance: 'value', machine: 'value', json: 'flag', socket: 'value' },
  unblock: { quiet: 'flag', instance: 'value', adminkey: 'value', pin: 'value', machine: 'value', json: 'flag', socket: 'value' },
};

/** How a switch is spelled in messages (Windows' spelling). */
const DISPLAY_NAME: Record<string, string> = {
  adminkey: '/AdminKey',
  pin: '/PIN',
  puk: '/PUK',
};

function display(switchName: string): string {
  return DISPLAY_NAME[switchName] ?? `/${switchName}`;
}

const NAME_MAX_LENGTH = 64;
const PRINTABLE = /^[\x20-\x7e]+$/;

function usage(detail: string): TpmvscError {
  return new TpmvscError('USAGE', detail);
}

/** The switch name of a token (`/Name`, `--name` -> `name`), or undefined when it is a plain word. */
function switchName(token: string): string | undefined {
  if (token.startsWith('--') && token.length > 2) return token.slice(2).toLowerCase();
  if (token.startsWith('/') && token.length > 1 && !token.slice(1).includes('/')) return token.slice(1).toLowerCase();
  return undefined;
}

function isKnownSwitch(token: string, command: CommandName): boolean {
  const name = switchName(token);
  return name !== undefined && Object.hasOwn(SWITCHES_BY_COMMAND[command], name);
}

/** Raw switches of one command line: name -> value (true for flags, a string list for /pinpolicy). */
type RawSwitches = Map<string, string | true | string[]>;

function collectSwitches(command: CommandName, tokens: readonly string[]): RawSwitches {
  const allowed = SWITCHES_BY_COMMAND[command];
  const switches: RawSwitches = new Map();
  let index = 0;
  while (index < tokens.length) {
    const token = tokens[index]!;
    const name = switchName(token);
    if (name === undefined) {
      throw usage(`unexpected argument "${printable(token)}" for ${command} (switches start with / or --; see tpmvscmgr ${command} /?)`);
    }
    const kind = allowed[name];
    if (kind === undefined) {
      throw usage(`unknown switch ${printable(token)} for ${command} (see tpmvscmgr ${command} /?)`);
    }
    if (switches.has(name)) throw usage(`${display(name)} is given more than once`);
    index += 1;
    if (kind === 'flag') {
      switches.set(name, true);
    } else if (kind === 'value') {
      const value = tokens[index];
      if (value === undefined || isKnownSwitch(value, command)) throw usage(`${display(name)} needs a value`);
      switches.set(name, value);
      index += 1;
    } else {
      const options: string[] = [];
      while (index < tokens.length && switchName(tokens[index]!) === undefined) {
        options.push(tokens[index]!);
        index += 1;
      }
      switches.set(name, options);
    }
  }
  return switches;
}

/** Shows a token from the command line in an error without control characters. */
function printable(token: string): string {
  return token.replace(/[^\x20-\x7e]/g, '?').slice(0, 80);
}

function stringSwitch(switches: RawSwitches, name: string): string | undefined {
  const value = switches.get(name);
  return typeof value === 'string' ? value : undefined;
}

function keyword<T extends string>(switches: RawSwitches, name: string, choices: readonly T[]): T | undefined {
  const value = stringSwitch(switches, name);
  if (value === undefined) return undefined;
  const match = choices.find((choice) => choice === value.toUpperCase());
  if (match === undefined) throw usage(`${display(name)} must be ${listChoices(choices)}`);
  return match;
}

function listChoices(choices: readonly string[]): string {
  return choices.length === 2 ? `${choices[0]} or ${choices[1]}` : `${choices.slice(0, -1).join(', ')} or ${choices.at(-1)}`;
}

function parseInstance(text: string): string {
  const slot = parseInstanceId(text);
  if (slot === undefined) {
    throw usage(`/instance must be an instance ID like ROOT\\SMARTCARDREADER\\0000 (0000 to 0015), as printed by create`);
  }
  return instanceId(slot);
}

const POLICY_KEYS = ['minlen', 'maxlen', 'uppercase', 'lowercase', 'digits', 'specialchars'] as const;
type PolicyKey = (typeof POLICY_KEYS)[number];

/** /pinpolicy [minlen N] [maxlen N] [uppercase|lowercase|digits|specialchars ALLOWED|DISALLOWED|REQUIRED]... */
export function parsePinPolicy(options: readonly string[]): PinPolicy {
  const policy: PinPolicy = { ...DEFAULT_PIN_POLICY };
  const seen = new Set<PolicyKey>();
  for (let index = 0; index < options.length; index += 2) {
    const rawKey = options[index]!.toLowerCase();
    const key = POLICY_KEYS.find((k) => k === rawKey);
    if (key === undefined) {
      throw usage(`unknown /pinpolicy option "${printable(options[index]!)}" (use ${POLICY_KEYS.join(', ')})`);
    }
    if (seen.has(key)) throw usage(`/pinpolicy ${key} is given more than once`);
    seen.add(key);
    const value = options[index + 1];
    if (value === undefined) throw usage(`/pinpolicy ${key} needs a value`);
    if (key === 'minlen' || key === 'maxlen') {
      const lowest = key === 'minlen' ? POLICY_MIN_LENGTH_BOUND : PIV_CLIENT_SET_MIN_LENGTH;
      if (!/^\d{1,3}$/.test(value)) throw usage(`/pinpolicy ${key} needs a number from ${lowest} to ${PIV_SECRET_MAX_LENGTH}`);
      if (key === 'minlen') policy.minLength = Number(value);
      else policy.maxLength = Number(value);
    } else {
      const state = value.toUpperCase();
      if (!isTriState(state)) throw usage(`/pinpolicy ${key} must be ALLOWED, DISALLOWED or REQUIRED`);
      const field: Record<typeof key, keyof Pick<PinPolicy, 'uppercase' | 'lowercase' | 'digits' | 'specialChars'>> = {
        uppercase: 'uppercase',
        lowercase: 'lowercase',
        digits: 'digits',
        specialchars: 'specialChars',
      };
      policy[field[key]] = state satisfies TriState;
    }
  }
  checkPinPolicy(policy);
  return policy;
}

function common(switches: RawSwitches): CommonOptions {
  const socketPath = stringSwitch(switches, 'socket');
  if (socketPath !== undefined && socketPath.length === 0) throw usage('/socket needs a path');
  return { json: switches.get('json') === true, socketPath };
}

function parseCreate(switches: RawSwitches): CreateCommand {
  const name = stringSwitch(switches, 'name');
  if (name === undefined) throw usage('create needs /name <name> (the card\'s friendly name)');
  if (name.length > NAME_MAX_LENGTH || !PRINTABLE.test(name)) {
    throw usage(`/name must be 1 to ${NAME_MAX_LENGTH} printable ASCII characters`);
  }
  const adminKey = keyword(switches, 'adminkey', ['DEFAULT', 'PROMPT', 'RANDOM'] as const);
  if (adminKey === undefined) throw usage('create needs /AdminKey DEFAULT, PROMPT or RANDOM');
  const pin = keyword(switches, 'pin', ['DEFAULT', 'PROMPT'] as const) ?? 'DEFAULT';
  const puk = keyword(switches, 'puk', ['DEFAULT', 'PROMPT'] as const) ?? null;
  const attestation = keyword(switches, 'attestation', ['AIK_AND_CERT', 'AIK_ONLY'] as const) ?? null;
  const policyOptions = switches.get('pinpolicy');
  let pinPolicy: PinPolicy | null = null;
  if (Array.isArray(policyOptions)) {
    if (pin !== 'PROMPT') throw usage('/pinpolicy is only valid with /PIN PROMPT');
    pinPolicy = parsePinPolicy(policyOptions);
  }
  const lifetimeWords = switches.get('pinlifetime');
  const pinLifetime = Array.isArray(lifetimeWords) ? parsePinLifetime(lifetimeWords, '/pinlifetime') : null;
  return {
    command: 'create',
    ...common(switches),
    quiet: switches.get('quiet') === true,
    name,
    adminKey,
    pin,
    puk,
    generate: switches.get('generate') === true,
    pinPolicy,
    pinLifetime,
    machine: stringSwitch(switches, 'machine') ?? null,
    attestation,
  };
}

function parseDestroy(switches: RawSwitches): DestroyCommand {
  const instance = stringSwitch(switches, 'instance');
  if (instance === undefined) throw usage('destroy needs /instance <device instance ID> (as printed by create, e.g. ROOT\\SMARTCARDREADER\\0000)');
  return {
    command: 'destroy',
    ...common(switches),
    quiet: switches.get('quiet') === true,
    instance: parseInstance(instance),
    machine: stringSwitch(switches, 'machine') ?? null,
  };
}

function parseUnblock(switches: RawSwitches): UnblockCommand {
  const instance = stringSwitch(switches, 'instance');
  if (instance === undefined) throw usage('unblock needs /instance <device instance ID> (e.g. ROOT\\SMARTCARDREADER\\0000)');
  const adminKey = keyword(switches, 'adminkey', ['DEFAULT', 'PROMPT'] as const);
  if (adminKey === undefined) throw usage('unblock needs /AdminKey DEFAULT or PROMPT');
  return {
    command: 'unblock',
    ...common(switches),
    quiet: switches.get('quiet') === true,
    instance: parseInstance(instance),
    adminKey,
    pin: keyword(switches, 'pin', ['DEFAULT', 'PROMPT'] as const) ?? 'DEFAULT',
    machine: stringSwitch(switches, 'machine') ?? null,
  };
}

/** Parses argv (without node and the script). Throws TpmvscError('USAGE') naming the fix. */
export function parseArguments(argv: readonly string[]): CliCommand {
  const [first, ...rest] = argv;
  if (first === undefined) {
    throw usage('missing command: create, destroy, list, status, unblock or verify-attestation (see tpmvscmgr /?)');
  }
  if (HELP_TOKENS.has(first.toLowerCase())) return { command: 'help', topic: undefined };
  const command = COMMANDS.find((c) => c === first.toLowerCase());
  if (command === undefined) {
    throw usage(`unknown command "${printable(first)}": use create, destroy, list, status, unblock or verify-attestation (see tpmvscmgr /?)`);
  }
  if (rest.some((token) => HELP_TOKENS.has(token.toLowerCase()))) return { command: 'help', topic: command };
  const switches = collectSwitches(command, rest);
  switch (command) {
    case 'create':
      return parseCreate(switches);
    case 'destroy':
      return parseDestroy(switches);
    case 'list':
      return { command: 'list', ...common(switches), machine: stringSwitch(switches, 'machine') ?? null };
    case 'status': {
      const instance = stringSwitch(switches, 'instance');
      return {
        command: 'status',
        ...common(switches),
        instance: instance === undefined ? null : parseInstance(instance),
        machine: stringSwitch(switches, 'machine') ?? null,
      };
    }
    case 'unblock':
      return parseUnblock(switches);
  }
}
