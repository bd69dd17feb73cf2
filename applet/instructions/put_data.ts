/**
 * PUT DATA (SP 800-73-4 Part 2 §3.2.1): 00 DB 3F FF Lc 5C L <tag> 53 L <object>
 * Needs management-key authentication. 53 00 deletes the object. Objects of up to
 * MAX_OBJECT_BYTES; larger: 6A84. The discovery object is fixed: 6A80. PIN-protected
 * objects are stored sealed by the vault (sealed_objects.ts).
 * Writing or deleting a retired certificate keeps the key history's C1 in step.
 */
import { findDataObject, KEY_HISTORY_TAG, MAX_OBJECT_BYTES, RETIRED_CERT_COUNT, RETIRED_CERT_FIRST } from '../data_objects.js';
import { syncKeyHistory } from '../key_history.js';
import { storeObject } from '../sealed_objects.js';
import { CardError, SW } from '../status_words.js';
import { readTlv } from '../tlv.js';
import { requireAdmin, requireP1P2 } from './checks.js';
import { parseTagList } from './get_data.js';
import type { Instruction } from './instruction.js';

export const putData: Instruction = {
  ins: 0xdb,
  name: 'PUT DATA',
  readOnly: false,
  chainable: true,
  async handle(context) {
    const { apdu } = context;
    requireP1P2(apdu, 0x3f, 0xff);
    requireAdmin(context);
    const tagList = readTlv(apdu.data, 0);
    const tag = parseTagList(apdu.data.subarray(0, tagList.end));
    const body = readTlv(apdu.data, tagList.end);
    if (body.tag !== 0x53 || body.end !== apdu.data.length) throw new CardError(SW.WRONG_DATA, 'expected 53 after 5C');
    const spec = findDataObject(tag);
    if (!spec || !spec.writable) throw new CardError(SW.WRONG_DATA, 'object cannot be written');
    if (body.value.length > MAX_OBJECT_BYTES) throw new CardError(SW.NOT_ENOUGH_MEMORY, 'object too large');
    const draft = context.edit();
    await storeObject(draft, context.vault, tag, body.value);
    const retired = tag >= RETIRED_CERT_FIRST && tag < RETIRED_CERT_FIRST + RETIRED_CERT_COUNT;
    if (retired || tag === KEY_HISTORY_TAG) syncKeyHistory(draft.objects);
  },
};
