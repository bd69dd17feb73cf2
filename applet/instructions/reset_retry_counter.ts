/**
 * RESET RETRY COUNTER (SP 800-73-4 Part 2 §3.2.3): 00 2C 00 80 Lc data
 *   card with a PUK:     data = PUK || new PIN, padded with FF to the same length;
 *                        wrong PUK 63Cx, blocked 6983. The management key cannot
 *                        unblock such a card (Windows semantics).
 *   card without a PUK:  data = the new PIN alone (FF padding allowed), accepted only
 *                        after management-key (9B) authentication in this session
 *                        (Windows' challenge/response unblock); 6982 without it.
 * The new PIN must satisfy the card's PIN policy: 6A80.
 */
import { PIN_REFERENCE } from '../key_slots.js';
import { checkFailure, PIN_MIN_LENGTH, splitPaddedPair, stripPadding } from '../pin_input.js';
import { assertNewPinAllowed, SECRET_MAX_LENGTH } from '../pin_policy.js';
import { CardError, SW } from '../status_words.js';
import { requireAdmin } from './checks.js';
import type { Instruction } from './instruction.js';

export const resetRetryCounter: Instruction = {
  ins: 0x2c,
  name: 'RESET RETRY COUNTER',
  readOnly: false,
  chainable: false,
  async handle(context) {
    const { apdu, vault, state } = context;
    if (apdu.p1 !== 0x00) throw new CardError(SW.INCORRECT_P1P2);
    if (apdu.p2 !== PIN_REFERENCE) throw new CardError(SW.REFERENCE_NOT_FOUND);
    if (state.hasPuk) {
      const [puk, newPin] = splitPaddedPair(apdu.data);
      try {
        assertNewPinAllowed(newPin, state.pinPolicy);
        const result = await vault.unblockPinWithPuk(puk, newPin);
        if (!result.ok) throw checkFailure(result);
      } finally {
        puk.fill(0);
        newPin.fill(0);
      }
      return;
    }
    requireAdmin(context);
    if (apdu.data.length > SECRET_MAX_LENGTH) throw new CardError(SW.WRONG_DATA, 'PIN longer than 127 bytes');
    const newPin = stripPadding(apdu.data);
    try {
      if (newPin.length < PIN_MIN_LENGTH) throw new CardError(SW.WRONG_DATA, 'PIN shorter than 4 bytes');
      assertNewPinAllowed(newPin, state.pinPolicy);
      await vault.unblockPinWithAdmin(newPin);
    } finally {
      newPin.fill(0);
    }
  },
};
