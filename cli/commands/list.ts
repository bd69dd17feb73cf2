/**
 * tpmvscmgr list: one line per card (or, with /json, {"cards": [...]}).
 */
import type { CardSummary } from '../../common/control_protocol.js';
import { writeLine, type CliIo } from '../cli_io.js';
import { callDaemon, resolveSocketPath } from '../control_client.js';
import type { ListCommand } from '../parse_arguments.js';

/** Left-aligned columns separated by two spaces. */
export function formatTable(rows: readonly (readonly string[])[]): string[] {
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((row) => row[column]!.length)));
  return rows.map((row) => row.map((cell, column) => cell.padEnd(widths[column]!)).join('  ').trimEnd());
}

export function formatCards(cards: readonly CardSummary[]): string[] {
  if (cards.length === 0) return ['No virtual smart cards.'];
  return formatTable([
    ['INSTANCE', 'NAME', 'READER', 'PUK', 'CREATED'],
    ...cards.map((card) => [card.instance, card.name, card.reader, card.hasPuk ? 'yes' : 'no', card.createdAt]),
  ]);
}

export async function runList(command: ListCommand, io: CliIo): Promise<void> {
  const cards = await callDaemon({ op: 'list' }, { socketPath: resolveSocketPath(command.socketPath, io.env), signal: io.signal });
  if (command.json) return writeLine(io.stdout, JSON.stringify({ cards }));
  for (const line of formatCards(cards)) writeLine(io.stdout, line);
}
