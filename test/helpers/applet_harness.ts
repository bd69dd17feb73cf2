/**
 * Test harness for the PIV applet: a card on a MemoryVault and an in-memory CardStore,
 * hex in / hex out, hex patterns with wildcards, and the 9B authentication a host does.
 *
 * Pattern syntax (also used by test/fixtures/transcripts/*.json): hex bytes, spaces
 * ignored; `{n}` = any n bytes; `{*}` = any number of bytes.
 */
import { createDecipheriv, createCipheriv } from 'node:crypto';
import { DEFAULT_PIN_POLICY, type PinPolicy } from '../../common/control_protocol.js';
import type { CardStore } from '../../applet/card_store.js';
import type { KeyAttestor } from '../../applet/key_attestor.js';
import type { ManagementKey } from '../../applet/key_vault.js';
import { PivApplet } from '../../applet/piv_applet.js';
import { parsePivCardState, type PivCardState } from '../../applet/piv_state.js';
import { provisionCard } from '../../applet/provision.js';
import { MemoryVault } from './memory_vault.js';
import type { PinLifetime } from '../../common/pin_lifetime.js';

export class MemoryCardStore implements CardStore<PivCardState> {
  saved: string[] = [];
  /** Make the next saves fail (the card must answer 6581 and roll back). */
  failing = false;

  async save(state: PivCardState): Promise<void> {
    if (this.failing) throw new Error('disk full');
    const json = JSON.stringify(state);
    parsePivCardState(JSON.parse(json)); // every saved state must load again
    this.saved.push(json);
  }

  get last(): string | undefined {
    return this.saved.at(-1);
  }
}

export const DEFAULT_ADMIN_KEY_HEX = '010203040506070801020304050607080102030405060708';

export interface TestCardOptions {
  pin?: string;
  /** null: no PUK. */
  puk?: string | null;
  generate?: boolean;
  pinPolicy?: PinPolicy;
  managementKey?: ManagementKey;
  attestor?: KeyAttestor;
  serial?: number;
  /** The card's own verified-PIN lifetime (create /pinlifetime). */
  pinLifetime?: PinLifetime;
  /** The lifetime of cards without their own (tpmvscd --pin-lifetime). */
  defaultPinLifetime?: PinLifetime;
  /** Monotonic ms for the lifetime; tests that move time pass their own. */
  clock?: () => number;
}

export interface TestCard {
  applet: PivApplet;
  vault: MemoryVault;
  store: MemoryCardStore;
  /** Sends hex, returns the response as lower-case hex. */
  send(commandHex: string): Promise<string>;
}

export function makeTestCard(options: TestCardOptions = {}): TestCard {
  const puk = options.puk === undefined ? '12345678' : options.puk;
  const vault = new MemoryVault({
    pin: options.pin ?? '12345678',
    ...(puk === null ? {} : { puk }),
    ...(options.managementKey ? { managementKey: options.managementKey } : {}),
  });
  const state = provisionCard({
    name: 'Test card',
    serial: options.serial ?? 12345678,
    pinPolicy: options.pinPolicy ?? DEFAULT_PIN_POLICY,
    hasPuk: puk !== null,
    generate: options.generate ?? true,
    vaultState: vault.state(),
    ...(options.managementKey ? { managementKeyAlgorithm: options.managementKey.algorithm } : {}),
    guid: Uint8Array.from({ length: 16 }, (_, i) => 0x10 + i),
    ...(options.pinLifetime ? { pinLifetime: options.pinLifetime } : {}),
  });
  const store = new MemoryCardStore();
  const applet = new PivApplet({
    state,
    vault,
    store,
    ...(options.attestor ? { attestor: options.attestor } : {}),
    ...(options.defaultPinLifetime ? { defaultPinLifetime: options.defaultPinLifetime } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
  });
  applet.powerOn();
  return {
    applet,
    vault,
    store,
    send: async (commandHex) => Buffer.from(await applet.transmit(hexBytes(commandHex))).toString('hex'),
  };
}

export function hexBytes(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, '');
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(clean)) throw new Error(`bad hex: ${text}`);
  return new Uint8Array(Buffer.from(clean, 'hex'));
}

export const toHex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

export function patternToRegExp(pattern: string): RegExp {
  const source = pattern
    .replace(/\s+/g, '')
    .toLowerCase()
    .replace(/\{(\d+|\*)\}/g, (_, count: string) => (count === '*' ? '(?:[0-9a-f]{2})*' : `(?:[0-9a-f]{2}){${count}}`));
  return new RegExp(`^${source}$`);
}

export function matchesPattern(responseHex: string, pattern: string): boolean {
  return patternToRegExp(pattern).test(responseHex);
}

const CIPHER: Record<string, [string, number]> = {
  '00': ['des-ede3', 8],
  '03': ['des-ede3', 8],
  '08': ['aes-128-ecb', 16],
  '0a': ['aes-192-ecb', 16],
  '0c': ['aes-256-ecb', 16],
};

function ecb(decrypt: boolean, algorithmHex: string, keyHex: string, block: Uint8Array): Uint8Array {
  const [name] = CIPHER[algorithmHex.toLowerCase()]!;
  const cipher = decrypt ? createDecipheriv(name, hexBytes(keyHex), null) : createCipheriv(name, hexBytes(keyHex), null);
  cipher.setAutoPadding(false);
  return new Uint8Array(Buffer.concat([cipher.update(block), cipher.final()]));
}

export const ecbEncrypt = (alg: string, key: string, block: Uint8Array): Uint8Array => ecb(false, alg, key, block);
export const ecbDecrypt = (alg: string, key: string, block: Uint8Array): Uint8Array => ecb(true, alg, key, block);

/**
 * Mutual authentication with the management key as libykpiv and OpenSC do it.
 * Returns the two responses (hex); throws if the card's answer does not prove the key.
 */
export async function mutualAuthenticate(
  send: (hex: string) => Promise<string>,
  keyHex = DEFAULT_ADMIN_KEY_HEX,
  algorithmHex = '03',
): Promise<{ first: string; second: string }> {
  const blockSize = CIPHER[algorithmHex.toLowerCase()]![1];
  const lengthHex = (n: number): string => n.toString(16).padStart(2, '0');
  const first = await send(`0087${algorithmHex}9b 04 7c028000`);
  const prefix = `7c${lengthHex(blockSize + 2)}80${lengthHex(blockSize)}`;
  if (!first.startsWith(prefix) || !first.endsWith('9000')) throw new Error(`witness step answered ${first}`);
  const encryptedWitness = hexBytes(first.slice(prefix.length, prefix.length + blockSize * 2));
  const witness = ecbDecrypt(algorithmHex, keyHex, encryptedWitness);
  const challenge = Uint8Array.from({ length: blockSize }, (_, i) => 0xa0 + i);
  const body = `80${lengthHex(blockSize)}${toHex(witness)}81${lengthHex(blockSize)}${toHex(challenge)}`;
  const data = `7c${lengthHex(body.length / 2)}${body}`;
  const second = await send(`0087${algorithmHex}9b${lengthHex(data.length / 2)}${data}`);
  if (second.endsWith('9000')) {
    const expected = toHex(ecbEncrypt(algorithmHex, keyHex, challenge));
    if (second !== `7c${lengthHex(blockSize + 2)}82${lengthHex(blockSize)}${expected}9000`) {
      throw new Error(`card's proof is wrong: ${second}`);
    }
  }
  return { first, second };
}

/** VERIFY data for a PIN: ASCII padded with FF to 8 bytes (longer PINs unpadded). */
export function pinData(pin: string): string {
  const bytes = Buffer.from(pin, 'latin1');
  const padded = bytes.length >= 8 ? bytes : Buffer.concat([bytes, Buffer.alloc(8 - bytes.length, 0xff)]);
  return padded.toString('hex');
}

export function verifyCommand(pin: string): string {
  const data = pinData(pin);
  return `00200080${(data.length / 2).toString(16).padStart(2, '0')}${data}`;
}
