/**
 * Where cards live on disk, under the state directory (default /var/lib/tpmvsc):
 *
 *   <state>/                      0700
 *     tpm.json                    0600  pinned name of the TPM's storage root key
 *     cards/                      0700
 *       0000/                     0700  one directory per reader slot (instance ...\0000)
 *         card.json               0600  the card: identity + applet state (incl. vault state)
 *       0001.pending              0600  journal of a create or destroy in progress
 *
 * A card exists exactly when <slot>/card.json exists. Every write is atomic
 * (atomic_file.ts). A create writes the journal first, then makes TPM objects, then
 * card.json, then drops the journal; a destroy writes the journal, removes TPM objects,
 * then the directory, then the journal. At start, any journal left behind by a crash is
 * finished (destroy) or rolled back (create), so no half card survives.
 */
import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ensurePrivateDirectory, syncDirectory, writeFileAtomic } from './atomic_file.js';

/** The persistent form of one card. */
export interface CardFile<AppletState> {
  format: 1;
  slot: number;
  name: string;
  createdAt: string;
  applet: AppletState;
}

/** A create or destroy in progress, as recorded before touching the TPM. */
export interface PendingJournal {
  operation: 'create' | 'destroy';
  slot: number;
  startedAt: string;
  /** Vault state as far as known (for a create: what must be removed on roll-back). */
  vault?: unknown;
}

function slotName(slot: number): string {
  return slot.toString().padStart(4, '0');
}

export class CardDirectory {
  readonly cardsDirectory: string;

  constructor(readonly stateDirectory: string) {
    this.cardsDirectory = join(stateDirectory, 'cards');
  }

  async prepare(): Promise<void> {
    await ensurePrivateDirectory(this.stateDirectory);
    await ensurePrivateDirectory(this.cardsDirectory);
  }

  cardPath(slot: number): string {
    return join(this.cardsDirectory, slotName(slot), 'card.json');
  }

  private journalPath(slot: number): string {
    return join(this.cardsDirectory, `${slotName(slot)}.pending`);
  }

  /** Slots that hold a complete card. */
  async slots(): Promise<number[]> {
    const entries = await readdir(this.cardsDirectory, { withFileTypes: true });
    const slots: number[] = [];
    for (const entry of entries) {
      if (!entry.isDirectory() || !/^\d{4}$/.test(entry.name)) continue;
      const slot = Number(entry.name);
      try {
        await readFile(this.cardPath(slot));
        slots.push(slot);
      } catch {
        // A directory without card.json is debris of an interrupted operation.
      }
    }
    return slots.sort((a, b) => a - b);
  }

  async read<AppletState>(slot: number): Promise<CardFile<AppletState>> {
    const parsed = JSON.parse(await readFile(this.cardPath(slot), 'utf8')) as CardFile<AppletState>;
    if (parsed.format !== 1 || parsed.slot !== slot) {
      throw new Error(`card file of slot ${slot} is not a tpmvsc card (format ${String(parsed.format)})`);
    }
    return parsed;
  }

  async write<AppletState>(card: CardFile<AppletState>): Promise<void> {
    const directory = join(this.cardsDirectory, slotName(card.slot));
    await ensurePrivateDirectory(directory);
    await writeFileAtomic(this.cardPath(card.slot), JSON.stringify(card));
  }

  /** Removes a card's directory for good. */
  async remove(slot: number): Promise<void> {
    await rm(join(this.cardsDirectory, slotName(slot)), { recursive: true, force: true });
    await syncDirectory(this.cardsDirectory);
  }

  async writeJournal(journal: PendingJournal): Promise<void> {
    await writeFileAtomic(this.journalPath(journal.slot), JSON.stringify(journal));
  }

  async clearJournal(slot: number): Promise<void> {
    await rm(this.journalPath(slot), { force: true });
    await syncDirectory(this.cardsDirectory);
  }

  async journals(): Promise<PendingJournal[]> {
    const entries = await readdir(this.cardsDirectory);
    const journals: PendingJournal[] = [];
    for (const name of entries) {
      if (!/^\d{4}\.pending$/.test(name)) continue;
      try {
        journals.push(JSON.parse(await readFile(join(this.cardsDirectory, name), 'utf8')) as PendingJournal);
      } catch {
        // An unreadable journal cannot exist (atomic writes); skip rather than crash the daemon.
      }
    }
    return journals;
  }

  /** Reads and writes small daemon-wide JSON files (e.g. tpm.json). */
  async readSetting<T>(name: string): Promise<T | undefined> {
    try {
      return JSON.parse(await readFile(join(this.stateDirectory, name), 'utf8')) as T;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw error;
    }
  }

  async writeSetting(name: string, value: unknown): Promise<void> {
    await writeFileAtomic(join(this.stateDirectory, name), JSON.stringify(value));
  }
}
