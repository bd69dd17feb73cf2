/**
 * The PIV card application: command APDUs in, response APDUs out, no I/O of its own.
 *
 * Per command: parse (apdu.ts) -> CLA check -> GET RESPONSE or command chaining
 * (chaining.ts) -> dispatch on INS to one handler (instructions/) -> save the new
 * state through the CardStore BEFORE answering success -> fit the answer to Le
 * (the first Ne bytes with 61xx, the rest through GET RESPONSE: OpenSC reads the
 * first 8 bytes of a data object to learn its length and cannot re-send on a 6Cxx
 * asking for more than its buffer). A handler's failure drops its draft state and undoes its vault
 * changes; a failed save answers 6581 and does the same, so the stored and the
 * in-memory state are always the state before or after a command.
 *
 * Diagnostics, on the node:diagnostics_channel channel 'tpmvsc:applet' (APPLET_CHANNEL),
 * never carrying secrets: unexpected errors (not status words) as { event, instruction,
 * error }; refusals an administrator should hear of (CardError with `audit`, e.g. RESET
 * without the management key) as { event: 'refused', serial, instruction, reason }.
 */
import { channel } from 'node:diagnostics_channel';
import type { SmartCard } from '../common/smart_card.js';
import { TpmvscError } from '../common/errors.js';
import { parseCommandApdu, responseApdu, type CommandApdu } from './apdu.js';
import type { CardStore } from './card_store.js';
import { CardSession } from './card_session.js';
import { CLA_CHAIN_BIT, CommandChain, ResponseChain } from './chaining.js';
import { attest } from './instructions/attest.js';
import { changeReferenceData } from './instructions/change_reference_data.js';
import { generalAuthenticate } from './instructions/general_authenticate.js';
import { generateKeyPair } from './instructions/generate_key_pair.js';
import { getData } from './instructions/get_data.js';
import { getMetadata } from './instructions/get_metadata.js';
import { getSerial } from './instructions/get_serial.js';
import { getVersion } from './instructions/get_version.js';
import { importKey } from './instructions/import_key.js';
import type { Instruction, InstructionContext } from './instructions/instruction.js';
import { putData } from './instructions/put_data.js';
import { reset } from './instructions/reset.js';
import { resetRetryCounter } from './instructions/reset_retry_counter.js';
import { select } from './instructions/select.js';
import { setManagementKey } from './instructions/set_management_key.js';
import { setPinRetries } from './instructions/set_pin_retries.js';
import { verify } from './instructions/verify.js';
import type { KeyAttestor } from './key_attestor.js';
import type { KeyVault } from './key_vault.js';
import { cloneState, type PivCardState } from './piv_state.js';
import { sealClearObjects } from './sealed_objects.js';
import { CardError, SW, type StatusWord } from './status_words.js';

/** The dispatch table: one handler per INS. */
export const INSTRUCTIONS: ReadonlyMap<number, Instruction> = new Map(
  [
    select,
    getData,
    putData,
    verify,
    changeReferenceData,
    resetRetryCounter,
    generalAuthenticate,
    generateKeyPair,
    getVersion,
    getSerial,
    setManagementKey,
    reset,
    setPinRetries,
    importKey,
    getMetadata,
    attest,
  ].map((instruction) => [instruction.ins, instruction]),
);

const INS_GET_RESPONSE = 0xc0;
/** CLA bits for secure messaging (ISO 7816-4 §5.4.1). */
const CLA_SECURE_MESSAGING = 0x0c;

/**
 * ATR for a contact card offering T=1 (yubico-piv-tool connects T=1 only):
 *   3B        TS direct convention
 *   8A        T0: TD1 follows, 10 historical bytes
 *   81        TD1: TD2 follows, protocol T=1
 *   31        TD2: TA3 and TB3 follow, protocol T=1
 *   FE        TA3: IFSC 254
 *   45        TB3: BWI 4, CWI 5
 *   "VirtualPIV"  historical bytes
 *   TCK       XOR of T0..last historical byte
 */
export function defaultAtr(): Uint8Array {
  const body = [0x8a, 0x81, 0x31, 0xfe, 0x45, ...new TextEncoder().encode('VirtualPIV')];
  const tck = body.reduce((x, byte) => x ^ byte, 0);
  return Uint8Array.of(0x3b, ...body, tck);
}

export interface PivAppletOptions {
  /** The card's state as loaded (or as provisionCard made it). */
  state: PivCardState;
  /** The card's vault, already opened on `state.vault`. */
  vault: KeyVault;
  store: CardStore<PivCardState>;
  /** Key attestation; without it ATTEST answers 6A81. */
  attestor?: KeyAttestor;
  atr?: Uint8Array;
}

/** The diagnostics channel of every card application (see the header). */
export const APPLET_CHANNEL = 'tpmvsc:applet';

/** What the card publishes when it refuses a command with an audited CardError. */
export interface AppletRefusal {
  event: 'refused';
  /** GET SERIAL of the card: tells cards apart in logs. */
  serial: number;
  instruction: string;
  reason: string;
}

const diagnostics = channel(APPLET_CHANNEL);

export class PivApplet implements SmartCard {
  readonly atr: Uint8Array;
  private committed: PivCardState;
  /** vault.revision() when committed.vault was last known to equal vault.state(); NaN: not known. */
  private savedVaultRevision: number;
  private readonly vault: KeyVault;
  private readonly store: CardStore<PivCardState>;
  private readonly attestor: KeyAttestor | undefined;
  private readonly session = new CardSession();
  private readonly commandChain = new CommandChain();
  private readonly responseChain = new ResponseChain();
  /** Bumped by every power event; a command that straddles one must not leave authentication behind. */
  private epoch = 0;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(options: PivAppletOptions) {
    this.committed = cloneState(options.state);
    this.vault = options.vault;
    this.store = options.store;
    this.attestor = options.attestor;
    this.atr = options.atr ?? defaultAtr();
    // Once here, not per command: if opening the vault already moved its state, the first
    // change-capable command saves it (NaN never equals a revision).
    const inStep = JSON.stringify(this.committed.vault ?? null) === JSON.stringify(this.vault.state() ?? null);
    this.savedVaultRevision = inStep ? this.vault.revision() : Number.NaN;
  }

  /** The state as last saved (read-only view for status reports). */
  get state(): Readonly<PivCardState> {
    return this.committed;
  }

  powerOn(): void {
    this.loseAuthentication();
  }

  powerOff(): void {
    this.loseAuthentication();
  }

  reset(): void {
    this.loseAuthentication();
  }

  transmit(command: Uint8Array): Promise<Uint8Array> {
    // One command at a time even if a caller does not wait.
    const run = this.queue.then(() => this.process(command));
    this.queue = run.catch(() => undefined);
    return run.catch((error: unknown) => {
      this.report('transmit-failure', undefined, error);
      return responseApdu(SW.NO_PRECISE_DIAGNOSIS);
    });
  }

  /**
   * Seals the PIN-protected data objects that a card file written before sealing existed holds
   * in clear (sealed_objects.ts), and saves. Call once, right after construction: it waits for
   * commands already queued. Returns how many it sealed; a failed save leaves the file as it was
   * (the objects stay readable, and the next call seals them).
   */
  sealClearObjects(): Promise<number> {
    const run = this.queue.then(async () => {
      const draft = cloneState(this.committed);
      const sealed = await sealClearObjects(draft, this.vault);
      if (sealed > 0 && (await this.saveIfChanged(draft)) === 'failed') throw new Error('cannot save the card with its objects sealed');
      return sealed;
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private loseAuthentication(): void {
    this.epoch++;
    this.session.clear();
    this.vault.lock();
    this.commandChain.reset();
    this.responseChain.clear();
  }

  private async process(bytes: Uint8Array): Promise<Uint8Array> {
    let apdu: CommandApdu;
    try {
      apdu = parseCommandApdu(bytes);
    } catch (error) {
      this.commandChain.reset();
      this.responseChain.clear();
      return responseApdu(error instanceof CardError ? error.sw : SW.WRONG_LENGTH);
    }
    const claBase = apdu.cla & ~CLA_CHAIN_BIT;
    if (claBase !== 0) {
      this.commandChain.reset();
      this.responseChain.clear();
      const sw = claBase === CLA_SECURE_MESSAGING ? SW.SECURE_MESSAGING_NOT_SUPPORTED : SW.CLA_NOT_SUPPORTED;
      return responseApdu(sw);
    }
    if (apdu.ins === INS_GET_RESPONSE) {
      this.commandChain.reset();
      if (apdu.cla & CLA_CHAIN_BIT) return responseApdu(SW.CHAINING_NOT_SUPPORTED);
      try {
        return this.responseChain.getResponse(apdu);
      } catch (error) {
        return responseApdu(error instanceof CardError ? error.sw : SW.NO_PRECISE_DIAGNOSIS);
      }
    }
    this.responseChain.clear();
    const instruction = INSTRUCTIONS.get(apdu.ins);
    if (!instruction) {
      this.commandChain.reset();
      return responseApdu(SW.INS_NOT_SUPPORTED);
    }
    if (apdu.cla & CLA_CHAIN_BIT && !instruction.chainable) {
      this.commandChain.reset();
      return responseApdu(SW.CHAINING_NOT_SUPPORTED);
    }
    let whole: CommandApdu | undefined;
    try {
      whole = this.commandChain.accept(apdu);
    } catch (error) {
      return responseApdu(error instanceof CardError ? error.sw : SW.NO_PRECISE_DIAGNOSIS);
    }
    if (!whole) return responseApdu(SW.SUCCESS);

    const { sw, data } = await this.execute(instruction, whole);
    if (sw !== SW.SUCCESS) return responseApdu(sw);
    return this.responseChain.deliver(data, sw, whole);
  }

  /** Runs one handler as a transaction over the card state. */
  private async execute(instruction: Instruction, apdu: CommandApdu): Promise<{ sw: StatusWord; data: Uint8Array }> {
    const epoch = this.epoch;
    let draft: PivCardState | undefined;
    const commitActions: Array<() => Promise<void>> = [];
    const rollbackActions: Array<() => Promise<void>> = [];
    const context: InstructionContext = {
      apdu,
      state: this.committed,
      edit: () => (draft ??= cloneState(this.committed)),
      vault: this.vault,
      session: this.session,
      attestor: this.attestor,
      afterCommit: (action) => commitActions.push(action),
      onRollback: (action) => rollbackActions.push(action),
    };
    let result: { sw: StatusWord; data: Uint8Array };
    try {
      const data = (await instruction.handle(context)) ?? new Uint8Array(0);
      // A read-only instruction changes neither the card nor the vault: nothing to compare or save.
      const outcome = instruction.readOnly && draft === undefined ? 'unchanged' : await this.saveIfChanged(draft);
      if (outcome !== 'failed') {
        await this.runQuietly(instruction, commitActions);
        if (outcome === 'saved') await this.afterPersisted(instruction);
        result = { sw: SW.SUCCESS, data };
      } else {
        await this.runQuietly(instruction, rollbackActions);
        result = { sw: SW.MEMORY_FAILURE, data: new Uint8Array(0) };
      }
    } catch (error) {
      await this.runQuietly(instruction, rollbackActions);
      result = { sw: this.statusWordOf(instruction, error), data: new Uint8Array(0) };
      // A failed command may still have moved the vault's own state (it never should
      // for a rejected APDU): keep the stored copy current, best effort.
      if (!instruction.readOnly) await this.saveIfChanged(undefined);
    }
    if (epoch !== this.epoch) {
      // A power event arrived while the command ran: nothing it authenticated survives.
      this.session.clear();
      this.vault.lock();
    }
    return result;
  }

  /** Saves draft (or the committed state) with the vault's current state when either changed. */
  private async saveIfChanged(draft: PivCardState | undefined): Promise<'unchanged' | 'saved' | 'failed'> {
    // The revision, not a deep compare of state(): this runs after every signature.
    const revision = this.vault.revision();
    if (!draft && revision === this.savedVaultRevision) return 'unchanged';
    const next: PivCardState = { ...(draft ?? cloneState(this.committed)), vault: structuredClone(this.vault.state()) };
    try {
      await this.store.save(next);
    } catch (error) {
      this.report('save-failure', undefined, error);
      return 'failed';
    }
    this.committed = next;
    this.savedVaultRevision = revision;
    return 'saved';
  }

  /**
   * After a save: lets the vault finish work that waited for the saved state
   * (vault.persisted), then saves what that changed. Best effort: the command has
   * succeeded already, and the vault redoes the work at its next use if this is interrupted.
   */
  private async afterPersisted(instruction: Instruction): Promise<void> {
    if (!this.vault.persisted) return;
    try {
      await this.vault.persisted();
      await this.saveIfChanged(undefined);
    } catch (error) {
      this.report('persisted-failure', instruction, error);
    }
  }

  private async runQuietly(instruction: Instruction, actions: Array<() => Promise<void>>): Promise<void> {
    for (const action of actions) {
      try {
        await action();
      } catch (error) {
        this.report('cleanup-failure', instruction, error);
      }
    }
  }

  private statusWordOf(instruction: Instruction, error: unknown): StatusWord {
    if (error instanceof CardError) {
      if (error.audit && diagnostics.hasSubscribers) {
        const refusal: AppletRefusal = { event: 'refused', serial: this.committed.serial, instruction: instruction.name, reason: error.detail ?? error.message };
        diagnostics.publish(refusal);
      }
      return error.sw;
    }
    // The TPM refuses every authorisation while in dictionary-attack lockout: the card looks blocked.
    if (error instanceof TpmvscError && error.code === 'TPM_LOCKOUT') return SW.AUTH_METHOD_BLOCKED;
    this.report('internal-error', instruction, error);
    return SW.NO_PRECISE_DIAGNOSIS;
  }

  private report(event: string, instruction: Instruction | undefined, error: unknown): void {
    if (diagnostics.hasSubscribers) diagnostics.publish({ event, instruction: instruction?.name, error });
  }
}
