/**
 * VERIFY (SP 800-73-4 Part 2 §3.2.1; ISO 7816-4 §11.5.6)
 *   00 20 00 80 Lc PIN      PIN, padded with FF (1..127 bytes): 9000, 63Cx wrong, 6983 blocked
 *   00 20 00 80 [00]        status: 9000 verified, 63Cx not verified, 6983 blocked
 *   00 20 FF 80             log out (Yubico 5.4.3+ and SP 800-73-4): 9000
 * Key reference other than 80 (global PIN 00 included): 6A88.
 * A failed VERIFY also ends the verified state (as tokens do).
 */
import { PIN_REFERENCE } from '../key_slots.js';
import { checkFailure, PIN_MIN_LENGTH, stripPadding } from '../pin_input.js';
import { SECRET_MAX_LENGTH } from '../pin_policy.js';
import { CardError, SW, triesLeft } from '../status_words.js';
import type { Instruction } from './instruction.js';

export const verify: Instruction = {
  ins: 0x20,
  name: 'VERIFY',
  readOnly: false,
  chainable: false,
  async handle(context) {
    const { apdu, vault, session } = context;
    if (apdu.p1 !== 0x00 && apdu.p1 !== 0xff) throw new CardError(SW.INCORRECT_P1P2);
    if (apdu.p2 !== PIN_REFERENCE) throw new CardError(SW.REFERENCE_NOT_FOUND, 'only the PIV PIN (80)');
    if (apdu.p1 === 0xff) {
      if (apdu.data.length !== 0) throw new CardError(SW.WRONG_LENGTH);
      vault.lock();
      session.pinFreshForAlways = false;
      return;
    }
    if (apdu.data.length === 0) {
      if (vault.unlocked) return;
      const status = await vault.pinStatus();
      throw new CardError(status.remaining === 0 ? SW.AUTH_METHOD_BLOCKED : triesLeft(status.remaining));
    }
    if (apdu.data.length > SECRET_MAX_LENGTH) throw new CardError(SW.WRONG_DATA, 'PIN longer than 127 bytes');
    const pin = stripPadding(apdu.data);
    try {
      if (pin.length < PIN_MIN_LENGTH) throw new CardError(SW.WRONG_DATA, 'PIN shorter than 4 bytes');
      const result = await vault.verifyPin(pin);
      if (!result.ok) {
        vault.lock();
        session.pinFreshForAlways = false;
        throw checkFailure(result);
      }
      session.pinFreshForAlways = true;
      session.pinActivity = 'verified';
    } finally {
      pin.fill(0);
    }
  },
};
