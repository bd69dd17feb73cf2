/**
 * Removes TPM-resident pieces of cards that no longer exist.
 *
 * A process killed in the middle of creating a card can leave its persistent card
 * parent and counter NV index in the TPM with no card file that refers to them (the
 * file is written last). The daemon calls this once at start, before it opens any
 * card, with the vault states of every card it has: anything in the vault's handle
 * blocks (tpm_handles.ts) that none of them references is debris and is removed.
 */
import { TPM_RH, type Tpm } from '../tpm/index.js';
import { CARD_PARENT_BASE, COUNTER_INDEX_BASE } from './tpm_handles.js';
import { parseVaultState } from './vault_state.js';
import type { TpmVaultOptions } from './tpm_vault.js';

const BLOCK = 0x100;

export interface SweepResult {
  evictedParents: number[];
  undefinedIndices: number[];
}

export async function sweepOrphans(tpm: Tpm, liveStates: readonly unknown[], options: TpmVaultOptions = {}): Promise<SweepResult> {
  const liveParents = new Set<number>();
  const liveIndices = new Set<number>();
  for (const saved of liveStates) {
    try {
      const state = parseVaultState(saved);
      liveParents.add(state.parent.handle);
      liveIndices.add(state.counters);
    } catch {
      // An unreadable state protects nothing; its card cannot open anyway.
    }
  }
  const ownerAuth = options.ownerAuth ?? new Uint8Array(0);
  const result: SweepResult = { evictedParents: [], undefinedIndices: [] };
  for (const handle of await tpm.getHandles(CARD_PARENT_BASE, BLOCK)) {
    if (handle >= CARD_PARENT_BASE + BLOCK || liveParents.has(handle)) continue;
    const { name } = await tpm.readPublic(handle);
    await tpm.evictControl({ handle, name }, handle, { hierarchy: TPM_RH.OWNER, auth: ownerAuth });
    result.evictedParents.push(handle);
  }
  for (const index of await tpm.getHandles(COUNTER_INDEX_BASE, BLOCK)) {
    if (index >= COUNTER_INDEX_BASE + BLOCK || liveIndices.has(index)) continue;
    await tpm.nvUndefineSpace(index, { hierarchy: TPM_RH.OWNER, auth: ownerAuth, session: 'salted' });
    result.undefinedIndices.push(index);
  }
  return result;
}
