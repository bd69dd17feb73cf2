/**
 * One card as the daemon hosts it: the PIV applet, its TPM vault, its files and the
 * vpcd link that puts it in its reader. The daemon passes bytes; it never looks inside.
 */
import { once } from 'node:events';
import type { PivCardState } from '../applet/piv_state.js';
import { PivApplet } from '../applet/piv_applet.js';
import type { KeyVault } from '../applet/key_vault.js';
import type { CardDirectory, CardFile } from './card_directory.js';
import { VpcdLink } from './vpcd_link.js';

export interface HostedCardOptions {
  file: CardFile<PivCardState>;
  vault: KeyVault;
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
  readonly vault: KeyVault;
  private file: CardFile<PivCardState>;
  private readonly link: VpcdLink;

  constructor(options: HostedCardOptions) {
    this.slot = options.file.slot;
    this.readerName = options.readerName;
    this.file = options.file;
    this.vault = options.vault;
    const directory = options.directory;
    this.applet = new PivApplet({
      state: options.file.applet,
      vault: options.vault,
      store: {
        // The applet calls this before it answers 9000: the card file is durable first.
        save: async (state: PivCardState) => {
          const next = { ...this.file, applet: state };
          await directory.write(next);
          this.file = next;
        },
      },
    });
    this.link = new VpcdLink({ card: this.applet, port: options.port, host: options.host });
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

  /** Resolves when the reader has the card, or after `timeoutMs` (pcscd may be down). */
  async waitInserted(timeoutMs: number): Promise<boolean> {
    if (this.link.connected) return true;
    const timeout = AbortSignal.timeout(timeoutMs);
    try {
      await once(this.link, 'connected', { signal: timeout });
      return true;
    } catch {
      return false;
    }
  }

  /** Takes the card out of its reader, between APDUs. */
  async remove(): Promise<void> {
    await this.link.close();
    this.vault.lock();
  }
}
