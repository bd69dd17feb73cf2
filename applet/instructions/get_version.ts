/**
 * GET VERSION (Yubico extension): 00 FD 00 00 -> 3 bytes major minor patch.
 *
 * 5.4.3 is what this card implements: >= 5.3 makes clients use GET METADATA,
 * >= 5.4.3 lets them log out with VERIFY FF 80, >= 4.0 makes ykman use extended
 * APDUs (supported), >= 4.3.5 avoids the ROCA warning; staying below 5.7 keeps
 * clients from expecting RSA 3072/4096, Ed25519/X25519, MOVE/DELETE KEY and an
 * AES-192 default management key, none of which this card has.
 */
import { requireNoData, requireP1P2 } from './checks.js';
import type { Instruction } from './instruction.js';

export const FIRMWARE_VERSION = Uint8Array.of(5, 4, 3);

export const getVersion: Instruction = {
  ins: 0xfd,
  name: 'GET VERSION',
  readOnly: true,
  chainable: false,
  async handle({ apdu }) {
    requireP1P2(apdu, 0, 0);
    requireNoData(apdu);
    return FIRMWARE_VERSION.slice();
  },
};
