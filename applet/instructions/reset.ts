/**
 * RESET (Yubico extension): 00 FB 00 00. Allowed only when the PIN is blocked and the
 * PUK too (a card without a PUK: when the PIN is blocked); otherwise 6985.
 *
 * Afterwards: PIN 12345678, PUK 12345678 (if the card has one), management key
 * 3DES 0102030405060708 x3, every key gone, every object gone. The card keeps its
 * identity (serial, name, PIN policy, and for a /generate card the discovery
 * object, CHUID with the same GUID, CCC and an empty key history, as when new):
 * the Windows card it imitates is the same card after an unblock, and middleware
 * that keyed on the GUID keeps finding it.
 */
import { DEFAULT_MANAGEMENT_KEY } from '../algorithms.js';
import { factoryObjects } from '../provision.js';
import { CardError, SW } from '../status_words.js';
import { requireNoData, requireP1P2 } from './checks.js';
import type { Instruction } from './instruction.js';

/** Windows' DEFAULT PIN and PUK. */
export const DEFAULT_PIN = '12345678';
export const DEFAULT_PUK = '12345678';

export const reset: Instruction = {
  ins: 0xfb,
  name: 'RESET',
  readOnly: false,
  chainable: false,
  async handle(context) {
    const { apdu, vault, state, session } = context;
    requireP1P2(apdu, 0, 0);
    requireNoData(apdu);
    const pin = await vault.pinStatus();
    const puk = state.hasPuk ? await vault.pukStatus() : undefined;
    if (pin.remaining !== 0 || (puk !== undefined && puk.remaining !== 0)) {
      throw new CardError(SW.CONDITIONS_NOT_SATISFIED, 'PIN and PUK must be blocked');
    }
    const encoder = new TextEncoder();
    const managementKey = { algorithm: 'tdes' as const, key: Uint8Array.from(DEFAULT_MANAGEMENT_KEY) };
    await vault.resetCard(encoder.encode(DEFAULT_PIN), state.hasPuk ? encoder.encode(DEFAULT_PUK) : undefined, managementKey);
    managementKey.key.fill(0);
    session.clear();
    const draft = context.edit();
    draft.keys = {};
    draft.objects = factoryObjects(draft);
    draft.managementKeyAlgorithm = 'tdes';
  },
};
