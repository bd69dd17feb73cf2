/**
 * GET METADATA (Yubico 5.3+): 00 F7 00 <ref>
 *   PIN 80 / PUK 81:  01 01 FF  05 01 <is default>  06 02 <total> <remaining>
 *   management 9B:    01 01 <alg>  02 02 00 01  05 01 <is default>
 *   key slot:         01 01 <alg>  02 02 <PIN policy> <touch policy>  03 01 <origin 01 generated, 02 imported>
 *                     04 L <public key: 81 n 82 e | 86 point>
 * Empty slot, no PUK, or unknown reference (96 bio included): 6A88.
 */
import { ALG, DEFAULT_MANAGEMENT_KEY, keyAlgorithmId, managementAlgorithmId } from '../algorithms.js';
import { findKeySlot, MANAGEMENT_KEY_SLOT, PIN_POLICY_BYTE, PIN_REFERENCE, PUK_REFERENCE, slotKey } from '../key_slots.js';
import type { RetryStatus } from '../key_vault.js';
import { secretEquals } from '../management_crypto.js';
import { loadPublicKey } from '../piv_state.js';
import { publicKeyTlvs } from '../public_key_tlv.js';
import { CardError, SW } from '../status_words.js';
import { concatBytes, tlv } from '../tlv.js';
import { requireNoData } from './checks.js';
import type { Instruction } from './instruction.js';

const byte = (value: number): Uint8Array => Uint8Array.of(value);
const TOUCH_NEVER = 1;

function retryMetadata(status: RetryStatus): Uint8Array {
  return concatBytes(
    tlv(0x01, byte(ALG.PIN)),
    tlv(0x05, byte(status.isDefault ? 1 : 0)),
    tlv(0x06, Uint8Array.of(Math.min(status.total, 255), Math.min(status.remaining, 255))),
  );
}

export const getMetadata: Instruction = {
  ins: 0xf7,
  name: 'GET METADATA',
  readOnly: true,
  chainable: false,
  async handle({ apdu, vault, state }) {
    if (apdu.p1 !== 0x00) throw new CardError(SW.INCORRECT_P1P2);
    requireNoData(apdu);
    const ref = apdu.p2;
    if (ref === PIN_REFERENCE) return retryMetadata(await vault.pinStatus());
    if (ref === PUK_REFERENCE) {
      const status = state.hasPuk ? await vault.pukStatus() : undefined;
      if (!status) throw new CardError(SW.REFERENCE_NOT_FOUND, 'the card has no PUK');
      return retryMetadata(status);
    }
    if (ref === MANAGEMENT_KEY_SLOT) {
      const key = await vault.managementKey();
      try {
        const isDefault = key.algorithm === 'tdes' && secretEquals(key.key, Uint8Array.from(DEFAULT_MANAGEMENT_KEY));
        return concatBytes(
          tlv(0x01, byte(managementAlgorithmId(key.algorithm))),
          tlv(0x02, Uint8Array.of(0x00, TOUCH_NEVER)),
          tlv(0x05, byte(isDefault ? 1 : 0)),
        );
      } finally {
        key.key.fill(0);
      }
    }
    const stored = findKeySlot(ref) ? state.keys[slotKey(ref)] : undefined;
    if (!stored) throw new CardError(SW.REFERENCE_NOT_FOUND, 'no key in that slot');
    return concatBytes(
      tlv(0x01, byte(keyAlgorithmId(stored.algorithm))),
      tlv(0x02, Uint8Array.of(PIN_POLICY_BYTE[stored.pinPolicy], stored.touchPolicy === 0 ? TOUCH_NEVER : stored.touchPolicy)),
      tlv(0x03, byte(stored.origin === 'generated' ? 1 : 2)),
      tlv(0x04, publicKeyTlvs(loadPublicKey(stored.publicKey))),
    );
  },
};
