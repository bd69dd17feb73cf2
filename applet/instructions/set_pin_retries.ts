/**
 * SET PIN RETRIES (Yubico extension): 00 FA <PIN tries> <PUK tries>, each 1..255.
 * Needs management-key authentication and a verified PIN (6982). PIN and PUK go
 * back to their defaults (12345678; no PUK on a card without one) with full
 * counters; the PIN policy does not apply to these defaults. The PIN must be
 * verified again afterwards.
 */
import { CardError, SW } from '../status_words.js';
import { requireAdmin, requireNoData, requirePin } from './checks.js';
import type { Instruction } from './instruction.js';
import { DEFAULT_PIN, DEFAULT_PUK } from './reset.js';

export const setPinRetries: Instruction = {
  ins: 0xfa,
  name: 'SET PIN RETRIES',
  readOnly: false,
  chainable: false,
  async handle(context) {
    const { apdu, vault, state, session } = context;
    if (apdu.p1 === 0 || apdu.p2 === 0) throw new CardError(SW.INCORRECT_P1P2, 'tries must be 1..255');
    requireNoData(apdu);
    requireAdmin(context);
    requirePin(context);
    const encoder = new TextEncoder();
    await vault.setRetries(apdu.p1, apdu.p2, encoder.encode(DEFAULT_PIN), state.hasPuk ? encoder.encode(DEFAULT_PUK) : undefined);
    vault.lock();
    session.pinFreshForAlways = false;
  },
};
