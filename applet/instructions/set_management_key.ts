/**
 * SET MANAGEMENT KEY (Yubico extension): 00 FF FF <FF|FE> Lc <alg> 9B <len> <key>
 *   alg 03 3DES (24 bytes), 08 AES-128 (16), 0A AES-192 (24), 0C AES-256 (32).
 * P2 FE asks for touch, which has no meaning here and is accepted.
 * Needs management-key authentication (6982); bad layout or length: 6A80.
 */
import { managementAlgorithmFromId, managementKeyLength } from '../algorithms.js';
import { MANAGEMENT_KEY_SLOT } from '../key_slots.js';
import type { ManagementKey } from '../key_vault.js';
import { CardError, SW } from '../status_words.js';
import { requireAdmin } from './checks.js';
import type { Instruction } from './instruction.js';

export const setManagementKey: Instruction = {
  ins: 0xff,
  name: 'SET MANAGEMENT KEY',
  readOnly: false,
  chainable: false,
  async handle(context) {
    const { apdu, vault } = context;
    if (apdu.p1 !== 0xff || (apdu.p2 !== 0xff && apdu.p2 !== 0xfe)) throw new CardError(SW.INCORRECT_P1P2);
    requireAdmin(context);
    const data = apdu.data;
    const algorithm = data.length >= 3 && data[0] !== 0 ? managementAlgorithmFromId(data[0]!) : undefined;
    if (!algorithm || data[1] !== MANAGEMENT_KEY_SLOT) throw new CardError(SW.WRONG_DATA, 'expected <alg> 9B <len> <key>');
    const length = managementKeyLength(algorithm);
    if (data[2] !== length || data.length !== 3 + length) throw new CardError(SW.WRONG_DATA, 'wrong key length');
    const previous: ManagementKey = await vault.managementKey();
    const next: ManagementKey = { algorithm, key: data.slice(3) };
    try {
      await vault.setManagementKey(next);
    } catch (error) {
      previous.key.fill(0);
      throw error;
    } finally {
      next.key.fill(0);
      data.fill(0);
    }
    // If the new state cannot be saved, the vault gets the old key back.
    context.onRollback(async () => {
      try {
        await vault.setManagementKey(previous);
      } finally {
        previous.key.fill(0);
      }
    });
    context.afterCommit(async () => {
      previous.key.fill(0);
    });
    context.edit().managementKeyAlgorithm = algorithm;
  },
};
