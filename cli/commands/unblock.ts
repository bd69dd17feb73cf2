/**
 * tpmvscmgr unblock /instance <id> /AdminKey {DEFAULT|PROMPT} [/PIN {DEFAULT|PROMPT}]
 *
 * Windows' challenge/response unblock of a card created without a PUK: tpmvscmgr proves
 * the admin key to the card itself (through PC/SC, like a card management system) and
 * sets a new PIN, which also restores the PIN tries. A card with a PUK is refused: its
 * PIN is unblocked with the PUK. The daemon only says which reader holds the card.
 */
import { TpmvscError } from '../../common/errors.js';
import { DEFAULT_PIN, WIDEST_PIN_POLICY, checkPin } from '../../common/pin_rules.js';
import { openPcsc } from '../../common/pcsc_client.js';
import { DEFAULT_ADMIN_KEY_HEX, normaliseAdminKeyHex } from '../admin_key.js';
import { writeLine, type CliIo } from '../cli_io.js';
import { callDaemon, resolveSocketPath } from '../control_client.js';
import type { UnblockCommand } from '../parse_arguments.js';
import { createSecretReader, type SecretReader } from '../prompt.js';
import { authenticateAdmin, resetPinWithAdmin, selectPiv } from '../piv_admin_session.js';
import { requireSocket } from './create.js';

export async function runUnblock(command: UnblockCommand, io: CliIo): Promise<void> {
  const socketPath = resolveSocketPath(command.socketPath, io.env);
  requireSocket(socketPath);
  const status = await callDaemon({ op: 'status', instance: command.instance }, { socketPath, signal: io.signal });
  const card = status.cards[0];
  if (!card) throw new TpmvscError('NOT_FOUND', command.instance);
  if (card.hasPuk) {
    throw new TpmvscError('AUTH_FAILED', `${card.instance} has a PUK: unblock its PIN with the PUK (yubico-piv-tool -a unblock-pin)`);
  }

  let secretReader: SecretReader | undefined;
  const reader = (): SecretReader => (secretReader ??= createSecretReader(io.stdin, io.stderr));
  let adminKey: Buffer;
  let pin: Buffer;
  try {
    const adminKeyHex = command.adminKey === 'DEFAULT' ? DEFAULT_ADMIN_KEY_HEX : normaliseAdminKeyHex(await reader().read('admin key (48 hexadecimal characters)'));
    adminKey = Buffer.from(adminKeyHex, 'hex');
    const pinText = command.pin === 'DEFAULT' ? DEFAULT_PIN : await reader().read('new PIN');
    // The widest rule any card has (4..8 characters); the card then applies its own policy.
    checkPin(pinText, WIDEST_PIN_POLICY, 'new PIN');
    pin = Buffer.from(pinText, 'ascii');
  } finally {
    secretReader?.close();
  }

  const say = (line: string): void => {
    if (!command.quiet) writeLine(io.stderr, line);
  };
  const pcsc = openPcsc();
  try {
    await pcsc.waitForReader(card.reader, 5000);
    await pcsc.waitForCard(card.reader, true, 5000);
    // Exclusive: no other client may use the card while it is authenticated with the admin key.
    const connection = await pcsc.connect(card.reader, { exclusive: true });
    try {
      say('Authenticating to the TPM Smart Card...');
      await selectPiv(connection);
      await authenticateAdmin(connection, adminKey);
      await resetPinWithAdmin(connection, pin);
    } finally {
      // A reset drops the admin authentication before anyone else can use the card.
      await connection.disconnect('reset').catch(() => undefined);
    }
  } catch (error) {
    if (error instanceof TpmvscError) throw error;
    throw new TpmvscError('INTERNAL', `PC/SC: ${(error as Error).message}`, { cause: error });
  } finally {
    adminKey.fill(0);
    pin.fill(0);
    pcsc.close();
  }
  say('PIN unblocked.');
  if (command.json) writeLine(io.stdout, JSON.stringify({ instance: card.instance, unblocked: true }));
  else writeLine(io.stdout, card.instance);
}
