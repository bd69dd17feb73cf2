/**
 * Shared set-up of the vault integration tests: a private swtpm whose dictionary-attack
 * parameters forgive quickly (so wrong-PIN tests don't lock the TPM by accident), a
 * connected Tpm, and helpers to check TPM results with node:crypto.
 */
import type { TestFn } from 'ava';
import { createPublicKey, randomBytes, type KeyObject } from 'node:crypto';
import { Tpm } from '../../tpm/index.js';
import { TpmVault } from '../../vault/tpm_vault.js';
import { startSwtpm, type SwtpmInstance } from '../helpers/swtpm.js';
import type { PublicKey } from '../../applet/key_vault.js';

export const encode = (text: string): Uint8Array => new TextEncoder().encode(text);

export interface TpmFixture {
  sw: SwtpmInstance;
  tpm: Tpm;
}

/** Generous DA parameters: 1000 failures, one forgiven per second. */
export async function relaxDictionaryAttack(tpm: Tpm): Promise<void> {
  await tpm.dictionaryAttackParameters({ maxTries: 1000, recoveryTime: 1, lockoutRecovery: 1 });
  await tpm.dictionaryAttackLockReset();
}

export async function startTpm(): Promise<TpmFixture> {
  const sw = await startSwtpm();
  try {
    const tpm = await Tpm.open({ tcti: sw.tcti });
    await relaxDictionaryAttack(tpm);
    return { sw, tpm };
  } catch (e) {
    await sw.stop();
    throw e;
  }
}

export async function stopTpm(fixture: TpmFixture | undefined): Promise<void> {
  if (!fixture) return;
  await fixture.tpm.close().catch(() => undefined);
  await fixture.sw.stop();
}

/** A machine of the attestation tests: a swtpm on `stateDir` (provisioned with EK certificates), a card with an AIK. */
export interface AttestingMachine extends TpmFixture {
  vault: TpmVault;
}

export async function startAttestingMachine(stateDir: string): Promise<AttestingMachine> {
  const sw = await startSwtpm({ stateDir });
  const tpm = await Tpm.open({ tcti: sw.tcti });
  await relaxDictionaryAttack(tpm);
  const vault = await TpmVault.create(tpm, { pin: encode('12345678'), puk: undefined, managementKey: { algorithm: 'aes128', key: new Uint8Array(randomBytes(16)) } });
  await vault.createAttestationKey();
  return { sw, tpm, vault };
}

/** One swtpm + Tpm for every test of a file: started before the first, stopped after the last. */
export function useTpmFixture(test: TestFn): TpmFixture {
  const fixture = {} as TpmFixture;
  test.before(async () => {
    Object.assign(fixture, await startTpm());
  });
  test.after.always(async () => {
    if (fixture.tpm) await stopTpm(fixture);
  });
  return fixture;
}

const b64url = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64url');

/** The card's public key as a node KeyObject (JWK import). */
export function nodePublicKey(publicKey: PublicKey): KeyObject {
  if (publicKey.algorithm === 'rsa2048') {
    return createPublicKey({ key: { kty: 'RSA', n: b64url(publicKey.modulus), e: b64url(publicKey.publicExponent) }, format: 'jwk' });
  }
  const size = publicKey.algorithm === 'eccp256' ? 32 : 48;
  return createPublicKey({
    key: {
      kty: 'EC',
      crv: publicKey.algorithm === 'eccp256' ? 'P-256' : 'P-384',
      x: b64url(publicKey.point.subarray(1, 1 + size)),
      y: b64url(publicKey.point.subarray(1 + size)),
    },
    format: 'jwk',
  });
}
