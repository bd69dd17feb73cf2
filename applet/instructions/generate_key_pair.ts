/**
 * GENERATE ASYMMETRIC KEY PAIR (SP 800-73-4 Part 2 §3.3.2):
 *   00 47 00 <slot> Lc AC L { 80 01 <alg> [AA 01 <PIN policy>] [AB 01 <touch policy>] }
 *   -> 7F49 L { 81 L n  82 L e }        RSA 2048 (07)
 *   -> 7F49 L { 86 L 04||X||Y }         P-256 (11), P-384 (14)
 * Needs management-key authentication (6982). Unsupported algorithm: 6A80.
 */
import { keyAlgorithmFromId } from '../algorithms.js';
import { publicKeyTemplate } from '../public_key_tlv.js';
import { CardError, SW } from '../status_words.js';
import { decodeTlvs, expectSingleTlv, findTlv } from '../tlv.js';
import { requireAdmin } from './checks.js';
import type { Instruction } from './instruction.js';
import { installKey, readPolicies, requireKeySlot } from './key_slot_write.js';

export const generateKeyPair: Instruction = {
  ins: 0x47,
  name: 'GENERATE ASYMMETRIC KEY PAIR',
  readOnly: false,
  chainable: false,
  async handle(context) {
    const { apdu, vault } = context;
    if (apdu.p1 !== 0x00) throw new CardError(SW.INCORRECT_P1P2);
    requireKeySlot(apdu.p2);
    requireAdmin(context);
    const items = decodeTlvs(expectSingleTlv(apdu.data, 0xac));
    if (items.some((item) => ![0x80, 0xaa, 0xab].includes(item.tag))) throw new CardError(SW.WRONG_DATA, 'unexpected item in AC');
    const algorithmId = findTlv(items, 0x80);
    if (algorithmId?.length !== 1) throw new CardError(SW.WRONG_DATA, 'missing algorithm');
    const algorithm = keyAlgorithmFromId(algorithmId[0]!);
    if (!algorithm) throw new CardError(SW.WRONG_DATA, 'unsupported algorithm');
    const policies = readPolicies(apdu.p2, findTlv(items, 0xaa), findTlv(items, 0xab));
    const record = await vault.generateKey(algorithm, policies.authorization);
    installKey(context, apdu.p2, record, policies);
    return publicKeyTemplate(record.publicKey);
  },
};
