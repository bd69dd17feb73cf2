/**
 * A small SmartCard answering from memory, for link tests and benchmarks. Records the
 * power events it sees.
 *
 *   00 CB 3F FF ...        GET DATA      -> 8 fixed bytes || 90 00
 *   80 E0 00 00 Lc data    ECHO          -> data || 90 00
 *   80 E1 HH LL            PATTERN       -> HHLL bytes (i & 0xFF) || 90 00
 *   shorter than 4 bytes                 -> 67 00 (as a card: wrong length)
 *   anything else                        -> 6D 00
 *
 * Short and extended APDU forms (ISO 7816-4 5.1) are both accepted.
 */
import type { SmartCard } from '../../common/smart_card.js';

/** A contact T=1 ATR: 3B 8A 81 31 FE 45 "VirtualPIV" TCK (TCK = XOR of T0..last historical byte). */
export const TEST_ATR: Uint8Array = (() => {
  const body = [0x8a, 0x81, 0x31, 0xfe, 0x45, ...Buffer.from('VirtualPIV', 'ascii')];
  const tck = body.reduce((x, b) => x ^ b, 0);
  return Uint8Array.from([0x3b, ...body, tck]);
})();

export const GET_DATA_ANSWER = Uint8Array.of(0x53, 0x06, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06);

export type PowerEvent = 'powerOn' | 'powerOff' | 'reset';

/** The data field of a command APDU (short or extended), or null when malformed. */
export function commandData(apdu: Uint8Array): Uint8Array | null {
  if (apdu.length < 4) return null;
  if (apdu.length <= 5) return new Uint8Array(0); // case 1 or short case 2
  if (apdu[4] !== 0) {
    const lc = apdu[4]!;
    return apdu.length >= 5 + lc ? apdu.subarray(5, 5 + lc) : null;
  }
  if (apdu.length === 7) return new Uint8Array(0); // extended case 2
  const lc = (apdu[5]! << 8) | apdu[6]!;
  return apdu.length >= 7 + lc ? apdu.subarray(7, 7 + lc) : null;
}

export class EchoCard implements SmartCard {
  readonly atr = TEST_ATR;
  readonly events: PowerEvent[] = [];
  commands = 0;
  /** Optional artificial delay of each transmit, in ms (to hold an APDU in flight). */
  delayMs = 0;

  powerOn(): void {
    this.events.push('powerOn');
  }

  powerOff(): void {
    this.events.push('powerOff');
  }

  reset(): void {
    this.events.push('reset');
  }

  async transmit(command: Uint8Array): Promise<Uint8Array> {
    this.commands++;
    if (this.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, this.delayMs));
    return this.answer(command);
  }

  /** The response to a command, synchronously. */
  answer(command: Uint8Array): Uint8Array {
    const ok = (data: Uint8Array) => {
      const response = new Uint8Array(data.length + 2);
      response.set(data);
      response.set([0x90, 0x00], data.length);
      return response;
    };
    if (command.length < 4) return Uint8Array.of(0x67, 0x00);
    const ins = command[1];
    if (ins === 0xcb) return ok(GET_DATA_ANSWER);
    if (ins === 0xe0) {
      const data = commandData(command);
      return data ? ok(data) : Uint8Array.of(0x67, 0x00);
    }
    if (ins === 0xe1 && command.length >= 4) {
      const length = (command[2]! << 8) | command[3]!;
      return ok(Uint8Array.from({ length }, (_, i) => i & 0xff));
    }
    return Uint8Array.of(0x6d, 0x00);
  }
}
