/**
 * GET DATA (SP 800-73-4 Part 2 §3.1.2): 00 CB 3F FF Lc 5C L <tag> [Le]
 *   -> 53 L <object>      (7E L <discovery object> for tag 7E)
 * Unknown or absent object: 6A82. PIN-protected object before VERIFY: 6982; after it the
 * vault opens the sealed object for this answer (sealed_objects.ts).
 */
import { DISCOVERY_TAG, findDataObject } from '../data_objects.js';
import { loadObject } from '../sealed_objects.js';
import { CardError, SW } from '../status_words.js';
import { expectSingleTlv, tlv } from '../tlv.js';
import { requireP1P2 } from './checks.js';
import type { Instruction } from './instruction.js';

/** Reads the object tag of a 5C tag list holding one tag of 1..3 bytes. */
export function parseTagList(data: Uint8Array): number {
  const tagBytes = expectSingleTlv(data, 0x5c);
  if (tagBytes.length < 1 || tagBytes.length > 3) throw new CardError(SW.WRONG_DATA, 'bad object tag');
  return tagBytes.reduce((tag, byte) => (tag << 8) | byte, 0);
}

export const getData: Instruction = {
  ins: 0xcb,
  name: 'GET DATA',
  readOnly: true,
  chainable: false,
  async handle(context) {
    const { apdu, state } = context;
    requireP1P2(apdu, 0x3f, 0xff);
    const tag = parseTagList(apdu.data);
    const spec = findDataObject(tag);
    if (!spec) throw new CardError(SW.FILE_NOT_FOUND, 'unknown object');
    if (spec.read === 'pin' && !context.vault.unlocked) throw new CardError(SW.SECURITY_STATUS_NOT_SATISFIED);
    const value = await loadObject(state, context.vault, tag);
    if (value === undefined) throw new CardError(SW.FILE_NOT_FOUND, 'object absent');
    try {
      return tlv(tag === DISCOVERY_TAG ? DISCOVERY_TAG : 0x53, value);
    } finally {
      value.fill(0);
    }
  },
};
