/**
 * tpmvscmgr create: checks everything locally (syntax, unsupported switches, PIN rules), asks for
 * the PROMPT secrets (admin key, PIN, PUK, in that order), then sends one create request and
 * streams the daemon's progress lines to stderr. stdout ends with the instance ID.
 * Warnings (a well-known secret) are one line each on stderr,
 * silenced by /quiet like the progress lines, and always in the `warnings` array of --json.
 */
import { statSync } from 'node:fs';
import { DEFAULT_PIN_POLICY, type CreateRequest, type CreateResult } from '../../common/control_protocol.js';
import { TpmvscError } from '../../common/errors.js';
import { checkPin, checkPuk, DEFAULT_PIN, DEFAULT_PUK } from '../../common/pin_rules.js';
import { DEFAULT_ADMIN_KEY_HEX, normaliseAdminKeyHex, randomAdminKeyHex } from '../admin_key.js';
import { writeLine, type CliIo } from '../cli_io.js';
import { callDaemon, resolveSocketPath } from '../control_client.js';
import { daemonNotRunning } from '../daemon_not_running.js';
import type { CreateCommand } from '../parse_arguments.js';
import { createSecretReader, type SecretReader } from '../prompt.js';
import { wellKnownSecretWarnings } from '../well_known_secret_warnings.js';

/** The daemon must be there before anyone types a secret for nothing. */
export function requireSocket(socketPath: string): void {
  try {
    statSync(socketPath);
  } catch (error) {
    // A socket in a directory the caller may not enter (/run/tpmvsc is 0750 root:tpmvsc) is
    // "not permitted", not "not running".
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EACCES' || code === 'EPERM') throw new TpmvscError('NOT_PERMITTED', `cannot open ${socketPath}`);
    throw daemonNotRunning(socketPath);
  }
}

async function buildRequest(command: CreateCommand, reader: () => SecretReader): Promise<CreateRequest> {
  const adminKeyHex =
    command.adminKey === 'DEFAULT'
      ? DEFAULT_ADMIN_KEY_HEX
      : command.adminKey === 'RANDOM'
        ? randomAdminKeyHex()
        : normaliseAdminKeyHex(await reader().read('admin key (48 hexadecimal characters)'));

  const pinPolicy = command.pinPolicy ?? DEFAULT_PIN_POLICY;
  let pin = DEFAULT_PIN;
  if (command.pin === 'PROMPT') {
    pin = await reader().read('PIN');
    checkPin(pin, pinPolicy);
  }
  let puk: string | null = null;
  if (command.puk === 'DEFAULT') puk = DEFAULT_PUK;
  if (command.puk === 'PROMPT') {
    puk = await reader().read('PUK');
    checkPuk(puk);
  }
  return {
    op: 'create',
    name: command.name,
    adminKeyHex,
    adminKeyRandom: command.adminKey === 'RANDOM',
    pin,
    puk,
    pinPolicy,
    pinLifetime: command.pinLifetime,
    generate: command.generate,
    attestation: command.attestation,
  };
}

export async function runCreate(command: CreateCommand, io: CliIo): Promise<CreateResult> {
  const socketPath = resolveSocketPath(command.socketPath, io.env);
  requireSocket(socketPath);
  const say = (line: string): void => {
    if (!command.quiet) writeLine(io.stderr, line);
  };
  let secretReader: SecretReader | undefined;
  const reader = (): SecretReader => (secretReader ??= createSecretReader(io.stdin, io.stderr));
  let request: CreateRequest;
  try {
    request = await buildRequest(command, reader);
  } finally {
    secretReader?.close();
  }
  const result = await callDaemon(request, { socketPath, signal: io.signal, onProgress: say });
  // About the card that now exists, so only once it does (a refused create stays one line).
  // Warnings share /quiet with the progress lines; --json always carries them.
  const secretWarnings = wellKnownSecretWarnings(command);
  for (const line of secretWarnings) say(line);
  if (command.json) writeLine(io.stdout, JSON.stringify({ ...result, warnings: secretWarnings }));
  else writeLine(io.stdout, result.instance);
  return result;
}
