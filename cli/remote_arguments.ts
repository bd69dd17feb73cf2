/**
 * What the target's tpmvscmgr is asked to do for /machine: the command rebuilt from the parsed
 * command (never the admin's raw argv), without /machine, with PROMPT kept as PROMPT. The
 * secrets themselves travel on the ssh channel's stdin, one line each (secretLines), so no
 * PIN, PUK or admin key ever appears in a command line on either computer.
 */
import { DEFAULT_PIN_POLICY, type PinPolicy } from '../common/control_protocol.js';
import { checkPin, checkPuk } from '../common/pin_rules.js';
import { pinLifetimeWords } from '../common/pin_lifetime.js';
import { normaliseAdminKeyHex } from './admin_key.js';
import type { CommonOptions, CreateCommand, DestroyCommand, ListCommand, StatusCommand, UnblockCommand } from './parse_arguments.js';
import type { SecretReader } from './prompt.js';

/** The commands that accept /machine. */
export type MachineCommand = CreateCommand | DestroyCommand | ListCommand | StatusCommand | UnblockCommand;

function pinPolicyOptions(policy: PinPolicy): string[] {
  return [
    'minlen', String(policy.minLength),
    'maxlen', String(policy.maxLength),
    'uppercase', policy.uppercase,
    'lowercase', policy.lowercase,
    'digits', policy.digits,
    'specialchars', policy.specialChars,
  ];
}

function commonOptions(command: CommonOptions & { quiet?: boolean }): string[] {
  const words: string[] = [];
  if (command.quiet === true) words.push('/quiet');
  if (command.json) words.push('/json');
  // /socket with /machine names the socket on the target.
  if (command.socketPath !== undefined) words.push('/socket', command.socketPath);
  return words;
}

/** The target tpmvscmgr's argv for this command (secrets stay PROMPT). */
export function remoteArguments(command: MachineCommand): string[] {
  switch (command.command) {
    case 'create': {
      const words = ['create', '/name', command.name, '/AdminKey', command.adminKey, '/PIN', command.pin];
      if (command.puk !== null) words.push('/PUK', command.puk);
      if (command.generate) words.push('/generate');
      if (command.pinPolicy !== null) words.push('/pinpolicy', ...pinPolicyOptions(command.pinPolicy));
      if (command.pinLifetime !== null) words.push('/pinlifetime', ...pinLifetimeWords(command.pinLifetime));
      if (command.attestation !== null) words.push('/attestation', command.attestation);
      return [...words, ...commonOptions(command)];
    }
    case 'destroy':
      return ['destroy', '/instance', command.instance, ...commonOptions(command)];
    case 'list':
      return ['list', ...commonOptions(command)];
    case 'status':
      return ['status', ...(command.instance === null ? [] : ['/instance', command.instance]), ...commonOptions(command)];
    case 'unblock':
      return ['unblock', '/instance', command.instance, '/AdminKey', command.adminKey, '/PIN', command.pin, ...commonOptions(command)];
  }
}

/**
 * Asks the admin, here, for the PROMPT secrets, in the order the target's tpmvscmgr reads them
 * (admin key, PIN, PUK), and checks them as a local run would before anything is sent.
 * Returns one line per secret (no newline inside: prompts and line reading never keep one).
 */
export async function secretLines(command: MachineCommand, reader: () => SecretReader): Promise<string[]> {
  const lines: string[] = [];
  if (command.command === 'create') {
    if (command.adminKey === 'PROMPT') lines.push(normaliseAdminKeyHex(await reader().read('admin key (48 hexadecimal characters)')));
    if (command.pin === 'PROMPT') {
      const pin = await reader().read('PIN');
      checkPin(pin, command.pinPolicy ?? DEFAULT_PIN_POLICY);
      lines.push(pin);
    }
    if (command.puk === 'PROMPT') {
      const puk = await reader().read('PUK');
      checkPuk(puk);
      lines.push(puk);
    }
  } else if (command.command === 'unblock') {
    if (command.adminKey === 'PROMPT') lines.push(normaliseAdminKeyHex(await reader().read('admin key (48 hexadecimal characters)')));
    // The target checks the new PIN against the card's rules.
    if (command.pin === 'PROMPT') lines.push(await reader().read('new PIN'));
  }
  return lines;
}
