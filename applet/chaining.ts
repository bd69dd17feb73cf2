/**
 * Command chaining and response chaining (ISO/IEC 7816-4 §5.1.1.1 and §5.3.4).
 *
 * Command chaining: a long command arrives as parts with CLA bit 0x10 set, the last
 * part with it clear. Every part but the last is answered 9000 and only the whole
 * command is executed. A command with another INS/P1/P2 abandons a pending chain.
 *
 * Response chaining: when the response is longer than the host's short Ne, the card
 * sends the first Ne bytes with 61xx (xx = bytes left, 00 = 256 or more) and the host
 * fetches the rest with GET RESPONSE (00 C0 00 00 Le). Any other command discards
 * the rest. An extended Ne gets the whole response at once.
 */
import type { CommandApdu } from './apdu.js';
import { responseApdu } from './apdu.js';
import { concatBytes } from './tlv.js';
import { CardError, moreData, SW, type StatusWord } from './status_words.js';

export const CLA_CHAIN_BIT = 0x10;

/** The most command data the card takes in one command (chained or extended). */
export const MAX_COMMAND_DATA = 8192;

interface PendingChain {
  ins: number;
  p1: number;
  p2: number;
  parts: Uint8Array[];
  size: number;
  extended: boolean;
}

export class CommandChain {
  private pending: PendingChain | undefined;

  get active(): boolean {
    return this.pending !== undefined;
  }

  /**
   * Takes one part. Returns the whole command once its last part has arrived, or
   * undefined when more parts are expected (the caller answers 9000).
   * Throws 6700 (and forgets the chain) when the chain grows past MAX_COMMAND_DATA.
   */
  accept(apdu: CommandApdu): CommandApdu | undefined {
    const chained = (apdu.cla & CLA_CHAIN_BIT) !== 0;
    const pending = this.pending;
    const continues = pending && pending.ins === apdu.ins && pending.p1 === apdu.p1 && pending.p2 === apdu.p2;
    if (!continues) this.pending = undefined;
    if (!chained && !continues) {
      if (apdu.data.length > MAX_COMMAND_DATA) throw new CardError(SW.WRONG_LENGTH, 'command data too long');
      return apdu;
    }
    const chain: PendingChain = this.pending ?? {
      ins: apdu.ins,
      p1: apdu.p1,
      p2: apdu.p2,
      parts: [],
      size: 0,
      extended: false,
    };
    chain.size += apdu.data.length;
    if (chain.size > MAX_COMMAND_DATA) {
      this.pending = undefined;
      throw new CardError(SW.WRONG_LENGTH, 'chained command too long');
    }
    chain.parts.push(apdu.data);
    chain.extended ||= apdu.extended;
    if (chained) {
      this.pending = chain;
      return undefined;
    }
    this.pending = undefined;
    return {
      cla: apdu.cla & ~CLA_CHAIN_BIT,
      ins: apdu.ins,
      p1: apdu.p1,
      p2: apdu.p2,
      data: concatBytes(...chain.parts),
      ne: apdu.ne,
      extended: chain.extended,
    };
  }

  reset(): void {
    this.pending = undefined;
  }
}

export class ResponseChain {
  private rest: Uint8Array | undefined;

  get pending(): boolean {
    return this.rest !== undefined;
  }

  /**
   * Sends `data` within the host's limit: short commands get at most Ne (256 when no Le
   * was sent) and 61xx when more waits; extended commands get everything.
   */
  deliver(data: Uint8Array, sw: StatusWord, apdu: Pick<CommandApdu, 'ne' | 'extended'>): Uint8Array {
    this.rest = undefined;
    const limit = apdu.extended ? Number.POSITIVE_INFINITY : (apdu.ne ?? 256);
    if (data.length <= limit || sw !== SW.SUCCESS) return responseApdu(sw, data);
    this.rest = data.slice(limit);
    return responseApdu(moreData(this.rest.length), data.subarray(0, limit));
  }

  /** GET RESPONSE: the next part of the pending response. */
  getResponse(apdu: CommandApdu): Uint8Array {
    if (apdu.p1 !== 0 || apdu.p2 !== 0) throw new CardError(SW.INCORRECT_P1P2);
    if (apdu.data.length !== 0) throw new CardError(SW.WRONG_LENGTH);
    const rest = this.rest;
    if (!rest) throw new CardError(SW.CONDITIONS_NOT_SATISFIED, 'no response data waiting');
    const limit = apdu.extended ? rest.length : (apdu.ne ?? 256);
    const chunk = rest.subarray(0, limit);
    const left = rest.subarray(chunk.length);
    this.rest = left.length > 0 ? left : undefined;
    return responseApdu(left.length > 0 ? moreData(left.length) : SW.SUCCESS, chunk);
  }

  clear(): void {
    this.rest = undefined;
  }
}
