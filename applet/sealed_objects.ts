/**
 * Data objects whose read rule is 'pin' (data_objects.ts: 5FC109, where ykman's `--protect`
 * keeps the management key, and the biometric objects) never rest in clear: the card state
 * holds only the vault's sealed form (PivCardState.sealedObjects, KeyVault.sealObject), which
 * only an unlocked vault (a correct VERIFY) can open. PUT DATA seals (the vault seals while
 * locked, since PUT DATA needs the management key, not the PIN); GET DATA after VERIFY opens
 * on every read, and keeps nothing in memory once the answer is out.
 *
 * Card states written before sealing existed keep such objects in clear in `objects`:
 * sealClearObjects moves them when the card is loaded (PivApplet.sealClearObjects).
 */
import { findDataObject, objectKey } from './data_objects.js';
import type { KeyVault } from './key_vault.js';
import type { PivCardState } from './piv_state.js';

/** True for the objects kept sealed: those only a verified PIN may read. */
export function isPinProtected(tag: number): boolean {
  return findDataObject(tag)?.read === 'pin';
}

/** Stores an object's new value (empty: deletes it), sealed when it is PIN-protected. */
export async function storeObject(draft: PivCardState, vault: KeyVault, tag: number, value: Uint8Array): Promise<void> {
  const key = objectKey(tag);
  delete draft.objects[key];
  delete draft.sealedObjects[key];
  if (value.length === 0) return;
  if (isPinProtected(tag)) draft.sealedObjects[key] = await vault.sealObject(tag, value);
  else draft.objects[key] = Buffer.from(value).toString('base64');
}

/** The value of an object, opened by the vault when sealed (the caller checked the PIN); undefined when absent. */
export async function loadObject(state: Readonly<PivCardState>, vault: KeyVault, tag: number): Promise<Uint8Array | undefined> {
  const key = objectKey(tag);
  const sealed = state.sealedObjects[key];
  if (sealed !== undefined) return vault.openObject(tag, sealed);
  const clear = state.objects[key];
  return clear === undefined ? undefined : new Uint8Array(Buffer.from(clear, 'base64'));
}

/** Seals the PIN-protected objects `draft` still holds in clear (an older card file); returns how many. */
export async function sealClearObjects(draft: PivCardState, vault: KeyVault): Promise<number> {
  let sealed = 0;
  for (const [key, clear] of Object.entries(draft.objects)) {
    const tag = parseInt(key, 16);
    if (!isPinProtected(tag)) continue;
    const value = new Uint8Array(Buffer.from(clear, 'base64'));
    try {
      await storeObject(draft, vault, tag, value);
    } finally {
      value.fill(0);
    }
    sealed++;
  }
  return sealed;
}
