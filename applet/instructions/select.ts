/**
 * SELECT (ISO 7816-4 §11.2.2; SP 800-73-4 Part 2 §3.1.1): 00 A4 04 00 Lc AID [Le].
 * Any prefix of the PIV AID of 5 bytes or more selects PIV (A0 00 00 03 08 for
 * libykpiv/ykman, 9 bytes for OpenSC, 11 for pivy). Other AIDs: 6A82 and PIV stays
 * selected (PIV is the only application and is selected from power-on).
 * SELECT keeps the security state: OpenSC re-selects at every transaction.
 *
 * Answer: application property template
 *   61 L
 *     4F 06 00 00 10 00 01 00        PIX of the application + version
 *     79 07 4F 05 A0 00 00 03 08     coexistent tag allocation authority: NIST RID
 *     50 L label
 *     AC L 80 01 <alg> ... 06 01 00  every supported algorithm (SP 800-78 ids)
 */
import { SUPPORTED_ALGORITHM_IDS } from '../algorithms.js';
import { PIV_AID } from '../provision.js';
import { CardError, SW } from '../status_words.js';
import { concatBytes, tlv } from '../tlv.js';
import type { Instruction } from './instruction.js';

const MIN_AID_PREFIX = 5;
export const APPLICATION_LABEL = 'TPM Virtual Smart Card';

export function applicationPropertyTemplate(): Uint8Array {
  return tlv(
    0x61,
    tlv(0x4f, PIV_AID.subarray(5)),
    tlv(0x79, tlv(0x4f, PIV_AID.subarray(0, 5))),
    tlv(0x50, new TextEncoder().encode(APPLICATION_LABEL)),
    tlv(0xac, ...SUPPORTED_ALGORITHM_IDS.map((id) => tlv(0x80, Uint8Array.of(id))), tlv(0x06, Uint8Array.of(0))),
  );
}

function isPivAid(aid: Uint8Array): boolean {
  return aid.length >= MIN_AID_PREFIX && aid.length <= PIV_AID.length && aid.every((byte, i) => byte === PIV_AID[i]);
}

export const select: Instruction = {
  ins: 0xa4,
  name: 'SELECT',
  readOnly: true,
  chainable: false,
  async handle({ apdu }) {
    if (apdu.p1 !== 0x04 || (apdu.p2 !== 0x00 && apdu.p2 !== 0x0c)) throw new CardError(SW.INCORRECT_P1P2);
    if (!isPivAid(apdu.data)) throw new CardError(SW.FILE_NOT_FOUND, 'no such application');
    // P2 0C: "no response data requested"
    return apdu.p2 === 0x0c ? undefined : concatBytes(applicationPropertyTemplate());
  },
};
