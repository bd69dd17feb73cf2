/**
 * PIV cryptographic algorithm identifiers (SP 800-78-4 Table 6-2, plus the ones
 * YubiKeys use) and the mapping to the vault's names.
 */
import type { KeyAlgorithm, ManagementKeyAlgorithm } from './key_vault.js';

export const ALG = {
  /** 00: "card default" for 9B; means 3DES here as on PIV cards and YubiKeys. */
  DEFAULT_TDES: 0x00,
  TDES: 0x03,
  RSA1024: 0x06,
  RSA2048: 0x07,
  AES128: 0x08,
  AES192: 0x0a,
  AES256: 0x0c,
  ECC_P256: 0x11,
  ECC_P384: 0x14,
  /** Not an algorithm: GET METADATA's "algorithm" of the PIN and PUK. */
  PIN: 0xff,
} as const;

const KEY_ALGORITHMS: ReadonlyArray<readonly [number, KeyAlgorithm]> = [
  [ALG.RSA2048, 'rsa2048'],
  [ALG.ECC_P256, 'eccp256'],
  [ALG.ECC_P384, 'eccp384'],
];

const MANAGEMENT_ALGORITHMS: ReadonlyArray<readonly [number, ManagementKeyAlgorithm, number]> = [
  [ALG.TDES, 'tdes', 24],
  [ALG.AES128, 'aes128', 16],
  [ALG.AES192, 'aes192', 24],
  [ALG.AES256, 'aes256', 32],
];

/** Every algorithm the card supports, in the order SELECT lists them (tag AC). */
export const SUPPORTED_ALGORITHM_IDS: readonly number[] = [
  ALG.TDES,
  ALG.AES128,
  ALG.AES192,
  ALG.AES256,
  ALG.RSA2048,
  ALG.ECC_P256,
  ALG.ECC_P384,
];

export function keyAlgorithmFromId(id: number): KeyAlgorithm | undefined {
  return KEY_ALGORITHMS.find(([value]) => value === id)?.[1];
}

export function keyAlgorithmId(algorithm: KeyAlgorithm): number {
  return KEY_ALGORITHMS.find(([, name]) => name === algorithm)![0];
}

/** P1 of GENERAL AUTHENTICATE / SET MANAGEMENT KEY for 9B; 00 means 3DES. */
export function managementAlgorithmFromId(id: number): ManagementKeyAlgorithm | undefined {
  if (id === ALG.DEFAULT_TDES) return 'tdes';
  return MANAGEMENT_ALGORITHMS.find(([value]) => value === id)?.[1];
}

export function managementAlgorithmId(algorithm: ManagementKeyAlgorithm): number {
  return MANAGEMENT_ALGORITHMS.find(([, name]) => name === algorithm)![0];
}

export function managementKeyLength(algorithm: ManagementKeyAlgorithm): number {
  return MANAGEMENT_ALGORITHMS.find(([, name]) => name === algorithm)![2];
}

/** Cipher block size: the witness and challenge length of 9B authentication. */
export function managementBlockSize(algorithm: ManagementKeyAlgorithm): number {
  return algorithm === 'tdes' ? 8 : 16;
}

/** Field size in bytes of an EC key; the scalar and each coordinate have this length. */
export function ecFieldBytes(algorithm: 'eccp256' | 'eccp384'): number {
  return algorithm === 'eccp256' ? 32 : 48;
}

/** 3DES 0102030405060708 x3: the management key of PIV tools and Windows' DEFAULT admin key. */
export const DEFAULT_MANAGEMENT_KEY: readonly number[] = [
  1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];
