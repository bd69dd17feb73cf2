/**
 * What a key the card generated looks like in the TPM, so a verifier can tell a card key from
 * any other key the same AIK could certify (a root user can make the AIK certify anything it
 * can load). Derived from the vault's own templates (vault/key_templates.ts), never restated:
 *
 *   type / size        RSA-2048 (exponent 65537), ECC P-256 or P-384; nameAlg SHA-256, scheme NULL
 *   objectAttributes   fixedTPM | fixedParent | sensitiveDataOrigin (made in this TPM, can never
 *                      leave it) | userWithAuth | noDA | sign | decrypt
 *   authPolicy         PolicyCommandCode(TPM2_Certify) for every PIN policy: the policy lets the
 *                      AIK certify the key without its auth and allows nothing else. The PIN
 *                      policy itself is not in the TPM object: 'never' keys have the card's free
 *                      secret as authValue, 'once' / 'always' keys a random authValue boxed under
 *                      the PIN (docs/ARCHITECTURE.md), and the card application enforces once vs
 *                      always. A TPM never reveals an authValue, so no attestation can show which.
 *
 * Imported keys have neither the three origin attributes (TPM2_Import refuses them) nor a
 * policy; the card refuses to attest them (ATTEST answers 6A80).
 */
import { TPM_ALG, TPM_ECC, TPMA_OBJECT, marshalPublic, type TpmPublic } from '../tpm/index.js';
import type { KeyAlgorithm } from '../applet/key_vault.js';
import type { SlotPinPolicy } from '../applet/key_slots.js';
import { CERTIFY_POLICY_DIGEST } from '../vault/attestation_key.js';
import { keyTemplate } from '../vault/key_templates.js';
import { withoutUnique } from './tpm_evidence.js';

export const GENERATED_IN_TPM = TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin;

const ATTRIBUTE_NAMES = Object.entries(TPMA_OBJECT) as [keyof typeof TPMA_OBJECT, number][];

/** The names of the TPMA_OBJECT bits set in `attributes` (unknown bits as hex). */
export function attributeNames(attributes: number): string[] {
  const names = ATTRIBUTE_NAMES.filter(([, bit]) => attributes & bit).map(([name]) => name);
  const unknown = ATTRIBUTE_NAMES.reduce((rest, [, bit]) => rest & ~bit, attributes) >>> 0;
  return unknown ? [...names, `0x${unknown.toString(16)}`] : names;
}

/** The card key algorithm of a TPM public area, or undefined when the card makes no such key. */
export function cardKeyAlgorithm(area: TpmPublic): KeyAlgorithm | undefined {
  if (area.type === TPM_ALG.RSA) return area.keyBits === 2048 ? 'rsa2048' : undefined;
  if (area.type === TPM_ALG.ECC) return area.curveId === TPM_ECC.NIST_P256 ? 'eccp256' : area.curveId === TPM_ECC.NIST_P384 ? 'eccp384' : undefined;
  return undefined;
}

/** Known card key policies: digest (hex) -> what it allows. */
const KNOWN_POLICIES = new Map([[Buffer.from(CERTIFY_POLICY_DIGEST).toString('hex'), 'PolicyCommandCode(TPM2_Certify): the AIK may certify it, nothing else']]);

/** In words, what a policy digest is (or that it is no card policy). */
export function describePolicy(authPolicy: Uint8Array): string {
  if (authPolicy.length === 0) return 'no policy';
  return KNOWN_POLICIES.get(Buffer.from(authPolicy).toString('hex')) ?? `policy ${Buffer.from(authPolicy).toString('hex')}, not one of the card's`;
}

/**
 * The public area (without its key) of a key the card generates with `algorithm`: the same for
 * every PIN policy (see above), which is why a verifier can check the policy digest but not the
 * PIN policy.
 */
export function expectedCardKey(algorithm: KeyAlgorithm, exponent = 65537): TpmPublic {
  return withoutUnique(keyTemplate(algorithm, false, algorithm === 'rsa2048' ? { exponent } : undefined));
}

/** What protects a card key of a slot with `pinPolicy`, in words (not visible in the TPM object). */
export function pinPolicyProtection(pinPolicy: SlotPinPolicy): string {
  return pinPolicy === 'never'
    ? 'PIN policy never: its authValue is the card\'s free secret, usable without the PIN'
    : `PIN policy ${pinPolicy}: its authValue is boxed under the PIN, the card asks for the PIN ${pinPolicy === 'always' ? 'before every use' : 'once per session'}`;
}

/** Same TPMT_PUBLIC apart from the key itself. */
export function sameTemplate(a: TpmPublic, b: TpmPublic): boolean {
  return Buffer.from(marshalPublic(withoutUnique(a))).equals(Buffer.from(marshalPublic(withoutUnique(b))));
}
