/** Small precondition checks shared by the instruction handlers. */
import type { CommandApdu } from '../apdu.js';
import { CardError, SW } from '../status_words.js';
import type { InstructionContext } from './instruction.js';

export function requireP1P2(apdu: CommandApdu, p1: number, p2: number): void {
  if (apdu.p1 !== p1 || apdu.p2 !== p2) throw new CardError(SW.INCORRECT_P1P2);
}

export function requireNoData(apdu: CommandApdu): void {
  if (apdu.data.length !== 0) throw new CardError(SW.WRONG_LENGTH, 'this command takes no data');
}

/** Management-key (9B) authentication is needed: 6982 without it. */
export function requireAdmin(context: InstructionContext): void {
  if (!context.session.adminAuthenticated) {
    throw new CardError(SW.SECURITY_STATUS_NOT_SATISFIED, 'management key authentication required');
  }
}

/** A verified PIN is needed: 6982 without it. */
export function requirePin(context: InstructionContext): void {
  if (!context.vault.unlocked) throw new CardError(SW.SECURITY_STATUS_NOT_SATISFIED, 'PIN verification required');
}
