/**
 * IMPORT ASYMMETRIC KEY (Yubico extension): 00 FE <alg> <slot> Lc data
 *   RSA 2048 (07): 01 L p  02 L q  03 L dp  04 L dq  05 L qinv   (each <= 128 bytes)
 *   EC (11, 14):   06 L d                                          (<= field size)
 *   optional:      AA 01 <PIN policy>  AB 01 <touch policy>
 * Values shorter than their size are left-padded with zeros. Needs management-key
 * authentication (6982). Other algorithms (RSA 1024 included): 6A80.
 */
import { ecFieldBytes, keyAlgorithmFromId } from '../algorithms.js';
import type { ImportedKey } from '../key_vault.js';
import { CardError, SW } from '../status_words.js';
import { decodeTlvs, findTlv } from '../tlv.js';
import { requireAdmin } from './checks.js';
import type { Instruction } from './instruction.js';
import { installKey, readPolicies, requireKeySlot } from './key_slot_write.js';

function fixed(value: Uint8Array | undefined, size: number): Uint8Array {
  if (!value || value.length === 0 || value.length > size) throw new CardError(SW.WRONG_DATA, 'bad key component');
  const out = new Uint8Array(size);
  out.set(value, size - value.length);
  return out;
}

export const importKey: Instruction = {
  ins: 0xfe,
  name: 'IMPORT ASYMMETRIC KEY',
  readOnly: false,
  chainable: true,
  async handle(context) {
    const { apdu, vault } = context;
    requireKeySlot(apdu.p2);
    requireAdmin(context);
    const algorithm = keyAlgorithmFromId(apdu.p1);
    if (!algorithm) throw new CardError(SW.WRONG_DATA, 'unsupported algorithm');
    const items = decodeTlvs(apdu.data);
    const allowed = algorithm === 'rsa2048' ? [1, 2, 3, 4, 5, 0xaa, 0xab] : [6, 0xaa, 0xab];
    if (items.some((item) => !allowed.includes(item.tag))) throw new CardError(SW.WRONG_DATA, 'unexpected key component');
    const policies = readPolicies(apdu.p2, findTlv(items, 0xaa), findTlv(items, 0xab));
    let key: ImportedKey;
    if (algorithm === 'rsa2048') {
      const part = (tag: number): Uint8Array => fixed(findTlv(items, tag), 128);
      key = { algorithm, p: part(1), q: part(2), dp: part(3), dq: part(4), qinv: part(5) };
    } else {
      key = { algorithm, d: fixed(findTlv(items, 6), ecFieldBytes(algorithm)) };
    }
    try {
      const record = await vault.importKey(key, policies.authorization);
      installKey(context, apdu.p2, record, policies);
    } catch (error) {
      // The vault rejects keys that are not valid (d out of range, p*q not 2048 bits...).
      if (error instanceof CardError) throw error;
      if (error instanceof RangeError || error instanceof TypeError) throw new CardError(SW.WRONG_DATA, 'invalid key');
      throw error;
    } finally {
      for (const value of Object.values(key)) if (value instanceof Uint8Array) value.fill(0);
    }
  },
};
