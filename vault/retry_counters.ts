/**
 * The card's PIN and PUK retry counters, kept in one ordinary TPM NV index per card so
 * that restoring old files cannot roll them back. An NV write is durable when the TPM
 * answers, which is what "decrement before the check" relies on.
 *
 * NV index: 20 bytes, attributes AUTHWRITE | AUTHREAD | NO_DA, authValue = nvAuth (a
 * high-entropy value only the vault derives), created under the owner hierarchy.
 *
 *   byte 0  layout version (3)
 *   byte 1  flags: bit0 PIN is default, bit1 PUK is default, bit2 card has a PUK
 *   byte 2  PIN tries total      byte 3  PIN tries remaining
 *   byte 4  PUK tries total      byte 5  PUK tries remaining
 *   byte 6..7 reserved (0)
 *   byte 8..11   PIN generation (u32 big-endian)   the PIN objects' PolicyNV compares these
 *   byte 12..15  PUK generation (u32 big-endian)   bytes (pin_generation.ts): a bump kills older objects
 *   byte 16..19  management-key generation (u32 big-endian)
 */
import { RC, TPM_ALG, TPMA_NV, TPM_RH, TpmError, type Tpm } from '../tpm/index.js';
import { VaultError } from './vault_error.js';

export const COUNTERS_SIZE = 20;
const LAYOUT_VERSION = 3;
/** Where PolicyNV finds each generation (4 bytes, big-endian, compared with TPM_EO_EQ). */
export const GENERATION_OFFSET = { pin: 8, puk: 12, management: 16 } as const;
/** The objects bound to a generation: PIN, PUK and management key. */
export type GenerationPurpose = keyof typeof GENERATION_OFFSET;
const MAX_GENERATION = 0xffffffff;
const FLAG_PIN_DEFAULT = 0x01;
const FLAG_PUK_DEFAULT = 0x02;
const FLAG_HAS_PUK = 0x04;

export interface RetryCounters {
  pinTotal: number;
  pinRemaining: number;
  pinIsDefault: boolean;
  hasPuk: boolean;
  pukTotal: number;
  pukRemaining: number;
  pukIsDefault: boolean;
  /** Generation the live PIN / PUK objects are bound to; bumped by every change of that secret. */
  pinGeneration: number;
  pukGeneration: number;
  /** Generation the live management-key object is bound to; bumped by SET MANAGEMENT KEY. */
  managementGeneration: number;
}

/** The 4 bytes PolicyNV compares with the generation field. */
export function generationBytes(generation: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, generation);
  return out;
}

/** Valid generations: u32; the last one can't be bumped (4 billion changes: not reachable in practice). */
export function checkGeneration(generation: unknown, what: string): asserts generation is number {
  if (typeof generation !== 'number' || !Number.isInteger(generation) || generation < 0 || generation >= MAX_GENERATION) {
    throw new VaultError('BAD_STATE', `${what} generation is out of range`);
  }
}

export function encodeCounters(c: RetryCounters): Uint8Array {
  const flags = (c.pinIsDefault ? FLAG_PIN_DEFAULT : 0) | (c.pukIsDefault ? FLAG_PUK_DEFAULT : 0) | (c.hasPuk ? FLAG_HAS_PUK : 0);
  const out = new Uint8Array(COUNTERS_SIZE);
  out.set([LAYOUT_VERSION, flags, c.pinTotal, c.pinRemaining, c.pukTotal, c.pukRemaining, 0, 0]);
  out.set(generationBytes(c.pinGeneration), GENERATION_OFFSET.pin);
  out.set(generationBytes(c.pukGeneration), GENERATION_OFFSET.puk);
  out.set(generationBytes(c.managementGeneration), GENERATION_OFFSET.management);
  return out;
}

export function decodeCounters(bytes: Uint8Array): RetryCounters {
  if (bytes.length !== COUNTERS_SIZE || bytes[0] !== LAYOUT_VERSION) {
    throw new VaultError('BAD_STATE', 'retry counter NV index has an unknown layout');
  }
  const flags = bytes[1]!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const c: RetryCounters = {
    pinIsDefault: (flags & FLAG_PIN_DEFAULT) !== 0,
    pukIsDefault: (flags & FLAG_PUK_DEFAULT) !== 0,
    hasPuk: (flags & FLAG_HAS_PUK) !== 0,
    pinTotal: bytes[2]!,
    pinRemaining: bytes[3]!,
    pukTotal: bytes[4]!,
    pukRemaining: bytes[5]!,
    pinGeneration: view.getUint32(GENERATION_OFFSET.pin),
    pukGeneration: view.getUint32(GENERATION_OFFSET.puk),
    managementGeneration: view.getUint32(GENERATION_OFFSET.management),
  };
  if (c.pinRemaining > c.pinTotal || c.pukRemaining > c.pukTotal) {
    throw new VaultError('BAD_STATE', 'retry counter NV index is inconsistent');
  }
  return c;
}

/** Valid retry totals: 1..255 (one byte in NV; PIV allows 1..255). */
export function checkTries(tries: number, what: string): void {
  if (!Number.isInteger(tries) || tries < 1 || tries > 255) {
    throw new VaultError('BAD_INPUT', `${what} tries must be an integer from 1 to 255`);
  }
}

/** Reads and writes one card's counter index; every access is authorised with nvAuth in a salted session. */
export class CounterIndex {
  constructor(
    private readonly tpm: Tpm,
    readonly nvIndex: number,
    private readonly nvAuth: Uint8Array,
  ) {}

  static async define(tpm: Tpm, nvIndex: number, nvAuth: Uint8Array, initial: RetryCounters, ownerAuth?: Uint8Array): Promise<CounterIndex> {
    await tpm.nvDefineSpace(
      {
        nvIndex,
        nameAlg: TPM_ALG.SHA256,
        attributes: TPMA_NV.AUTHWRITE | TPMA_NV.AUTHREAD | TPMA_NV.NO_DA,
        authPolicy: new Uint8Array(0),
        dataSize: COUNTERS_SIZE,
      },
      nvAuth,
      { hierarchy: TPM_RH.OWNER, auth: ownerAuth ?? new Uint8Array(0), session: 'salted' },
    );
    const index = new CounterIndex(tpm, nvIndex, nvAuth);
    await index.write(initial);
    return index;
  }

  async read(): Promise<RetryCounters> {
    let bytes: Uint8Array;
    try {
      bytes = await this.tpm.nvRead(this.nvIndex, COUNTERS_SIZE, 0, { auth: this.nvAuth, session: 'salted' });
    } catch (e) {
      // An index of another size (the 8-byte layout 1, the 16-byte layout 2) can't hold this layout.
      if (e instanceof TpmError && e.base === RC.NV_RANGE) throw new VaultError('BAD_STATE', 'retry counter NV index has an unknown layout', { cause: e });
      throw e;
    }
    return decodeCounters(bytes);
  }

  /** The index's name (its public area, WRITTEN set once defined): what PolicyNV binds to. */
  async name(): Promise<Uint8Array> {
    return (await this.tpm.nvReadPublic(this.nvIndex)).name;
  }

  /** The counter index's authValue, for PolicyNV (authorized like a read). */
  get authValue(): Uint8Array {
    return this.nvAuth;
  }

  async write(counters: RetryCounters): Promise<void> {
    await this.tpm.nvWrite(this.nvIndex, encodeCounters(counters), 0, { auth: this.nvAuth, session: 'salted' });
  }

  async undefine(ownerAuth?: Uint8Array): Promise<void> {
    await this.tpm.nvUndefineSpace(this.nvIndex, { hierarchy: TPM_RH.OWNER, auth: ownerAuth ?? new Uint8Array(0), session: 'salted' });
  }
}
