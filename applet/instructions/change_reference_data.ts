/**
 * CHANGE REFERENCE DATA (SP 800-73-4 Part 2 §3.2.2): 00 24 00 80|81 Lc old || new
 * Both values padded with FF to the same length (8 for PIV; see pin_input.ts).
 * The new PIN must satisfy the card's PIN policy and a new PUK 8..127 printable
 * characters (6A80, no try counted). 81 on a card without a PUK: 6A88.
 */
import { PIN_REFERENCE, PUK_REFERENCE } from '../key_slots.js';
import { checkFailure, splitPaddedPair } from '../pin_input.js';
import { assertNewPinAllowed, assertNewPukAllowed } from '../pin_policy.js';
import { CardError, SW } from '../status_words.js';
import type { Instruction } from './instruction.js';

export const changeReferenceData: Instruction = {
  ins: 0x24,
  name: 'CHANGE REFERENCE DATA',
  readOnly: false,
  chainable: false,
  async handle(context) {
    const { apdu, vault, state } = context;
    if (apdu.p1 !== 0x00) throw new CardError(SW.INCORRECT_P1P2);
    const isPin = apdu.p2 === PIN_REFERENCE;
    if (!isPin && !(apdu.p2 === PUK_REFERENCE && state.hasPuk)) throw new CardError(SW.REFERENCE_NOT_FOUND);
    const [oldValue, newValue] = splitPaddedPair(apdu.data);
    let keepForRollback = false;
    try {
      if (isPin) assertNewPinAllowed(newValue, state.pinPolicy);
      else assertNewPukAllowed(newValue);
      const result = isPin ? await vault.changePin(oldValue, newValue) : await vault.changePuk(oldValue, newValue);
      if (!result.ok) throw checkFailure(result);
      // If the new state cannot be saved, put the old value back so card and vault agree.
      keepForRollback = true;
      context.onRollback(async () => {
        try {
          await (isPin ? vault.changePin(newValue, oldValue) : vault.changePuk(newValue, oldValue));
        } finally {
          oldValue.fill(0);
          newValue.fill(0);
        }
      });
      context.afterCommit(async () => {
        oldValue.fill(0);
        newValue.fill(0);
      });
    } finally {
      if (!keepForRollback) {
        oldValue.fill(0);
        newValue.fill(0);
      }
    }
  },
};
