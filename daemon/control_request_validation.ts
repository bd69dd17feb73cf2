/**
 * Strict validation of control requests (common/control_protocol.ts) before anything acts on them:
 * known op, exactly the documented fields (unknown fields rejected), types, lengths, instance
 * syntax, hex, PIN policy bounds, PIN and PUK against the policy. Failures are
 * TpmvscError('BAD_REQUEST') or ('PIN_POLICY') whose message names the field, never a secret value.
 */
import { instanceId, parseInstanceId, type ControlRequest, type CreateRequest, type PinPolicy } from '../common/control_protocol.js';
import { TpmvscError } from '../common/errors.js';
import { checkPin, checkPinPolicy, checkPuk, isTriState } from '../common/pin_rules.js';
import { isPinLifetime } from '../common/pin_lifetime.js';

type Fields = Record<string, unknown>;

const NAME_MAX_LENGTH = 64;
const PRINTABLE = /^[\x20-\x7e]+$/;
const ADMIN_KEY_HEX = /^[0-9a-fA-F]{48}$/;

function badRequest(detail: string): TpmvscError {
  return new TpmvscError('BAD_REQUEST', detail);
}

function requireObject(value: unknown, what: string): Fields {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw badRequest(`${what} must be a JSON object`);
  return value as Fields;
}

/** Rejects missing and unknown fields (so a typo is never silently ignored). */
function requireExactFields(fields: Fields, required: readonly string[], optional: readonly string[], what: string): void {
  for (const key of Object.keys(fields)) {
    if (!required.includes(key) && !optional.includes(key)) throw badRequest(`unknown field "${key.slice(0, 40)}" in ${what}`);
  }
  for (const key of required) {
    if (!Object.hasOwn(fields, key)) throw badRequest(`missing field "${key}" in ${what}`);
  }
}

function requireString(fields: Fields, key: string): string {
  const value = fields[key];
  if (typeof value !== 'string') throw badRequest(`"${key}" must be a string`);
  return value;
}

function requireBoolean(fields: Fields, key: string): boolean {
  const value = fields[key];
  if (typeof value !== 'boolean') throw badRequest(`"${key}" must be true or false`);
  return value;
}

function requireInstance(value: unknown): string {
  const slot = typeof value === 'string' ? parseInstanceId(value) : undefined;
  if (slot === undefined) throw badRequest('"instance" must be an instance ID ROOT\\SMARTCARDREADER\\0000 to 0015');
  return instanceId(slot);
}

const POLICY_FIELDS = ['minLength', 'maxLength', 'uppercase', 'lowercase', 'digits', 'specialChars'] as const;

function validatePinPolicy(value: unknown): PinPolicy {
  const fields = requireObject(value, '"pinPolicy"');
  requireExactFields(fields, POLICY_FIELDS, [], '"pinPolicy"');
  const { minLength, maxLength, uppercase, lowercase, digits, specialChars } = fields;
  if (typeof minLength !== 'number' || typeof maxLength !== 'number') throw badRequest('"pinPolicy" lengths must be numbers');
  if (!isTriState(uppercase) || !isTriState(lowercase) || !isTriState(digits) || !isTriState(specialChars)) {
    throw badRequest('"pinPolicy" character classes must be ALLOWED, DISALLOWED or REQUIRED');
  }
  const policy: PinPolicy = { minLength, maxLength, uppercase, lowercase, digits, specialChars };
  try {
    checkPinPolicy(policy);
  } catch (error) {
    throw badRequest(error instanceof TpmvscError && error.detail ? error.detail : 'invalid "pinPolicy"');
  }
  return policy;
}

const CREATE_FIELDS = ['op', 'name', 'adminKeyHex', 'adminKeyRandom', 'pin', 'puk', 'pinPolicy', 'generate', 'attestation'] as const;
/** Optional so that a tpmvscmgr older than the setting still creates cards (with the daemon's default). */
const CREATE_OPTIONAL_FIELDS = ['pinLifetime'] as const;

function validateCreate(fields: Fields): CreateRequest {
  requireExactFields(fields, CREATE_FIELDS, CREATE_OPTIONAL_FIELDS, 'a create request');
  const name = requireString(fields, 'name');
  if (name.length > NAME_MAX_LENGTH || !PRINTABLE.test(name)) {
    throw badRequest(`"name" must be 1 to ${NAME_MAX_LENGTH} printable ASCII characters`);
  }
  const adminKeyHex = requireString(fields, 'adminKeyHex');
  if (!ADMIN_KEY_HEX.test(adminKeyHex)) throw badRequest('"adminKeyHex" must be 48 hexadecimal characters (24 bytes)');
  const adminKeyRandom = requireBoolean(fields, 'adminKeyRandom');
  const pinPolicy = validatePinPolicy(fields.pinPolicy);
  const pin = requireString(fields, 'pin');
  checkPin(pin, pinPolicy);
  const puk = fields.puk;
  if (puk !== null && typeof puk !== 'string') throw badRequest('"puk" must be a string or null');
  if (puk !== null) checkPuk(puk);
  const generate = requireBoolean(fields, 'generate');
  const attestation = fields.attestation;
  if (attestation !== null && attestation !== 'AIK_AND_CERT' && attestation !== 'AIK_ONLY') {
    throw badRequest('"attestation" must be null, "AIK_AND_CERT" or "AIK_ONLY"');
  }
  const pinLifetime = fields.pinLifetime ?? null;
  if (pinLifetime !== null && !isPinLifetime(pinLifetime)) {
    throw badRequest('"pinLifetime" must be null or {"seconds": 1..86400 or null, "once": true or false}');
  }
  return { op: 'create', name, adminKeyHex, adminKeyRandom, pin, puk, pinPolicy, pinLifetime, generate, attestation };
}

/** Validates a parsed JSON request; returns it typed, with instance IDs in canonical form. */
export function validateControlRequest(value: unknown): ControlRequest {
  const fields = requireObject(value, 'the request');
  switch (fields.op) {
    case 'create':
      return validateCreate(fields);
    case 'destroy':
      requireExactFields(fields, ['op', 'instance'], [], 'a destroy request');
      return { op: 'destroy', instance: requireInstance(fields.instance) };
    case 'list':
      requireExactFields(fields, ['op'], [], 'a list request');
      return { op: 'list' };
    case 'status':
      requireExactFields(fields, ['op'], ['instance'], 'a status request');
      return fields.instance === undefined ? { op: 'status' } : { op: 'status', instance: requireInstance(fields.instance) };
    default:
      throw badRequest('"op" must be "create", "destroy", "list" or "status"');
  }
}
