/**
 * Command APDUs (ISO/IEC 7816-4 §5.1): parsing of the four cases in short and
 * extended form, and building of response APDUs.
 *
 *   case 1   CLA INS P1 P2
 *   case 2S  CLA INS P1 P2 Le                      Le 00 = 256
 *   case 3S  CLA INS P1 P2 Lc data                 Lc 01..FF
 *   case 4S  CLA INS P1 P2 Lc data Le
 *   case 2E  CLA INS P1 P2 00 Le1 Le2              Le 0000 = 65536
 *   case 3E  CLA INS P1 P2 00 Lc1 Lc2 data         Lc 0001..FFFF
 *   case 4E  CLA INS P1 P2 00 Lc1 Lc2 data Le1 Le2
 *
 * A case-3 command that carries a trailing Le (libykpiv, piv-go do) is case 4.
 * Any other length is malformed: 6700.
 */
import { CardError, SW, type StatusWord } from './status_words.js';

export interface CommandApdu {
  cla: number;
  ins: number;
  p1: number;
  p2: number;
  data: Uint8Array;
  /** Ne, the most response bytes the host accepts; undefined when no Le field was sent. */
  ne: number | undefined;
  /** Lc/Le were in extended form. */
  extended: boolean;
}

export function parseCommandApdu(bytes: Uint8Array): CommandApdu {
  if (bytes.length < 4) throw new CardError(SW.WRONG_LENGTH, 'APDU shorter than its header');
  if (bytes.length === 4) return command(bytes, new Uint8Array(0), undefined, false);
  const b4 = bytes[4]!;
  if (bytes.length === 5) return command(bytes, new Uint8Array(0), b4 === 0 ? 256 : b4, false);
  if (b4 !== 0) {
    // short Lc
    const lc = b4;
    if (bytes.length === 5 + lc) return command(bytes, bytes.slice(5), undefined, false);
    if (bytes.length === 6 + lc) {
      const le = bytes[5 + lc]!;
      return command(bytes, bytes.slice(5, 5 + lc), le === 0 ? 256 : le, false);
    }
    throw new CardError(SW.WRONG_LENGTH, 'Lc does not match the data');
  }
  // extended form: 00 then two bytes
  if (bytes.length === 6) throw new CardError(SW.WRONG_LENGTH, 'truncated extended length');
  const word = (bytes[5]! << 8) | bytes[6]!;
  if (bytes.length === 7) return command(bytes, new Uint8Array(0), word === 0 ? 65536 : word, true);
  if (word === 0) throw new CardError(SW.WRONG_LENGTH, 'extended Lc of zero');
  if (bytes.length === 7 + word) return command(bytes, bytes.slice(7), undefined, true);
  if (bytes.length === 9 + word) {
    const le = (bytes[7 + word]! << 8) | bytes[8 + word]!;
    return command(bytes, bytes.slice(7, 7 + word), le === 0 ? 65536 : le, true);
  }
  throw new CardError(SW.WRONG_LENGTH, 'extended Lc does not match the data');
}

/**
 * One object literal per command: no array destructuring of the bytes (it runs the typed
 * array's iterator) and no object spread (V8's clone path cost ~10 us a call on Node 20),
 * which were most of a GET DATA's time in the applet.
 */
function command(bytes: Uint8Array, data: Uint8Array, ne: number | undefined, extended: boolean): CommandApdu {
  return { cla: bytes[0]!, ins: bytes[1]!, p1: bytes[2]!, p2: bytes[3]!, data, ne, extended };
}

/** Serialises a command APDU (short form when it fits, as most hosts do). Used by tests and tools. */
export function encodeCommandApdu(apdu: Omit<CommandApdu, 'extended'> & { extended?: boolean }): Uint8Array {
  const header = [apdu.cla, apdu.ins, apdu.p1, apdu.p2];
  const extended = apdu.extended ?? (apdu.data.length > 255 || (apdu.ne ?? 0) > 256);
  const out: number[] = [...header];
  if (!extended) {
    if (apdu.data.length > 0) out.push(apdu.data.length, ...apdu.data);
    if (apdu.ne !== undefined) out.push(apdu.ne === 256 ? 0 : apdu.ne);
  } else {
    out.push(0);
    if (apdu.data.length > 0) out.push(apdu.data.length >> 8, apdu.data.length & 0xff, ...apdu.data);
    if (apdu.ne !== undefined) {
      const le = apdu.ne === 65536 ? 0 : apdu.ne;
      out.push(le >> 8, le & 0xff);
    }
  }
  return Uint8Array.from(out);
}

/** data || SW1 SW2 */
export function responseApdu(sw: StatusWord, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const out = new Uint8Array(data.length + 2);
  out.set(data, 0);
  out[data.length] = sw >> 8;
  out[data.length + 1] = sw & 0xff;
  return out;
}
