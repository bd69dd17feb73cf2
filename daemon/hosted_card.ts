/**
 * One card as the daemon hosts it: the PIV applet, its TPM vault, its files and the
 * vpcd link that puts it in its reader. The daemon passes bytes; it never looks inside.
 */
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { EventEmitter, once } from 'node:events';
import type { SmartCard } from '../common/smart_card.js';
import type { PivCardState } from '../applet/piv_state.js';
import { APPLET_CHANNEL, PivApplet, type AppletRefusal } from '../applet/piv_applet.js';
import type { TpmVault } from '../vault/tpm_vault.js';
import type { KeyAttestor } from '../applet/key_attestor.js';
import type { CardDirectory, CardFile } from './card_directory.js';
import { VpcdLink } from './vpcd_link.js';
import { apduTraceFromEnvironment, type ApduTrace } from './apdu_trace.js';

export interface HostedCardOptions {
  file: CardFile<PivCardState>;
  /** The daemon hosts TPM vaults only; the status report uses TpmVault.retryStatus. */
  vault: TpmVault;
  /** ATTEST (F9) for a card created with /attestation; without it F9 answers 6A81. */
  attestor?: KeyAttestor | undefined;
  directory: CardDirectory;
  /** vpcd port of this card's reader slot. */
  port: number;
  host: string;
  readerName: string;
}

export class HostedCard {
  readonly slot: number;
  readonly readerName: string;
  readonly applet: PivApplet;
  readonly vault: TpmVault;
  private file: CardFile<PivCardState>;
  private readonly link: VpcdLink;
  /** Emits 'present' when pcscd has powered the card on and read its ATR: PC/SC clients see it. */
  private readonly reader = new EventEmitter<{ present: [] }>();
  private poweredSinceConnect = false;
  /** Debugging aid, off unless TPMVSC_APDU_TRACE is set (see apdu_trace.ts). */
  private readonly trace: ApduTrace | undefined = apduTraceFromEnvironment();
  /** Why the card refused the command in progress (an audited refusal), for its trace line. */
  private refusal: string | undefined;
  private readonly noteRefusal = (message: unknown): void => {
    const refusal = message as Partial<AppletRefusal>;
    if (refusal.event === 'refused' && refusal.serial === this.applet.state.serial) this.refusal = `${refusal.instruction} refused: ${refusal.reason}`;
  };

  constructor(options: HostedCardOptions) {
    this.slot = options.file.slot;
    this.readerName = options.readerName;
    this.file = options.file;
    this.vault = options.vault;
    const directory = options.directory;
    this.applet = new PivApplet({
      state: options.file.applet,
      vault: options.vault,
      ...(options.attestor ? { attestor: options.attestor } : {}),
      store: {
        // The applet calls this before it answers 9000: the card file is durable first.
        save: async (state: PivCardState) => {
          const next = { ...this.file, applet: state };
          await directory.write(next);
          this.file = next;
        },
      },
    });
    if (this.trace) subscribe(APPLET_CHANNEL, this.noteRefusal);
    this.link = new VpcdLink({ card: this.observed(this.applet), port: options.port, host: options.host });
    this.link.on('connected', () => (this.poweredSinceConnect = false));
    this.link.on('powered', () => {
      if (this.poweredSinceConnect) return;
      this.poweredSinceConnect = true;
      this.reader.emit('present');
    });
  }

  /** The applet as the link sees it, traced when TPMVSC_APDU_TRACE is set. */
  private observed(card: SmartCard): SmartCard {
    return {
      atr: card.atr,
      powerOn: () => {
        card.powerOn();
        this.trace?.event(this.readerName, 'power-on');
      },
      powerOff: () => {
        card.powerOff();
        this.trace?.event(this.readerName, 'power-off');
      },
      reset: () => {
        card.reset();
        this.trace?.event(this.readerName, 'reset');
      },
      transmit: async (command) => {
        if (!this.trace) return card.transmit(command);
        const at = performance.now();
        this.refusal = undefined;
        const response = await card.transmit(command);
        await this.trace.record(this.readerName, command, response, { at, took: performance.now() - at }, this.refusal);
        return response;
      },
    };
  }

  get name(): string {
    return this.file.name;
  }

  get createdAt(): string {
    return this.file.createdAt;
  }

  get connected(): boolean {
    return this.link.connected;
  }

  /** Puts the card in its reader (connects, and reconnects whenever pcscd restarts). */
  insert(): void {
    this.link.start();
  }

  /**
   * Resolves when pcscd has seen the card (it powers a new card on and reads its ATR; the
   * link reports the answered ATR), or after `timeoutMs` (pcscd may be down: the card
   * appears when it comes up). No extra wait: measured with fresh SCardGetStatusChange polls,
   * pcscd lists the card within ~0.3 ms of that reply, less than the answer to the CLI takes.
   */
  async waitInserted(timeoutMs: number): Promise<boolean> {
    if (this.link.connected && this.poweredSinceConnect) return true;
    try {
      await once(this.reader, 'present', { signal: AbortSignal.timeout(timeoutMs) });
      return true;
    } catch {
      return false;
    }
  }

  /** Takes the card out of its reader, between APDUs. */
  async remove(): Promise<void> {
    await this.link.close();
    this.vault.lock();
    if (this.trace) unsubscribe(APPLET_CHANNEL, this.noteRefusal);
  }
}
