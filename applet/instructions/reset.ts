/**
 * RESET (Yubico extension): 00 FB 00 00. Allowed only
 *   1. after management-key (9B) authentication in this card session (lost at power off,
 *      power on and reset): otherwise 6982, and the refusal is reported (audit), and
 *   2. when the PIN is blocked and the PUK too (a card without a PUK: when the PIN is
 *      blocked; its admin key could unblock the PIN instead): otherwise 6985.
 * On a YubiKey blocked codes are enough. Here every local account reaches the card
 * through pcscd and can block both codes with wrong guesses: without 1 that would wipe
 * the owner's keys. The 9B check comes first, so an unauthenticated caller learns
 * nothing of the codes' state and the counters are not even read.
 *
 * Afterwards: PIN 12345678, PUK 12345678 (if the card has one), management key
 * 3DES 0102030405060708 x3, every key gone, every object gone (the sealed ones too:
 * the vault's new wrap key could not open them anyway). The card keeps its
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
    if (!session.adminAuthenticated) {
      throw new CardError(SW.SECURITY_STATUS_NOT_SATISFIED, 'RESET needs the management key (9B) authenticated in this card session', { audit: true });
    }
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
    draft.sealedObjects = {};
    draft.managementKeyAlgorithm = 'tdes';
  },
};
