/**
 * tpmvscmgr status [/instance <id>]: the daemon and its cards (or one card).
 */
import type { CardStatus, DaemonStatus, ReaderLinkStatus } from '../../common/control_protocol.js';
import { describePinLifetime } from '../../common/pin_lifetime.js';
import { writeLine, type CliIo } from '../cli_io.js';
import { callDaemon, resolveSocketPath } from '../control_client.js';
import type { StatusCommand } from '../parse_arguments.js';

/** The card's place in its reader, in words (daemon/vpcd_link.ts). */
function linkWords(link: ReaderLinkStatus): string {
  const since = `since ${link.since}`;
  switch (link.state) {
    case 'present':
      return 'in the reader';
    case 'unserved':
      return `${link.problem ?? 'connected, not served by vpcd'}, ${since}`;
    case 'connecting':
      return `not in the reader, ${since}: ${link.problem ?? 'connecting to vpcd'}`;
    default:
      return 'taken out';
  }
}

function formatCard(card: CardStatus): string[] {
  const keys = card.keys.length === 0 ? 'none' : card.keys.map((key) => `${key.slot} ${key.algorithm} (${key.origin})`).join(', ');
  return [
    `${card.instance}  "${card.name}"`,
    `  reader:      ${card.reader} (${linkWords(card.link)})`,
    `  serial:      ${card.serial}${card.guid ? `, GUID ${card.guid}` : ''}`,
    `  PIN tries:   ${card.pinTriesRemaining} of ${card.pinTriesTotal} left`,
    `  PUK:         ${card.hasPuk ? `${card.pukTriesRemaining ?? '?'} tries left` : 'none (unblock with the admin key)'}`,
    `  PIN lasts:   ${describePinLifetime(card.pinLifetime)} (${card.pinLifetime.source})`,
    `  keys:        ${keys}`,
    `  created:     ${card.createdAt}`,
  ];
}

const count = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`;

/** The report; `oneCard`: status /instance, whose card list holds that card only (no card count then). */
export function formatStatus(status: DaemonStatus, oneCard = false): string[] {
  const cards = oneCard ? '' : `, ${count(status.cards.length, 'card')}`;
  const lines = [`tpmvscd ${status.version}: TPM ${status.tcti}, ${count(status.readers, 'reader')}${cards}`];
  for (const card of status.cards) lines.push(...formatCard(card));
  return lines;
}

export async function runStatus(command: StatusCommand, io: CliIo): Promise<void> {
  const request = command.instance === null ? { op: 'status' as const } : { op: 'status' as const, instance: command.instance };
  const status = await callDaemon(request, { socketPath: resolveSocketPath(command.socketPath, io.env), signal: io.signal });
  if (command.json) return writeLine(io.stdout, JSON.stringify(status));
  for (const line of formatStatus(status, command.instance !== null)) writeLine(io.stdout, line);
}
