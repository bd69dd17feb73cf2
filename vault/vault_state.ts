/**
 * The TPM vault's persistent state: what the card application stores (inside its card
 * state file) for the vault. Nothing in it is a secret in clear: blobs are encrypted by
 * the TPM under the card parent, whose private part never leaves the TPM.
 *
 *   {
 *     "format": "tpmvsc-tpm-vault/3",
 *     "parent":   { "handle": 2165...,   "name": "000b..." }   persistent card parent, its name (hex)
 *     "counters": 18...                                        NV index of the retry counters
 *     "salt":     "base64"                                     card salt for PIN/PUK derivation
 *     "free":     "base64"   sealed K_free (empty auth, noDA)
 *     "wrapKey":  { "blob": "base64", "point": "base64" }      user wrap key (auth K_user) and its public point
 *     "pin":      "base64"   sealed K_user, auth from the PIN (DA-protected), bound to PIN generation pinGeneration
 *     "puk":      "base64"   sealed K_user, auth from the PUK (DA-protected), bound to pukGeneration   card with a PUK
 *     "pinGeneration": 1     "pukGeneration": 1                                    (pin_generation.ts)
 *     "pinNext":  "base64"   a changed PIN's object for pinGeneration+1, not yet promoted (tpm_vault.ts: crash safety)
 *     "pukNext":  "base64"   the same for the PUK
 *     "admin":    "base64"   sealed K_user, empty auth, noDA                          card without a PUK
 *     "managementKey": "base64"  sealed (algorithm byte || key), noDA, policy only: bound to managementKeyGeneration
 *     "managementKeyGeneration": 1
 *     "managementKeyNext": "base64"  a new management key's object for managementKeyGeneration+1, not yet promoted
 *     "aik":      "base64"   attestation identity key (attestation_key.ts)          card with /attestation
 *   }
 */
import { VaultError } from './vault_error.js';

export const STATE_FORMAT = 'tpmvsc-tpm-vault/3';

export interface TpmVaultState {
  format: typeof STATE_FORMAT;
  parent: { handle: number; name: string };
  counters: number;
  salt: string;
  free: string;
  wrapKey: { blob: string; point: string };
  pin: string;
  puk?: string;
  pinGeneration: number;
  pukGeneration: number;
  pinNext?: string;
  pukNext?: string;
  admin?: string;
  managementKey: string;
  managementKeyGeneration: number;
  managementKeyNext?: string;
  aik?: string;
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const HEX = /^[0-9a-f]+$/;

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function base64Field(record: Record<string, unknown>, key: string, optional = false): void {
  const value = record[key];
  if (value === undefined && optional) return;
  if (typeof value !== 'string' || !BASE64.test(value)) throw new VaultError('BAD_STATE', `vault state field "${key}" is missing or not base64`);
}

function handleIn(value: unknown, top: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >>> 24 === top;
}

/** Checks the shape of a persisted state (it comes from a file: trust nothing). */
export function parseVaultState(value: unknown): TpmVaultState {
  if (!isObject(value) || value.format !== STATE_FORMAT) throw new VaultError('BAD_STATE', 'not a TPM vault state (unknown format)');
  const parent = value.parent;
  if (!isObject(parent) || !handleIn(parent.handle, 0x81) || typeof parent.name !== 'string' || !HEX.test(parent.name)) {
    throw new VaultError('BAD_STATE', 'vault state field "parent" is malformed');
  }
  if (!handleIn(value.counters, 0x01)) throw new VaultError('BAD_STATE', 'vault state field "counters" is malformed');
  for (const key of ['salt', 'free', 'pin', 'managementKey']) base64Field(value, key);
  base64Field(value, 'puk', true);
  base64Field(value, 'admin', true);
  base64Field(value, 'aik', true);
  base64Field(value, 'pinNext', true);
  base64Field(value, 'pukNext', true);
  base64Field(value, 'managementKeyNext', true);
  for (const key of ['pinGeneration', 'pukGeneration', 'managementKeyGeneration']) {
    const g = value[key];
    if (typeof g !== 'number' || !Number.isInteger(g) || g < 0 || g >= 0xffffffff) {
      throw new VaultError('BAD_STATE', `vault state field "${key}" is malformed`);
    }
  }
  if (value.pukNext !== undefined && value.puk === undefined) throw new VaultError('BAD_STATE', 'vault state has "pukNext" but no "puk"');
  if ((value.puk === undefined) === (value.admin === undefined)) {
    throw new VaultError('BAD_STATE', 'vault state must hold exactly one of "puk" and "admin"');
  }
  const wrapKey = value.wrapKey;
  if (!isObject(wrapKey)) throw new VaultError('BAD_STATE', 'vault state field "wrapKey" is malformed');
  base64Field(wrapKey, 'blob');
  base64Field(wrapKey, 'point');
  return structuredClone(value) as unknown as TpmVaultState;
}
