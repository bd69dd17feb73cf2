/**
 * PIV key references (SP 800-73-4 Part 1 Table 4b) with their certificate objects
 * and default PIN policies (SP 800-73-4 Part 1 §3.2 and the tokens' behaviour).
 *
 *   9A PIV Authentication     PIN once per session
 *   9C Digital Signature      PIN right before every use
 *   9D Key Management         PIN once per session
 *   9E Card Authentication    no PIN
 *   82..95 retired Key Mgmt   PIN once per session
 */
import { RETIRED_CERT_FIRST } from './data_objects.js';

/** PIV/Yubico PIN policy byte (AA): 01 never, 02 once, 03 always. */
export type SlotPinPolicy = 'never' | 'once' | 'always';

export const PIN_POLICY_BYTE: Record<SlotPinPolicy, number> = { never: 1, once: 2, always: 3 };

export function pinPolicyFromByte(value: number): SlotPinPolicy | undefined {
  return value === 1 ? 'never' : value === 2 ? 'once' : value === 3 ? 'always' : undefined;
}

export interface KeySlotSpec {
  slot: number;
  name: string;
  certificateTag: number;
  defaultPinPolicy: SlotPinPolicy;
}

export const MANAGEMENT_KEY_SLOT = 0x9b;
export const PIN_REFERENCE = 0x80;
export const PUK_REFERENCE = 0x81;

export const KEY_SLOTS: readonly KeySlotSpec[] = [
  { slot: 0x9a, name: 'PIV Authentication', certificateTag: 0x5fc105, defaultPinPolicy: 'once' },
  { slot: 0x9c, name: 'Digital Signature', certificateTag: 0x5fc10a, defaultPinPolicy: 'always' },
  { slot: 0x9d, name: 'Key Management', certificateTag: 0x5fc10b, defaultPinPolicy: 'once' },
  { slot: 0x9e, name: 'Card Authentication', certificateTag: 0x5fc101, defaultPinPolicy: 'never' },
  ...Array.from({ length: 20 }, (_, index) => ({
    slot: 0x82 + index,
    name: `Retired Key Management ${index + 1}`,
    certificateTag: RETIRED_CERT_FIRST + index,
    defaultPinPolicy: 'once' as const,
  })),
];

export function findKeySlot(slot: number): KeySlotSpec | undefined {
  return KEY_SLOTS.find((spec) => spec.slot === slot);
}

/** State key of a slot: two lower-case hex digits ("9a"). */
export function slotKey(slot: number): string {
  return slot.toString(16).padStart(2, '0');
}
