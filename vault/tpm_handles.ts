/**
 * Where the vault puts its TPM-resident pieces: one persistent card parent and one NV
 * index per card, each in a 256-handle block of the owner's ranges (persistent
 * 0x81000000..0x817FFFFF, NV 0x01000000..0x013FFFFF) chosen to avoid the well-known
 * SRK (0x81000001), EK (0x8101xxxx) and EK-certificate (0x01C0xxxx) handles.
 */
import { type Tpm } from '../tpm/index.js';
import { VaultError } from './vault_error.js';

export const CARD_PARENT_BASE = 0x81156300;
export const COUNTER_INDEX_BASE = 0x01156300;
const BLOCK = 0x100;

/** The first handle of the block that the TPM does not use yet. */
export async function findFreeHandle(tpm: Tpm, base: number, skip: ReadonlySet<number> = new Set()): Promise<number> {
  const used = new Set(await tpm.getHandles(base, BLOCK));
  for (let handle = base; handle < base + BLOCK; handle++) {
    if (!used.has(handle) && !skip.has(handle)) return handle;
  }
  throw new VaultError('TPM', `no free TPM handle left in 0x${base.toString(16)}..0x${(base + BLOCK - 1).toString(16)}`);
}
