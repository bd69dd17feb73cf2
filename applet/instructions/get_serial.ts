/** GET SERIAL (Yubico extension): 00 F8 00 00 -> 4 bytes, big-endian, from the card state. */
import { requireNoData, requireP1P2 } from './checks.js';
import type { Instruction } from './instruction.js';

export const getSerial: Instruction = {
  ins: 0xf8,
  name: 'GET SERIAL',
  readOnly: true,
  chainable: false,
  async handle({ apdu, state }) {
    requireP1P2(apdu, 0, 0);
    requireNoData(apdu);
    const out = new Uint8Array(4);
    new DataView(out.buffer).setUint32(0, state.serial);
    return out;
  },
};
