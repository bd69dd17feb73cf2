/**
 * Keeps the Key History object (5FC10C) in step with the retired certificates.
 * C1 (keysWithOnCardCerts) = number of retired certificate objects present counted
 * from the first (5FC10D, slot 82) without a gap: OpenSC reads retired certificates
 * 1..C1 only, so a gap ends the count. C2 and any URL (F3) are kept as written.
 */
import { KEY_HISTORY_TAG, objectKey, RETIRED_CERT_COUNT, RETIRED_CERT_FIRST } from './data_objects.js';
import { keyHistoryValue } from './provision.js';
import { CardError } from './status_words.js';
import { concatBytes, decodeTlvs, tlv, type Tlv } from './tlv.js';

export function retiredCertificatesOnCard(objects: Record<string, string>): number {
  let count = 0;
  while (count < RETIRED_CERT_COUNT && objects[objectKey(RETIRED_CERT_FIRST + count)] !== undefined) count++;
  return count;
}

/** Rewrites C1 in the stored key history; creates the object when retired certificates exist without it. */
export function syncKeyHistory(objects: Record<string, string>): void {
  const key = objectKey(KEY_HISTORY_TAG);
  const onCard = retiredCertificatesOnCard(objects);
  const stored = objects[key];
  if (stored === undefined) {
    if (onCard > 0) objects[key] = Buffer.from(keyHistoryValue(onCard, 0)).toString('base64');
    return;
  }
  let entries: Tlv[];
  try {
    entries = decodeTlvs(new Uint8Array(Buffer.from(stored, 'base64')));
  } catch (error) {
    if (!(error instanceof CardError)) throw error;
    entries = [];
  }
  const rest = entries.filter((entry) => entry.tag !== 0xc1 && entry.tag !== 0xc2 && entry.tag !== 0xfe);
  const offCard = entries.find((entry) => entry.tag === 0xc2)?.value[0] ?? 0;
  const value = concatBytes(
    tlv(0xc1, Uint8Array.of(onCard)),
    tlv(0xc2, Uint8Array.of(offCard)),
    ...rest.map((entry) => tlv(entry.tag, entry.value)),
    tlv(0xfe),
  );
  objects[key] = Buffer.from(value).toString('base64');
}
