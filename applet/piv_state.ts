/**
 * The persistent state of one PIV card: plain JSON, saved whole through CardStore
 * before the card reports success. Secrets are not in it: private keys, PIN, PUK
 * and management key live in the vault, whose own opaque state is `vault`.
 */
import type { PinPolicy } from '../common/control_protocol.js';
import { TpmvscError } from '../common/errors.js';
import type { KeyAlgorithm, KeyAuthorization, KeyRecord, ManagementKeyAlgorithm, PublicKey } from './key_vault.js';
import type { SlotPinPolicy } from './key_slots.js';

export const PIV_STATE_FORMAT = 1;

/** A public key in JSON form (hex). */
export type StoredPublicKey =
  | { algorithm: 'rsa2048'; modulus: string; publicExponent: string }
  | { algorithm: 'eccp256' | 'eccp384'; point: string };

export interface StoredKey {
  algorithm: KeyAlgorithm;
  origin: 'generated' | 'imported';
  authorization: KeyAuthorization;
  publicKey: StoredPublicKey;
  wrapped: string;
  pinPolicy: SlotPinPolicy;
  /** Touch policy byte as the host sent it (AB); there is no touch sensor, it is only reported back. */
  touchPolicy: number;
}

export interface PivCardState {
  format: typeof PIV_STATE_FORMAT;
  /** GET SERIAL, unique per card. */
  serial: number;
  /** Friendly name (Windows /name). */
  name: string;
  /** The card has a PUK; without one the PIN is unblocked with the management key. */
  hasPuk: boolean;
  pinPolicy: PinPolicy;
  /** Provisioned with /generate: discovery, CHUID, CCC and key history are restored by RESET. */
  generate: boolean;
  /** CHUID GUID, 32 hex digits, for the life of the card; null without /generate. */
  guid: string | null;
  managementKeyAlgorithm: ManagementKeyAlgorithm;
  /**
   * Data objects readable by anyone: tag in hex -> value (inside 53; inside 7E for the
   * discovery object), base64. A state written before sealed objects existed may hold
   * PIN-protected ones here too, in clear, until sealClearObjects (sealed_objects.ts) moves them.
   */
  objects: Record<string, string>;
  /**
   * Data objects whose read rule is 'pin' (data_objects.ts): tag in hex -> the vault's sealed
   * form (KeyVault.sealObject), never the value. Absent in older files: read as {}.
   */
  sealedObjects: Record<string, string>;
  /** Keys: slot in hex ("9a") -> key. */
  keys: Record<string, StoredKey>;
  /** vault.state() as of the last save. */
  vault: unknown;
}

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');
const unhex = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'hex'));

export function storePublicKey(key: PublicKey): StoredPublicKey {
  return key.algorithm === 'rsa2048'
    ? { algorithm: key.algorithm, modulus: hex(key.modulus), publicExponent: hex(key.publicExponent) }
    : { algorithm: key.algorithm, point: hex(key.point) };
}

export function loadPublicKey(key: StoredPublicKey): PublicKey {
  return key.algorithm === 'rsa2048'
    ? { algorithm: key.algorithm, modulus: unhex(key.modulus), publicExponent: unhex(key.publicExponent) }
    : { algorithm: key.algorithm, point: unhex(key.point) };
}

export function storeKey(record: KeyRecord, pinPolicy: SlotPinPolicy, touchPolicy: number): StoredKey {
  return {
    algorithm: record.algorithm,
    origin: record.origin,
    authorization: record.authorization,
    publicKey: storePublicKey(record.publicKey),
    wrapped: record.wrapped,
    pinPolicy,
    touchPolicy,
  };
}

export function loadKey(stored: StoredKey): KeyRecord {
  return {
    algorithm: stored.algorithm,
    origin: stored.origin,
    authorization: stored.authorization,
    publicKey: loadPublicKey(stored.publicKey),
    wrapped: stored.wrapped,
  };
}

export function cloneState(state: PivCardState): PivCardState {
  return structuredClone(state);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const HEX = /^(?:[0-9a-f]{2})*$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const TRI = new Set(['ALLOWED', 'DISALLOWED', 'REQUIRED']);

function isStoredKey(value: unknown): value is StoredKey {
  if (!isRecord(value)) return false;
  const publicKey = value['publicKey'];
  if (!isRecord(publicKey) || publicKey['algorithm'] !== value['algorithm']) return false;
  const publicOk =
    value['algorithm'] === 'rsa2048'
      ? typeof publicKey['modulus'] === 'string' &&
        HEX.test(publicKey['modulus']) &&
        typeof publicKey['publicExponent'] === 'string' &&
        HEX.test(publicKey['publicExponent'])
      : (value['algorithm'] === 'eccp256' || value['algorithm'] === 'eccp384') &&
        typeof publicKey['point'] === 'string' &&
        HEX.test(publicKey['point']);
  return (
    publicOk &&
    (value['origin'] === 'generated' || value['origin'] === 'imported') &&
    (value['authorization'] === 'pin' || value['authorization'] === 'none') &&
    typeof value['wrapped'] === 'string' &&
    ['never', 'once', 'always'].includes(value['pinPolicy'] as string) &&
    Number.isInteger(value['touchPolicy'])
  );
}

function isPinPolicy(value: unknown): value is PinPolicy {
  if (!isRecord(value)) return false;
  const { minLength, maxLength } = value;
  return (
    Number.isInteger(minLength) &&
    Number.isInteger(maxLength) &&
    (minLength as number) >= 4 &&
    (minLength as number) <= (maxLength as number) &&
    (maxLength as number) <= 127 &&
    ['uppercase', 'lowercase', 'digits', 'specialChars'].every((field) => TRI.has(value[field] as string))
  );
}

/** Checks a state read back from storage; throws TpmvscError(INTERNAL) naming the bad field. */
export function parsePivCardState(value: unknown): PivCardState {
  const fail = (field: string): never => {
    throw new TpmvscError('INTERNAL', `card state: bad or missing ${field}`);
  };
  if (!isRecord(value)) return fail('state object');
  if (value['format'] !== PIV_STATE_FORMAT) fail('format');
  const serial = value['serial'];
  if (!Number.isInteger(serial) || (serial as number) < 0 || (serial as number) > 0xffffffff) fail('serial');
  if (typeof value['name'] !== 'string') fail('name');
  if (typeof value['hasPuk'] !== 'boolean') fail('hasPuk');
  if (!isPinPolicy(value['pinPolicy'])) fail('pinPolicy');
  if (typeof value['generate'] !== 'boolean') fail('generate');
  const guid = value['guid'];
  if (guid !== null && !(typeof guid === 'string' && /^[0-9a-f]{32}$/.test(guid))) fail('guid');
  if (!['tdes', 'aes128', 'aes192', 'aes256'].includes(value['managementKeyAlgorithm'] as string)) {
    fail('managementKeyAlgorithm');
  }
  const objects = value['objects'];
  if (!isRecord(objects)) return fail('objects');
  for (const [tag, data] of Object.entries(objects)) {
    if (!/^[0-9a-f]{2,6}$/.test(tag) || typeof data !== 'string' || !BASE64.test(data)) fail(`objects.${tag}`);
  }
  const sealedObjects = value['sealedObjects'] ?? {};
  if (!isRecord(sealedObjects)) return fail('sealedObjects');
  for (const [tag, data] of Object.entries(sealedObjects)) {
    if (!/^[0-9a-f]{2,6}$/.test(tag) || typeof data !== 'string' || !BASE64.test(data)) fail(`sealedObjects.${tag}`);
  }
  const keys = value['keys'];
  if (!isRecord(keys)) return fail('keys');
  for (const [slot, key] of Object.entries(keys)) {
    if (!/^[0-9a-f]{2}$/.test(slot) || !isStoredKey(key)) fail(`keys.${slot}`);
  }
  if (!('vault' in value)) fail('vault');
  return { ...(value as unknown as PivCardState), sealedObjects: sealedObjects as Record<string, string> };
}
