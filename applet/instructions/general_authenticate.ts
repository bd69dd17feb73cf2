/**
 * GENERAL AUTHENTICATE (SP 800-73-4 Part 2 §3.2.4): 00 87 <alg> <key ref> Lc 7C L {...}
 * Inside 7C: 80 witness, 81 challenge, 82 response, 85 exponentiation; an empty
 * TLV asks the card for that item. Lengths use the shortest form (libykpiv reads
 * 9B answers at fixed offsets).
 *
 * Management key 9B (alg 03 or 00 = 3DES, 08/0A/0C = AES; must match the key):
 *   mutual, step 1    7C 02 80 00                -> 7C L 80 n E(witness)
 *   mutual, step 2    7C L 80 n witness 81 n C   -> 7C L 82 n E(C)      (authenticated)
 *   external, step 1  7C 02 81 00                -> 7C L 81 n challenge  (also OpenSC's RNG)
 *   external, step 2  7C L 82 n E(challenge)     -> 9000                (authenticated)
 * Witness and challenge are fresh random blocks, usable once. A wrong answer: 6982.
 *
 * Private keys (slot 9A, 9C, 9D, 9E, 82..95; alg must match the key: 6A80):
 *   sign / decrypt    7C L 82 00 81 L data   -> 7C L 82 L result
 *                     RSA: raw private operation on a 256-byte block below the modulus;
 *                     EC: ECDSA over a hash of any length, DER signature out
 *   ECDH              7C L 82 00 85 L 04||X||Y -> 7C L 82 L X
 * Empty slot: 6A88. PIN policy: 'once' needs a verified PIN, 'always' a VERIFY since
 * the key's last use, 'never' nothing: 6982 otherwise.
 */
import { randomBytes } from 'node:crypto';
import { ecFieldBytes, keyAlgorithmId, managementAlgorithmFromId, managementBlockSize } from '../algorithms.js';
import { findKeySlot, MANAGEMENT_KEY_SLOT, slotKey } from '../key_slots.js';
import type { KeyRecord } from '../key_vault.js';
import { encryptBlock, secretEquals } from '../management_crypto.js';
import { loadKey, type StoredKey } from '../piv_state.js';
import { CardError, SW } from '../status_words.js';
import { decodeTlvs, expectSingleTlv, tlv, type Tlv } from '../tlv.js';
import type { Instruction, InstructionContext } from './instruction.js';

const WITNESS = 0x80;
const CHALLENGE = 0x81;
const RESPONSE = 0x82;
const EXPONENTIATION = 0x85;

function parseTemplate(data: Uint8Array): Map<number, Uint8Array> {
  const items: Tlv[] = decodeTlvs(expectSingleTlv(data, 0x7c));
  const map = new Map<number, Uint8Array>();
  for (const item of items) {
    if (map.has(item.tag) || ![WITNESS, CHALLENGE, RESPONSE, EXPONENTIATION].includes(item.tag)) {
      throw new CardError(SW.WRONG_DATA, 'unexpected item in 7C');
    }
    map.set(item.tag, item.value);
  }
  return map;
}

const only = (items: Map<number, Uint8Array>, ...tags: number[]): boolean =>
  items.size === tags.length && tags.every((tag) => items.has(tag));

async function authenticateManagementKey(context: InstructionContext, items: Map<number, Uint8Array>): Promise<Uint8Array | void> {
  const { apdu, session, vault, state } = context;
  const algorithm = managementAlgorithmFromId(apdu.p1);
  if (algorithm === undefined || algorithm !== state.managementKeyAlgorithm) {
    session.forgetPendingStep();
    throw new CardError(SW.WRONG_DATA, 'algorithm does not match the management key');
  }
  const blockSize = managementBlockSize(algorithm);
  const pending = session.pendingAdminStep;
  session.pendingAdminStep = undefined; // any 9B command ends the previous exchange: single use
  const witness = items.get(WITNESS);
  const challenge = items.get(CHALLENGE);
  const response = items.get(RESPONSE);

  const withKey = async <T>(use: (key: Awaited<ReturnType<typeof vault.managementKey>>) => T): Promise<T> => {
    const key = await vault.managementKey();
    try {
      return use(key);
    } finally {
      key.key.fill(0);
    }
  };
  const fail = (): never => {
    session.adminAuthenticated = false;
    throw new CardError(SW.SECURITY_STATUS_NOT_SATISFIED, 'management key authentication failed');
  };

  try {
    if (only(items, WITNESS) && witness!.length === 0) {
      session.adminAuthenticated = false;
      const value = randomBytes(blockSize);
      const encrypted = await withKey((key) => encryptBlock(key, value));
      session.pendingAdminStep = { kind: 'witness', algorithm, value: new Uint8Array(value) };
      value.fill(0);
      return tlv(0x7c, tlv(WITNESS, encrypted));
    }
    if (only(items, CHALLENGE) && challenge!.length === 0) {
      session.adminAuthenticated = false;
      const value = new Uint8Array(randomBytes(blockSize));
      session.pendingAdminStep = { kind: 'challenge', algorithm, value: value.slice() };
      return tlv(0x7c, tlv(CHALLENGE, value));
    }
    if (only(items, WITNESS, CHALLENGE)) {
      if (witness!.length !== blockSize || challenge!.length !== blockSize) throw new CardError(SW.WRONG_DATA);
      if (pending?.kind !== 'witness' || pending.algorithm !== algorithm) return fail();
      if (!secretEquals(witness!, pending.value)) return fail();
      const answer = await withKey((key) => encryptBlock(key, challenge!));
      session.adminAuthenticated = true;
      return tlv(0x7c, tlv(RESPONSE, answer));
    }
    if (only(items, RESPONSE) && response!.length > 0) {
      if (response!.length !== blockSize) throw new CardError(SW.WRONG_DATA);
      if (pending?.kind !== 'challenge' || pending.algorithm !== algorithm) return fail();
      const expected = await withKey((key) => encryptBlock(key, pending.value));
      if (!secretEquals(response!, expected)) return fail();
      session.adminAuthenticated = true;
      return;
    }
    throw new CardError(SW.WRONG_DATA, 'unsupported 9B authentication form');
  } finally {
    pending?.value.fill(0);
  }
}

/** Checks the slot's PIN policy, consumes a PIN-always verification and notes the PIN's use (its lifetime). */
export function authorizeKeyUse(context: InstructionContext, stored: StoredKey): void {
  if (stored.pinPolicy === 'never') return;
  if (!context.vault.unlocked) throw new CardError(SW.SECURITY_STATUS_NOT_SATISFIED, 'PIN verification required');
  if (stored.pinPolicy === 'always') {
    if (!context.session.pinFreshForAlways) throw new CardError(SW.SECURITY_STATUS_NOT_SATISFIED, 'PIN required before each use');
    context.session.pinFreshForAlways = false;
  }
  context.session.pinActivity = 'key-use';
}

function bigEndian(bytes: Uint8Array): bigint {
  return bytes.length === 0 ? 0n : BigInt('0x' + Buffer.from(bytes).toString('hex'));
}

async function usePrivateKey(context: InstructionContext, items: Map<number, Uint8Array>): Promise<Uint8Array> {
  const { apdu, vault, state } = context;
  if (!findKeySlot(apdu.p2)) throw new CardError(SW.REFERENCE_NOT_FOUND, 'no such key reference');
  const stored = state.keys[slotKey(apdu.p2)];
  if (!stored) throw new CardError(SW.REFERENCE_NOT_FOUND, 'slot is empty');
  if (apdu.p1 !== keyAlgorithmId(stored.algorithm)) throw new CardError(SW.WRONG_DATA, 'algorithm does not match the key');
  const response = items.get(RESPONSE);
  const challenge = items.get(CHALLENGE);
  const point = items.get(EXPONENTIATION);
  if (response === undefined || response.length !== 0) throw new CardError(SW.WRONG_DATA, 'expected 82 00');
  const key: KeyRecord = loadKey(stored);
  let result: Uint8Array;
  if (only(items, RESPONSE, CHALLENGE) && challenge!.length > 0) {
    if (key.publicKey.algorithm === 'rsa2048') {
      const modulus = key.publicKey.modulus;
      if (challenge!.length !== 256 || bigEndian(challenge!) >= bigEndian(modulus)) {
        throw new CardError(SW.WRONG_DATA, 'RSA input must be a 256-byte block below the modulus');
      }
      authorizeKeyUse(context, stored);
      result = await vault.rsaPrivate(key, challenge!);
    } else {
      authorizeKeyUse(context, stored);
      result = await vault.ecdsaSign(key, challenge!);
    }
  } else if (only(items, RESPONSE, EXPONENTIATION) && key.publicKey.algorithm !== 'rsa2048') {
    const field = ecFieldBytes(key.publicKey.algorithm);
    if (point!.length !== 1 + 2 * field || point![0] !== 0x04) throw new CardError(SW.WRONG_DATA, 'bad EC point');
    authorizeKeyUse(context, stored);
    result = await vault.ecdh(key, point!);
  } else {
    throw new CardError(SW.WRONG_DATA, 'unsupported GENERAL AUTHENTICATE form');
  }
  return tlv(0x7c, tlv(RESPONSE, result));
}

export const generalAuthenticate: Instruction = {
  ins: 0x87,
  name: 'GENERAL AUTHENTICATE',
  readOnly: false,
  chainable: true,
  async handle(context) {
    const items = parseTemplate(context.apdu.data);
    if (context.apdu.p2 === MANAGEMENT_KEY_SLOT) return authenticateManagementKey(context, items);
    context.session.forgetPendingStep();
    return usePrivateKey(context, items);
  },
};
