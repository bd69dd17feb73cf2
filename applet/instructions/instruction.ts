/**
 * What an instruction handler sees and what it declares. One handler per INS,
 * one file each in this folder; piv_applet.ts dispatches on INS and does the
 * framing (chaining, Le), the state transaction and the save.
 */
import type { CommandApdu } from '../apdu.js';
import type { CardSession } from '../card_session.js';
import type { KeyAttestor } from '../key_attestor.js';
import type { KeyVault } from '../key_vault.js';
import type { PivCardState } from '../piv_state.js';

export interface InstructionContext {
  /** The whole command (chained parts joined). */
  readonly apdu: CommandApdu;
  /** The card state as last saved. Never mutate it: use edit(). */
  readonly state: Readonly<PivCardState>;
  /** A draft of the state to change; saved (with vault.state()) only if the handler succeeds. */
  edit(): PivCardState;
  readonly vault: KeyVault;
  readonly session: CardSession;
  readonly attestor: KeyAttestor | undefined;
  /** Runs once the new state is durable (e.g. forget a replaced key in the vault). */
  afterCommit(action: () => Promise<void>): void;
  /** Runs when the command fails after this point, save failure included (undo vault changes). */
  onRollback(action: () => Promise<void>): void;
}

export interface Instruction {
  ins: number;
  name: string;
  /** No side effects: the host may be told 6Cxx and resend. */
  readOnly: boolean;
  /** May arrive in parts with CLA 0x10. */
  chainable: boolean;
  /** Returns the response data (none for a bare 9000); failures throw CardError. */
  handle(context: InstructionContext): Promise<Uint8Array | void>;
}
