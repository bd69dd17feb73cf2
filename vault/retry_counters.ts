/**
 * The card's PIN and PUK retry counters, kept in one ordinary TPM NV index per card so
 * that restoring old files cannot roll them back. An NV write is durable when the TPM
 * answers, which is what "decrement before the check" relies on.
 *
 * NV index: 8 bytes, attributes AUTHWRITE | AUTHREAD | NO_DA, authValue = nvAuth (a
 * high-entropy value only the vault derives), created under the owner hierarchy.
 *
 *   byte 0  layout version (1)
 *   byte 1  flags: bit0 PIN is default, bit1 PUK is default, bit2 card has a PUK
 *   byte 2  PIN tries total      byte 3  PIN tries remaining
 *   byte 4  PUK tries total      byte 5  PUK tries remaining
 *   byte 6..7 reserved (0)
 */
import { TPM_ALG, TPMA_NV, TPM_RH, type Tpm } from '../tpm/index.js';
import { VaultError } from './vault_error.js';

export const COUNTERS_SIZE = 8;
const LAYOUT_VERSION = 1;
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
}

export function encodeCounters(c: RetryCounters): Uint8Array {
  const flags = (c.pinIsDefault ? FLAG_PIN_DEFAULT : 0) | (c.pukIsDefault ? FLAG_PUK_DEFAULT : 0) | (c.hasPuk ? FLAG_HAS_PUK : 0);
  return Uint8Array.of(LAYOUT_VERSION, flags, c.pinTotal, c.pinRemaining, c.pukTotal, c.pukRemaining, 0, 0);
}

export function decodeCounters(bytes: Uint8Array): RetryCounters {
  if (bytes.length !== COUNTERS_SIZE || bytes[0] !== LAYOUT_VERSION) {
    throw new VaultError('BAD_STATE', 'retry counter NV index has an unknown layout');
  }
  const flags = bytes[1]!;
  const c: RetryCounters = {
    pinIsDefault: (flags & FLAG_PIN_DEFAULT) !== 0,
    pukIsDefault: (flags & FLAG_PUK_DEFAULT) !== 0,
    hasPuk: (flags & FLAG_HAS_PUK) !== 0,
    pinTotal: bytes[2]!,
    pinRemaining: bytes[3]!,
    pukTotal: bytes[4]!,
    pukRemaining: bytes[5]!,
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
    const bytes = await this.tpm.nvRead(this.nvIndex, COUNTERS_SIZE, 0, { auth: this.nvAuth, session: 'salted' });
    return decodeCounters(bytes);
  }

  async write(counters: RetryCounters): Promise<void> {
    await this.tpm.nvWrite(this.nvIndex, encodeCounters(counters), 0, { auth: this.nvAuth, session: 'salted' });
  }

  async undefine(ownerAuth?: Uint8Array): Promise<void> {
    await this.tpm.nvUndefineSpace(this.nvIndex, { hierarchy: TPM_RH.OWNER, auth: ownerAuth ?? new Uint8Array(0), session: 'salted' });
  }
}
