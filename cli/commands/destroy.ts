/**
 * tpmvscmgr destroy /instance <id>: deletes a card for good.
 */
import { writeLine, type CliIo } from '../cli_io.js';
import { callDaemon, resolveSocketPath } from '../control_client.js';
import type { DestroyCommand } from '../parse_arguments.js';

export async function runDestroy(command: DestroyCommand, io: CliIo): Promise<void> {
  const socketPath = resolveSocketPath(command.socketPath, io.env);
  const result = await callDaemon({ op: 'destroy', instance: command.instance }, { socketPath, signal: io.signal });
  if (!command.quiet) writeLine(io.stderr, 'TPM Smart Card destroyed.');
  if (command.json) writeLine(io.stdout, JSON.stringify({ instance: result.instance, destroyed: true }));
}
