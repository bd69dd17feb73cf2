/**
 * The PIV data objects the card holds (SP 800-73-4 Part 1 Table 3 and the Yubico
 * objects), one row each, ordered by tag within each group as in the spec.
 *
 * read:  'always' free read; 'pin' only after VERIFY (6982 before).
 * Every write (PUT DATA) needs management-key (9B) authentication.
 * writable false: the object is fixed for the card's life (discovery object).
 *
 * Objects are stored as the value inside the 53 wrapper (GET DATA answers
 * 53 L value); the discovery object is the exception: it is answered as 7E L value.
 */
export type ReadAccess = 'always' | 'pin';

export interface DataObjectSpec {
  tag: number;
  name: string;
  read: ReadAccess;
  writable: boolean;
}

function row(tag: number, name: string, read: ReadAccess, writable = true): DataObjectSpec {
  return { tag, name, read, writable };
}

/** First and last retired-key certificate objects (slots 82..95). */
export const RETIRED_CERT_FIRST = 0x5fc10d;
export const RETIRED_CERT_COUNT = 20;

export const DISCOVERY_TAG = 0x7e;
export const CHUID_TAG = 0x5fc102;
export const CCC_TAG = 0x5fc107;
export const KEY_HISTORY_TAG = 0x5fc10c;

export const DATA_OBJECTS: readonly DataObjectSpec[] = [
  row(DISCOVERY_TAG, 'Discovery Object', 'always', false),
  row(0x7f61, 'Biometric Information Templates Group Template', 'always'),
  row(0x5fc101, 'X.509 Certificate for Card Authentication (9E)', 'always'),
  row(CHUID_TAG, 'Card Holder Unique Identifier', 'always'),
  row(0x5fc103, 'Cardholder Fingerprints', 'pin'),
  row(0x5fc105, 'X.509 Certificate for PIV Authentication (9A)', 'always'),
  row(0x5fc106, 'Security Object', 'always'),
  row(CCC_TAG, 'Card Capability Container', 'always'),
  row(0x5fc108, 'Cardholder Facial Image', 'pin'),
  row(0x5fc109, 'Printed Information', 'pin'),
  row(0x5fc10a, 'X.509 Certificate for Digital Signature (9C)', 'always'),
  row(0x5fc10b, 'X.509 Certificate for Key Management (9D)', 'always'),
  row(KEY_HISTORY_TAG, 'Key History Object', 'always'),
  ...Array.from({ length: RETIRED_CERT_COUNT }, (_, index) =>
    row(RETIRED_CERT_FIRST + index, `Retired X.509 Certificate for Key Management ${index + 1}`, 'always'),
  ),
  row(0x5fc121, 'Cardholder Iris Images', 'pin'),
  row(0x5fc122, 'Secure Messaging Certificate Signer', 'always'),
  row(0x5fc123, 'Pairing Code Reference Data Container', 'pin'),
  row(0x5fff00, 'Yubico Admin Data', 'always'),
  row(0x5fff01, 'Attestation Certificate', 'always'),
];

export function findDataObject(tag: number): DataObjectSpec | undefined {
  return DATA_OBJECTS.find((spec) => spec.tag === tag);
}

/** Largest object value (inside 53) the card stores: a 3 KB certificate plus its wrapping. */
export const MAX_OBJECT_BYTES = 4096;

/** State key of an object: its tag in lower-case hex ("5fc102"). */
export function objectKey(tag: number): string {
  return tag.toString(16);
}
