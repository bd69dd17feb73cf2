/**
 * ATTEST (Yubico extension): 00 F9 <slot> 00 -> DER X.509 certificate of the slot's key.
 * No attestor configured, or none available (RESET removes the attestation key): 6A81
 * (function not supported). Empty slot: 6A88.
 * Imported key: 6A80 (tokens only attest keys generated on the card).
 */
import { findKeySlot, slotKey } from '../key_slots.js';
import { loadKey } from '../piv_state.js';
import { CardError, SW } from '../status_words.js';
import { requireNoData } from './checks.js';
import type { Instruction } from './instruction.js';

export const attest: Instruction = {
  ins: 0xf9,
  name: 'ATTEST',
  readOnly: true,
  chainable: false,
  async handle({ apdu, state, attestor }) {
    if (!attestor || attestor.available?.() === false) {
      throw new CardError(SW.FUNCTION_NOT_SUPPORTED, 'attestation is not configured');
    }
    if (apdu.p2 !== 0x00 || !findKeySlot(apdu.p1)) throw new CardError(SW.INCORRECT_P1P2);
    requireNoData(apdu);
    const stored = state.keys[slotKey(apdu.p1)];
    if (!stored) throw new CardError(SW.REFERENCE_NOT_FOUND, 'no key in that slot');
    if (stored.origin !== 'generated') throw new CardError(SW.WRONG_DATA, 'imported keys cannot be attested');
    const certificate = await attestor.attest({
      slot: apdu.p1,
      key: loadKey(stored),
      pinPolicy: stored.pinPolicy,
      touchPolicy: stored.touchPolicy,
      serial: state.serial,
    });
    return certificate;
  },
};
