/**
 * The daemon's cards: loads them at start, creates and destroys them, reports on them.
 *
 * Crash safety (see card_directory.ts for the files):
 * - create: TPM objects first (vault), then card.json (atomic). A crash before card.json
 *   leaves only TPM objects that no card references: `sweepOrphans` removes them at the
 *   next start. A crash after card.json leaves a complete card.
 * - destroy: a journal first, then the card leaves its reader, then the TPM objects go,
 *   then the files, then the journal. A crash anywhere in between is finished at the next
 *   start, so the card is either fully there or fully gone.
 */
import { channel } from 'node:diagnostics_channel';
import { isAuthFail, TpmProtocolError, type Tpm } from '../tpm/index.js';
import { TpmVault, type TpmVaultOptions } from '../vault/tpm_vault.js';
import { sweepOrphans } from '../vault/orphan_sweep.js';
import { VaultError } from '../vault/vault_error.js';
import { presentedGuid, provisionCard, randomSerial } from '../applet/provision.js';
import { parsePivCardState, type PivCardState } from '../applet/piv_state.js';
import {
  instanceId,
  parseInstanceId,
  PROGRESS,
  type CardStatus,
  type CardSummary,
  type CreateRequest,
  type CreateResult,
  type DaemonStatus,
} from '../common/control_protocol.js';
import { DEFAULT_PIN, DEFAULT_PUK } from '../common/pin_rules.js';
import { DEFAULT_PIN_LIFETIME, type PinLifetime } from '../common/pin_lifetime.js';
import { TpmvscError } from '../common/errors.js';
import type { CardManagerApi } from './card_manager_api.js';
import type { CardDirectory, CardFile } from './card_directory.js';
import { HostedCard } from './hosted_card.js';
import { objectKey } from '../applet/data_objects.js';
import { TpmKeyAttestor } from '../attestation/tpm_key_attestor.js';
import { certificateFromObjectValue, certificateObjectValue, enrollAikWithCa, selfIssueAikCertificate } from '../attestation/aik_certificate.js';
import { portOf, readerName, type ReaderNaming } from './reader_config.js';
import { ENDORSEMENT_AUTH_CREDENTIAL } from './config.js';
import { START_READERS } from '../common/start_directory.js';

export const cardManagerChannel = channel('tpmvsc:cards');

export interface CardManagerOptions {
  tpm: Tpm;
  tcti: string;
  directory: CardDirectory;
  /** vpcd address of reader slot 0; slot n is basePort + n. */
  vpcdHost: string;
  basePort: number;
  /** Size of the reader pool (pcscd configuration). */
  readers: number;
  friendlyName: string;
  /** Default 'numbered' (see reader_config.ts). */
  readerNaming?: ReaderNaming;
  version: string;
  vaultOptions?: TpmVaultOptions;
  /** How long create waits for the reader to show the card. Default 3000 ms. */
  insertTimeoutMs?: number;
  /** Attestation CA URL for /attestation AIK_AND_CERT (daemon --attestation-ca). */
  attestationCa?: string | undefined;
  /** The TPM's endorsement hierarchy password, for the EK in AIK_AND_CERT enrolment; undefined: empty. */
  endorsementAuth?: Uint8Array | undefined;
  /** Verified-PIN lifetime of the cards created without /pinlifetime (--pin-lifetime). Default DEFAULT_PIN_LIFETIME. */
  defaultPinLifetime?: PinLifetime;
}

/** PIV object 5FFF01: the attestation (AIK) certificate, issuer of ATTEST's certificates. */
const ATTESTATION_OBJECT = objectKey(0x5fff01);

const encoder = new TextEncoder();

export class CardManager implements CardManagerApi {
  private readonly cards = new Map<number, HostedCard>();
  private readonly vaultOptions: TpmVaultOptions;
  /** create and destroy run one at a time. */
  private exclusive: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: CardManagerOptions) {
    this.vaultOptions = {
      defaultPin: encoder.encode(DEFAULT_PIN),
      defaultPuk: encoder.encode(DEFAULT_PUK),
      ...options.vaultOptions,
    };
  }

  /** Finishes interrupted operations, removes orphans, and puts every card in its reader. */
  async start(): Promise<void> {
    const { directory, tpm } = this.options;
    await directory.prepare();
    for (const journal of await directory.journals()) {
      if (journal.operation === 'destroy') await this.finishDestroy(journal.slot);
      await directory.clearJournal(journal.slot);
    }
    const files: Array<CardFile<PivCardState>> = [];
    for (const slot of await directory.slots()) {
      try {
        const file = await directory.read<unknown>(slot);
        files.push({ ...file, applet: parsePivCardState(file.applet) });
      } catch (error) {
        cardManagerChannel.publish({ event: 'card_unreadable', slot, detail: String(error) });
      }
    }
    await sweepOrphans(
      tpm,
      files.map((file) => file.applet.vault),
      this.vaultOptions,
    );
    for (const file of files) {
      try {
        const vault = await TpmVault.open(tpm, file.applet.vault, this.vaultOptions);
        await this.sealClearObjects(this.host(file, vault));
      } catch (error) {
        cardManagerChannel.publish({ event: 'card_unavailable', slot: file.slot, detail: String(error) });
      }
    }
  }

  /**
   * A card file from before PIN-protected objects were sealed may hold them in clear: seal them
   * now, before any client reads the card, and say so in the log.
   */
  private async sealClearObjects(card: HostedCard): Promise<void> {
    try {
      const count = await card.applet.sealClearObjects();
      if (count > 0) cardManagerChannel.publish({ event: 'objects_sealed', slot: card.slot, count });
    } catch (error) {
      cardManagerChannel.publish({ event: 'objects_seal_failed', slot: card.slot, detail: String(error) });
    }
  }

  /** Takes every card out of its reader (daemon shutdown). */
  async stop(): Promise<void> {
    await Promise.all([...this.cards.values()].map((card) => card.remove()));
    this.cards.clear();
  }

  /** The card's AIK (created now, under its card parent) and the AIK's certificate. */
  private async attestationCertificate(vault: TpmVault, mode: 'AIK_ONLY' | 'AIK_AND_CERT', serial: number): Promise<Uint8Array> {
    await vault.createAttestationKey();
    if (mode === 'AIK_ONLY') return selfIssueAikCertificate(vault, serial);
    const endorsementAuth = this.options.endorsementAuth;
    try {
      const { certificate } = await enrollAikWithCa(vault, this.options.tpm, this.options.attestationCa!, endorsementAuth ? { endorsementAuth } : {});
      return certificate;
    } catch (error) {
      // The EK is used through the endorsement hierarchy (CreatePrimary, PolicySecret): a refusal
      // there is that hierarchy's password, which only the admin can give.
      const tpmError = rootCause(error);
      if (isAuthFail(tpmError) && ENDORSEMENT_COMMANDS.has(tpmError.command)) {
        const fix = endorsementAuth
          ? 'the password given with --endorsement-auth-file (or the credential) is not the TPM\'s'
          : `it has a password: give it with --endorsement-auth-file PATH (or the systemd credential ${ENDORSEMENT_AUTH_CREDENTIAL})`;
        throw new TpmvscError('TPM_ENDORSEMENT_AUTH', fix, { cause: error });
      }
      throw error;
    }
  }

  private host(file: CardFile<PivCardState>, vault: TpmVault): HostedCard {
    let card: HostedCard | undefined = undefined;
    // ATTEST issues under the AIK certificate the card holds now (object 5FFF01).
    const attestor = vault.attestationKey()
      ? new TpmKeyAttestor(vault, () => certificateFromObjectValue((card?.applet.state ?? file.applet).objects[ATTESTATION_OBJECT]))
      : undefined;
    card = new HostedCard({
      file,
      vault,
      attestor,
      directory: this.options.directory,
      port: portOf(file.slot, this.options.basePort),
      host: this.options.vpcdHost,
      readerName: readerName(file.slot, this.options.friendlyName, this.options.readerNaming),
      defaultPinLifetime: this.options.defaultPinLifetime ?? DEFAULT_PIN_LIFETIME,
    });
    this.cards.set(file.slot, card);
    card.insert();
    return card;
  }

  private serialize<T>(operation: () => Promise<T>): Promise<T> {
    const run = this.exclusive.then(operation, operation);
    this.exclusive = run.catch(() => undefined);
    return run;
  }

  create(request: CreateRequest, progress: (line: string) => void, signal: AbortSignal): Promise<CreateResult> {
    return this.serialize(() => this.createNow(request, progress, signal));
  }

  private async createNow(request: CreateRequest, progress: (line: string) => void, signal: AbortSignal): Promise<CreateResult> {
    if (request.attestation === 'AIK_AND_CERT' && !this.options.attestationCa) {
      throw new TpmvscError('CREATE_FAILED', '/attestation AIK_AND_CERT needs an attestation CA: start tpmvscd with --attestation-ca URL');
    }
    progress(PROGRESS.initializing);
    const slot = this.lowestFreeSlot();
    if (slot === undefined) throw new TpmvscError('READER_LIMIT', readerLimitFix(this.options.readers));
    const managementKey = new Uint8Array(Buffer.from(request.adminKeyHex, 'hex'));
    const pin = encoder.encode(request.pin);
    const puk = request.puk === null ? undefined : encoder.encode(request.puk);

    progress(PROGRESS.creatingSimulator);
    let vault: TpmVault;
    try {
      vault = await TpmVault.create(
        this.options.tpm,
        { pin, puk, managementKey: { algorithm: 'tdes', key: managementKey } },
        this.vaultOptions,
      );
    } catch (error) {
      throw toControlError(error, 'CREATE_FAILED');
    } finally {
      pin.fill(0);
      puk?.fill(0);
      managementKey.fill(0);
    }

    let hosted: HostedCard | undefined;
    try {
      signal.throwIfAborted();
      const serial = this.uniqueSerial();
      const attestationCertificate = request.attestation === null ? undefined : await this.attestationCertificate(vault, request.attestation, serial);
      signal.throwIfAborted();
      progress(PROGRESS.generatingFilesystem);
      const applet = provisionCard({
        name: request.name,
        pinPolicy: request.pinPolicy,
        ...(request.pinLifetime ? { pinLifetime: request.pinLifetime } : {}),
        hasPuk: request.puk !== null,
        generate: request.generate,
        managementKeyAlgorithm: 'tdes',
        serial,
        vaultState: vault.state(),
      });
      if (attestationCertificate) applet.objects[ATTESTATION_OBJECT] = Buffer.from(certificateObjectValue(attestationCertificate)).toString('base64');
      const file: CardFile<PivCardState> = {
        format: 1,
        slot,
        name: request.name,
        createdAt: new Date().toISOString(),
        applet,
      };
      signal.throwIfAborted();
      await this.options.directory.write(file);
      progress(PROGRESS.creatingReader);
      hosted = this.host(file, vault);
      progress(PROGRESS.waitingForDevice);
      const insertTimeoutMs = this.options.insertTimeoutMs ?? 3000;
      if (!(await hosted.waitInserted(insertTimeoutMs, signal))) {
        signal.throwIfAborted();
        throw new TpmvscError('READER_NOT_SERVED', notInsertedCause(hosted, insertTimeoutMs));
      }
      signal.throwIfAborted();
      progress(PROGRESS.authenticating);
      progress(PROGRESS.created);
      cardManagerChannel.publish({ event: 'created', slot });
      return { instance: instanceId(slot), reader: hosted.readerName };
    } catch (error) {
      // Roll back: the client went away or a step failed. Nothing of the card may remain.
      if (hosted) {
        this.cards.delete(slot);
        await hosted.remove().catch(() => undefined);
      }
      await vault.destroy().catch(() => undefined);
      await this.options.directory.remove(slot).catch(() => undefined);
      if (signal.aborted) throw new TpmvscError('CREATE_FAILED', 'cancelled by the client; nothing was kept');
      throw toControlError(error, 'CREATE_FAILED');
    }
  }

  destroy(instance: string): Promise<void> {
    return this.serialize(async () => {
      const slot = parseInstanceId(instance);
      if (slot === undefined || !this.cards.has(slot)) {
        // A card whose vault could not open still has files: let destroy clean it up too.
        if (slot === undefined || !(await this.options.directory.slots()).includes(slot)) {
          throw new TpmvscError('NOT_FOUND', instance);
        }
      }
      await this.options.directory.writeJournal({ operation: 'destroy', slot, startedAt: new Date().toISOString() });
      await this.finishDestroy(slot);
      await this.options.directory.clearJournal(slot);
      cardManagerChannel.publish({ event: 'destroyed', slot });
    });
  }

  private async finishDestroy(slot: number): Promise<void> {
    const hosted = this.cards.get(slot);
    if (hosted) {
      this.cards.delete(slot);
      await hosted.remove();
      await hosted.vault.destroy();
    } else {
      // Not hosted (daemon start, or a card whose vault failed to open): destroy from its file.
      try {
        const file = await this.options.directory.read<unknown>(slot);
        const state = parsePivCardState(file.applet);
        const vault = await TpmVault.open(this.options.tpm, state.vault, this.vaultOptions);
        await vault.destroy();
      } catch (error) {
        // Already gone from the TPM (or no file): only the files remain to remove.
        if (!(error instanceof VaultError) && (error as NodeJS.ErrnoException).code !== 'ENOENT') {
          cardManagerChannel.publish({ event: 'destroy_incomplete', slot, detail: String(error) });
        }
      }
    }
    await this.options.directory.remove(slot);
  }

  async list(): Promise<CardSummary[]> {
    return [...this.cards.values()].sort((a, b) => a.slot - b.slot).map((card) => this.summary(card));
  }

  async status(instance?: string): Promise<DaemonStatus> {
    let cards = [...this.cards.values()].sort((a, b) => a.slot - b.slot);
    if (instance !== undefined) {
      const slot = parseInstanceId(instance);
      cards = cards.filter((card) => card.slot === slot);
      if (cards.length === 0) throw new TpmvscError('NOT_FOUND', instance);
    }
    const statuses: CardStatus[] = [];
    for (const card of cards) {
      const { pin, puk } = await card.vault.retryStatus();
      statuses.push({
        ...this.summary(card),
        connected: card.connected,
        link: card.linkStatus,
        pinTriesRemaining: pin.remaining,
        pinTriesTotal: pin.total,
        pukTriesRemaining: puk ? puk.remaining : null,
        pinLifetime: { ...card.applet.pinLifetime, source: card.applet.state.pinLifetime ? 'card' : 'daemon default' },
        keys: Object.entries(card.applet.state.keys).map(([slot, key]) => ({
          slot,
          algorithm: key.algorithm,
          origin: key.origin,
        })),
      });
    }
    return { version: this.options.version, tcti: this.options.tcti, readers: this.options.readers, cards: statuses };
  }

  private summary(card: HostedCard): CardSummary {
    const state = card.applet.state;
    return {
      instance: instanceId(card.slot),
      name: card.name,
      reader: card.readerName,
      slot: card.slot,
      guid: presentedGuid(state.objects),
      serial: state.serial,
      hasPuk: state.hasPuk,
      createdAt: card.createdAt,
    };
  }

  private lowestFreeSlot(): number | undefined {
    for (let slot = 0; slot < this.options.readers; slot++) {
      if (!this.cards.has(slot)) return slot;
    }
    return undefined;
  }

  private uniqueSerial(): number {
    const taken = new Set([...this.cards.values()].map((card) => card.applet.state.serial));
    for (;;) {
      const serial = randomSerial();
      if (!taken.has(serial)) return serial;
    }
  }
}

/** What to do when every reader of the pool holds a card (exit code 6). */
export function readerLimitFix(readers: number): string {
  return (
    `all ${readers} readers of the pool hold a card: destroy one (tpmvscmgr destroy), or enlarge the pool: ` +
    'TPMVSC_READERS=N for tpmvscd and for tpmvscd register-readers (pcscd\'s readers), then restart pcscd and tpmvscd ' +
    `(npm start makes ${START_READERS} readers of its own pcscd: TPMVSC_READERS=N npm start makes N)`
  );
}

/** Commands of the endorsement hierarchy's authorization during AIK enrolment. */
const ENDORSEMENT_COMMANDS = new Set(['CreatePrimary', 'PolicySecret']);

/**
 * The innermost cause of an error (the TPM's own refusal, under vault and attestation wrappers),
 * or the first TpmProtocolError on the way: that one already says what went wrong (e.g. the
 * owner password refused while the SRK was made again), and its TPM cause must not be read
 * as the endorsement hierarchy's.
 */
function rootCause(error: unknown): unknown {
  let current = error;
  for (let depth = 0; depth < 8 && current instanceof Error && current.cause !== undefined; depth++) {
    if (current instanceof TpmProtocolError) return current;
    current = current.cause;
  }
  return current;
}

/** Why a new card did not show in pcscd, from its link's state: one line naming the likely cause. */
function notInsertedCause(card: HostedCard, timeoutMs: number): string {
  const { state, problem } = card.linkStatus;
  const where = `reader "${card.readerName}" (vpcd port ${card.port})`;
  if (state === 'unserved') {
    return `${where}: connected, not served by vpcd within ${timeoutMs} ms (another connection holds the port, or what listens there is not pcscd's vpcd)`;
  }
  if (state === 'connecting') {
    return `${where}: ${problem ?? 'no connection to vpcd'}; is pcscd running with the tpmvsc readers (tpmvscd register-readers)?`;
  }
  return `${where}: pcscd did not power the card on within ${timeoutMs} ms`;
}

/** Maps vault/TPM failures to control errors without leaking anything secret. */
function toControlError(error: unknown, fallback: 'CREATE_FAILED'): TpmvscError {
  if (error instanceof TpmvscError) {
    if (error.code === 'TPM_LOCKOUT' || error.code === 'TPM_FAILURE' || error.code === 'TPM_UNAVAILABLE' || error.code === 'TPM_ENDORSEMENT_AUTH') return error;
    if (error.code === 'READER_LIMIT' || error.code === 'NOT_SUPPORTED' || error.code === 'READER_NOT_SERVED') return error;
    return new TpmvscError(fallback, error.detail ?? error.message, { cause: error });
  }
  return new TpmvscError(fallback, error instanceof Error ? error.message : undefined, { cause: error });
}
