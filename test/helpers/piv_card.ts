/**
 * A PIV card as a host application sees it, over one PC/SC connection: the APDUs the
 * robustness tests send (GENERATE, IMPORT, PUT DATA, SET MANAGEMENT KEY, sign, GET
 * METADATA...) and checks of their answers with Node's crypto, so a test can ask "does
 * the key in this slot sign, and does its signature verify with the public key the card
 * reports?".
 *
 * Long commands go as extended APDUs (Lc 00 hi lo, Le 00 00); an answer 61xx is completed
 * with GET RESPONSE.
 */
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { authenticateManagementKey, paddedPin } from './piv_tools.js';
import type { PcscConnection } from './pcsc_client.js';
import type { WinscardApp, WinscardConnection } from './winscard.js';

export const SELECT_PIV = '00A4040005A000000308';
export const ALG_RSA2048 = 0x07;
export const ALG_ECCP256 = 0x11;
export const ALG_TDES = 0x03;
export const ALG_AES128 = 0x08;

export interface CardAnswer {
  sw: string;
  data: Buffer;
}

/** One BER-TLV at `offset` (tags of 1-3 bytes, lengths 1-3 bytes): its tag, value and end. */
export function readBerTlv(bytes: Buffer, offset = 0): { tag: number; value: Buffer; end: number } {
  let at = offset;
  let tag = bytes[at++]!;
  if ((tag & 0x1f) === 0x1f) {
    do tag = (tag << 8) | bytes[at]!;
    while (bytes[at++]! & 0x80);
  }
  let length = bytes[at++]!;
  if (length === 0x81) length = bytes[at++]!;
  else if (length === 0x82) {
    length = bytes.readUInt16BE(at);
    at += 2;
  }
  if (at + length > bytes.length) throw new Error(`truncated TLV ${tag.toString(16)} in ${bytes.toString('hex')}`);
  return { tag, value: bytes.subarray(at, at + length), end: at + length };
}

/** The values of a TLV list by tag. */
export function berTlvs(bytes: Buffer): Map<number, Buffer> {
  const items = new Map<number, Buffer>();
  for (let at = 0; at < bytes.length; ) {
    const item = readBerTlv(bytes, at);
    items.set(item.tag, item.value);
    at = item.end;
  }
  return items;
}

function berLength(length: number): Buffer {
  if (length < 0x80) return Buffer.of(length);
  if (length < 0x100) return Buffer.of(0x81, length);
  return Buffer.of(0x82, length >> 8, length & 0xff);
}

export function berTlv(tag: number, value: Buffer): Buffer {
  const tagBytes = tag > 0xffff ? Buffer.of(tag >> 16, (tag >> 8) & 0xff, tag & 0xff) : tag > 0xff ? Buffer.of(tag >> 8, tag & 0xff) : Buffer.of(tag);
  return Buffer.concat([tagBytes, berLength(value.length), value]);
}

/** An extended case-4 APDU (works for any data length 1..65535). */
export function extendedApdu(ins: number, p1: number, p2: number, data: Buffer): Buffer {
  return Buffer.concat([Buffer.of(0x00, ins, p1, p2, 0x00, data.length >> 8, data.length & 0xff), data, Buffer.of(0x00, 0x00)]);
}

/** The public key in a 7F49 template's content or a GET METADATA 04 value (81 n 82 e | 86 point). */
export function publicKeyFromTlvs(content: Buffer): KeyObject {
  const items = berTlvs(content);
  const point = items.get(0x86);
  if (point) {
    if (point.length !== 65 || point[0] !== 0x04) throw new Error(`not a P-256 point: ${point.toString('hex')}`);
    const x = point.subarray(1, 33).toString('base64url');
    const y = point.subarray(33).toString('base64url');
    return createPublicKey({ key: { kty: 'EC', crv: 'P-256', x, y }, format: 'jwk' });
  }
  const n = items.get(0x81);
  const e = items.get(0x82);
  if (!n || !e) throw new Error(`no public key in ${content.toString('hex')}`);
  return createPublicKey({ key: { kty: 'RSA', n: n.toString('base64url'), e: e.toString('base64url') }, format: 'jwk' });
}

/** SubjectPublicKeyInfo bytes: two keys are the same key when these are equal. */
export function publicKeyId(key: KeyObject): string {
  return key.export({ type: 'spki', format: 'der' }).toString('hex');
}

/** A DigestInfo(SHA-256) block padded to 256 bytes with PKCS #1 v1.5 type 1. */
function pkcs1Block(digest: Buffer): Buffer {
  const digestInfo = Buffer.concat([Buffer.from('3031300d060960864801650304020105000420', 'hex'), digest]);
  return Buffer.concat([Buffer.of(0x00, 0x01), Buffer.alloc(256 - 3 - digestInfo.length, 0xff), Buffer.of(0x00), digestInfo]);
}

export class PivCard {
  constructor(readonly connection: PcscConnection) {}

  /** Sends one APDU, collects 61xx continuations. */
  async send(apdu: string | Buffer): Promise<CardAnswer> {
    let response = await this.connection.transmit(typeof apdu === 'string' ? Buffer.from(apdu.replace(/\s+/g, ''), 'hex') : apdu);
    const parts: Buffer[] = [];
    for (;;) {
      // pcscd hands back an empty response when the card went away mid-command.
      if (response.length < 2) throw new Error(`a response without a status word (${response.length} bytes)`);
      parts.push(response.subarray(0, -2));
      const sw = response.subarray(-2).toString('hex').toUpperCase();
      if (!sw.startsWith('61')) return { sw, data: Buffer.concat(parts) };
      response = await this.connection.transmit(Buffer.from(`00C00000${sw.slice(2)}`, 'hex'));
    }
  }

  /** Sends and insists on 9000; returns the data. */
  async must(apdu: string | Buffer, what: string): Promise<Buffer> {
    const answer = await this.send(apdu);
    if (answer.sw !== '9000') throw new Error(`${what} answered ${answer.sw}`);
    return answer.data;
  }

  select(): Promise<Buffer> {
    return this.must(SELECT_PIV, 'SELECT PIV');
  }

  async verifyPin(pin: string): Promise<string> {
    return (await this.send(`0020008008${paddedPin(pin)}`)).sw;
  }

  /** Tries left of the PIN (80) or PUK (81) from GET METADATA: [total, remaining]. */
  async retries(reference: 0x80 | 0x81): Promise<{ total: number; remaining: number; isDefault: boolean }> {
    const items = berTlvs(await this.must(`00F700${reference.toString(16)}00`, `GET METADATA ${reference.toString(16)}`));
    const counts = items.get(0x06)!;
    return { total: counts[0]!, remaining: counts[1]!, isDefault: items.get(0x05)?.[0] === 1 };
  }

  /** Mutual 9B authentication with this key (hex); false when the card refused it. */
  authenticate(managementKeyHex: string): Promise<boolean> {
    return authenticateManagementKey(this.connection, managementKeyHex);
  }

  /** The algorithm byte of the management key (GET METADATA 9B). */
  async managementAlgorithm(): Promise<number> {
    return berTlvs(await this.must('00F7009B00', 'GET METADATA 9B')).get(0x01)![0]!;
  }

  /** SET MANAGEMENT KEY: 00 FF FF FF Lc <alg> 9B <len> <key>. */
  setManagementKeyApdu(algorithm: number, keyHex: string): Buffer {
    const key = Buffer.from(keyHex, 'hex');
    return Buffer.concat([Buffer.of(0x00, 0xff, 0xff, 0xff, 3 + key.length, algorithm, 0x9b, key.length), key]);
  }

  /** GENERATE ASYMMETRIC KEY PAIR: 00 47 00 <slot> 05 AC 03 80 01 <alg> 00. */
  generateApdu(slot: number, algorithm: number): Buffer {
    return Buffer.concat([Buffer.of(0x00, 0x47, 0x00, slot, 0x05, 0xac, 0x03, 0x80, 0x01, algorithm), Buffer.of(0x00)]);
  }

  /** The public key of a slot from GET METADATA, or undefined for an empty slot (6A88). */
  async slotPublicKey(slot: number): Promise<KeyObject | undefined> {
    const answer = await this.send(`00F700${slot.toString(16)}00`);
    if (answer.sw === '6A88') return undefined;
    if (answer.sw !== '9000') throw new Error(`GET METADATA ${slot.toString(16)} answered ${answer.sw}`);
    const publicKey = berTlvs(answer.data).get(0x04);
    if (!publicKey) throw new Error(`GET METADATA ${slot.toString(16)} without a public key`);
    return publicKeyFromTlvs(publicKey);
  }

  /**
   * Signs `message` with the slot's key (VERIFY with `pin` first when given: 9C wants it
   * right before every use) and checks the signature against `publicKey`. Returns the status
   * word of the signing command and whether the signature verified.
   */
  async signAndCheck(slot: number, publicKey: KeyObject, message: Buffer, pin?: string): Promise<{ sw: string; valid: boolean }> {
    if (pin !== undefined) {
      const verified = await this.verifyPin(pin);
      if (verified !== '9000') return { sw: `VERIFY ${verified}`, valid: false };
    }
    const digest = createHash('sha256').update(message).digest();
    const rsa = publicKey.asymmetricKeyType === 'rsa';
    const input = rsa ? pkcs1Block(digest) : digest;
    const template = berTlv(0x7c, Buffer.concat([Buffer.of(0x82, 0x00), berTlv(0x81, input)]));
    const answer = await this.send(extendedApdu(0x87, rsa ? ALG_RSA2048 : ALG_ECCP256, slot, template));
    if (answer.sw !== '9000') return { sw: answer.sw, valid: false };
    const signature = berTlvs(readBerTlv(answer.data).value).get(0x82)!;
    return { sw: answer.sw, valid: verify('sha256', message, publicKey, signature) };
  }

  /** GET DATA of one object (e.g. 0x5fc105): its content inside 53, or undefined (6A82). */
  async getData(tag: number): Promise<Buffer | undefined> {
    const tagList = berTlv(0x5c, Buffer.of(tag >> 16, (tag >> 8) & 0xff, tag & 0xff));
    const answer = await this.send(extendedApdu(0xcb, 0x3f, 0xff, tagList));
    if (answer.sw === '6A82') return undefined;
    if (answer.sw !== '9000') throw new Error(`GET DATA ${tag.toString(16)} answered ${answer.sw}`);
    return readBerTlv(answer.data).value;
  }

  putDataApdu(tag: number, content: Buffer): Buffer {
    const data = Buffer.concat([berTlv(0x5c, Buffer.of(tag >> 16, (tag >> 8) & 0xff, tag & 0xff)), berTlv(0x53, content)]);
    return extendedApdu(0xdb, 0x3f, 0xff, data);
  }
}

/**
 * Connects `app` to the reader and selects PIV, retrying while the card is out (it comes back
 * after a daemon restart or a reset) for up to `timeoutMs`.
 */
export async function connectPivCard(app: WinscardApp, reader: string, timeoutMs = 15_000): Promise<{ card: PivCard; connection: WinscardConnection }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let connection: WinscardConnection | undefined;
    try {
      connection = await app.connect(reader);
      const card = new PivCard(connection);
      await card.select();
      return { card, connection };
    } catch (error) {
      await connection?.disconnect('leave').catch(() => undefined);
      if (Date.now() > deadline) throw new Error(`the card in "${reader}" did not come back: ${(error as Error).message}`);
    }
    await sleep(100);
  }
}
