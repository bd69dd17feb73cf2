/**
 * What GENERATE and IMPORT share: the target slot, the PIN/touch policy overrides
 * (AA, AB) and putting the new key in place.
 *
 * PIN policy AA: 00 slot default, 01 never, 02 once, 03 always -> vault
 * authorization 'none' for never, 'pin' otherwise. Touch policy AB is stored and
 * reported (there is no touch sensor): 00 default, 01 never, 02 always, 03 cached.
 */
import { findKeySlot, pinPolicyFromByte, slotKey, type SlotPinPolicy } from '../key_slots.js';
import type { KeyAuthorization, KeyRecord } from '../key_vault.js';
import { loadKey, storeKey } from '../piv_state.js';
import { CardError, SW } from '../status_words.js';
import type { InstructionContext } from './instruction.js';

export interface KeyPolicies {
  pinPolicy: SlotPinPolicy;
  touchPolicy: number;
  authorization: KeyAuthorization;
}

/** The slot of P2 must hold private keys (not 9B): 6A86 otherwise. */
export function requireKeySlot(slot: number): void {
  if (!findKeySlot(slot)) throw new CardError(SW.INCORRECT_P1P2, 'not a key slot');
}

export function readPolicies(slot: number, pinByte: Uint8Array | undefined, touchByte: Uint8Array | undefined): KeyPolicies {
  const spec = findKeySlot(slot)!;
  let pinPolicy = spec.defaultPinPolicy;
  if (pinByte !== undefined) {
    if (pinByte.length !== 1) throw new CardError(SW.WRONG_DATA, 'bad PIN policy');
    if (pinByte[0] !== 0) {
      const chosen = pinPolicyFromByte(pinByte[0]!);
      if (!chosen) throw new CardError(SW.WRONG_DATA, 'bad PIN policy');
      pinPolicy = chosen;
    }
  }
  let touchPolicy = 0;
  if (touchByte !== undefined) {
    if (touchByte.length !== 1 || touchByte[0]! > 3) throw new CardError(SW.WRONG_DATA, 'bad touch policy');
    touchPolicy = touchByte[0]!;
  }
  return { pinPolicy, touchPolicy, authorization: pinPolicy === 'never' ? 'none' : 'pin' };
}

/**
 * Puts a key the vault just created into the slot: forgotten by the vault again if
 * the command fails, and the slot's old key forgotten once the new state is saved.
 */
export function installKey(context: InstructionContext, slot: number, record: KeyRecord, policies: KeyPolicies): void {
  const { vault } = context;
  context.onRollback(() => vault.deleteKey(record));
  const previous = context.state.keys[slotKey(slot)];
  if (previous) {
    const old = loadKey(previous);
    context.afterCommit(() => vault.deleteKey(old));
  }
  context.edit().keys[slotKey(slot)] = storeKey(record, policies.pinPolicy, policies.touchPolicy);
}
