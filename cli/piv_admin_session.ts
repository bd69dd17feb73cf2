/**
 * The host side of a PIV card's administration, as a card management tool does it:
 * select the application, prove the admin (management) key by challenge/response,
 * then reset the PIN. tpmvscmgr talks to the card through PC/SC like any client; the
 * admin key never leaves this process.
 *
 *   SELECT              00 A4 04 00 05 A0 00 00 03 08
 *   GET METADATA 9B     00 F7 00 9B            -> 01 01 <alg> ...  (algorithm of the key)
 *   GENERAL AUTHENTICATE (mutual, SP 800-73-4 Part 2 §3.2.4, key reference 9B)
 *     step 1  00 87 <alg> 9B 04 7C 02 80 00                    -> 7C L 80 B <E(witness)>
 *     step 2  00 87 <alg> 9B Lc 7C L 80 B <witness> 81 B <challenge>
 *                                                              -> 7C L 82 B <E(challenge)>
 *   RESET RETRY COUNTER 00 2C 00 80 Lc <new PIN>   (Windows virtual smart card semantics:
 *                                                   after 9B authentication, cards without PUK)
 */
import { randomBytes } from 'node:crypto';
import type { PcscConnection } from '../common/pcsc_client.js';
import { TpmvscError } from '../common/errors.js';
import { managementAlgorithmFromId, managementBlockSize, managementKeyLength } from '../applet/algorithms.js';
import { decryptBlock, encryptBlock, secretEquals } from '../applet/management_crypto.js';

const SELECT_PIV = Buffer.from('00A4040005A000000308', 'hex');

export interface CardReply {
  sw: number;
  data: Buffer;
}

async function send(connection: PcscConnection, apdu: Buffer): Promise<CardReply> {
  const response = await connection.transmit(apdu);
  if (response.length < 2) throw new TpmvscError('INTERNAL', 'the card gave an empty response');
  return { sw: response.readUInt16BE(response.length - 2), data: response.subarray(0, response.length - 2) };
}

function cardError(step: string, sw: number): TpmvscError {
  return new TpmvscError('INTERNAL', `${step}: the card answered ${sw.toString(16).padStart(4, '0').toUpperCase()}`);
}

export async function selectPiv(connection: PcscConnection): Promise<void> {
  const { sw } = await send(connection, SELECT_PIV);
  if (sw !== 0x9000) throw cardError('SELECT PIV', sw);
}

/** The management key's algorithm from GET METADATA; 3DES when the card does not say. */
async function managementAlgorithm(connection: PcscConnection): Promise<number> {
  const { sw, data } = await send(connection, Buffer.from('00F7009B00', 'hex'));
  if (sw === 0x9000 && data.length >= 3 && data[0] === 0x01 && data[1] === 0x01) return data[2]!;
  return 0x03;
}

/**
 * Mutual authentication with the admin key. Resolves when the card accepted the key
 * and proved it holds the same one; throws AUTH_FAILED otherwise.
 */
export async function authenticateAdmin(connection: PcscConnection, adminKey: Buffer): Promise<void> {
  const algorithm = await managementAlgorithm(connection);
  const name = managementAlgorithmFromId(algorithm);
  if (!name || managementKeyLength(name) !== adminKey.length) {
    throw new TpmvscError('AUTH_FAILED', `the card's admin key is not a ${adminKey.length}-byte key`);
  }
  const key = { algorithm: name, key: adminKey };
  const block = managementBlockSize(name);
  const header = (length: number): Buffer => Buffer.from([0x00, 0x87, algorithm, 0x9b, length]);
  const first = await send(connection, Buffer.concat([header(4), Buffer.from('7C028000', 'hex')]));
  // 7C L 80 B <encrypted witness>
  if (first.sw !== 0x9000 || first.data.length !== 4 + block || first.data[2] !== 0x80) {
    throw cardError('GENERAL AUTHENTICATE (witness)', first.sw);
  }
  const witness = decryptBlock(key, first.data.subarray(4));
  const challenge = randomBytes(block);
  const body = Buffer.concat([Buffer.from([0x7c, 4 + 2 * block, 0x80, block]), witness, Buffer.from([0x81, block]), challenge]);
  const second = await send(connection, Buffer.concat([header(body.length), body]));
  witness.fill(0);
  if (second.sw === 0x6982 || second.sw === 0x6a80) throw new TpmvscError('AUTH_FAILED', 'the card refused the admin key');
  if (second.sw !== 0x9000 || second.data.length !== 4 + block || second.data[2] !== 0x82) {
    throw cardError('GENERAL AUTHENTICATE (challenge)', second.sw);
  }
  if (!secretEquals(encryptBlock(key, challenge), second.data.subarray(4))) {
    throw new TpmvscError('AUTH_FAILED', 'the card did not prove it holds the admin key');
  }
}

/** RESET RETRY COUNTER with the new PIN alone, after authenticateAdmin on a card without a PUK. */
export async function resetPinWithAdmin(connection: PcscConnection, newPin: Buffer): Promise<void> {
  const apdu = Buffer.concat([Buffer.from([0x00, 0x2c, 0x00, 0x80, newPin.length]), newPin]);
  try {
    const { sw } = await send(connection, apdu);
    if (sw === 0x9000) return;
    if (sw === 0x6a80) throw new TpmvscError('PIN_POLICY', "the new PIN does not meet the card's PIN policy");
    // A card with a PUK reads the data as PUK || new PIN: it never lets the admin key unblock it.
    if (sw === 0x6983 || (sw & 0xfff0) === 0x63c0 || sw === 0x6982) {
      throw new TpmvscError('AUTH_FAILED', 'this card has a PUK: the admin key cannot unblock it (use the PUK)');
    }
    throw cardError('RESET RETRY COUNTER', sw);
  } finally {
    apdu.fill(0);
  }
}
