/**
 * The initial state of a new card, and the factory data objects that RESET restores.
 *
 * With /generate the card gets what PIV middleware needs to enroll right away:
 * discovery object, CHUID (fresh GUID), CCC and an empty key history. Without it
 * the card is blank: SELECT and management-key operations work, objects answer 6A82
 * until a card management system writes them (PUT DATA with the management key).
 */
import { randomBytes, randomInt } from 'node:crypto';
import type { PinPolicy } from '../common/control_protocol.js';
import type { PinLifetime } from '../common/pin_lifetime.js';
import { CCC_TAG, CHUID_TAG, DISCOVERY_TAG, KEY_HISTORY_TAG, objectKey } from './data_objects.js';
import type { ManagementKeyAlgorithm } from './key_vault.js';
import { PIV_STATE_FORMAT, type PivCardState } from './piv_state.js';
import { concatBytes, decodeTlvs, findTlv, tlv } from './tlv.js';

/** PIV application identifier A0 00 00 03 08 00 00 10 00 01 00 (SP 800-73-4 Part 1 §2.2). */
export const PIV_AID = Uint8Array.of(0xa0, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x10, 0x00, 0x01, 0x00);

export interface ProvisionOptions {
  /** GET SERIAL value; the caller keeps it unique among its cards. Default: random. */
  serial?: number;
  /** Friendly name (Windows /name). */
  name: string;
  pinPolicy: PinPolicy;
  /** The card's own verified-PIN lifetime (/pinlifetime); absent: it follows the daemon's default. */
  pinLifetime?: PinLifetime;
  hasPuk: boolean;
  /** Algorithm of the management key the vault was created with. Default 3DES (Windows admin key). */
  managementKeyAlgorithm?: ManagementKeyAlgorithm;
  /** Windows /generate: provision discovery, CHUID, CCC and key history. */
  generate: boolean;
  /** vault.state() of the card's freshly created vault. */
  vaultState: unknown;
  /** CHUID GUID (16 bytes, not all zero). Default: random. Ignored without generate. */
  guid?: Uint8Array;
}

/** A random serial in the range YubiKeys use (7..10 decimal digits). */
export function randomSerial(): number {
  return randomInt(1_000_000, 0x7fffffff);
}

export function provisionCard(options: ProvisionOptions): PivCardState {
  let guid: string | null = null;
  if (options.generate) {
    const bytes = options.guid ?? randomBytes(16);
    if (bytes.length !== 16 || bytes.every((byte) => byte === 0)) throw new RangeError('GUID must be 16 bytes, not all zero');
    guid = Buffer.from(bytes).toString('hex');
  }
  const state: PivCardState = {
    format: PIV_STATE_FORMAT,
    serial: options.serial ?? randomSerial(),
    name: options.name,
    hasPuk: options.hasPuk,
    pinPolicy: { ...options.pinPolicy },
    ...(options.pinLifetime ? { pinLifetime: { ...options.pinLifetime } } : {}),
    generate: options.generate,
    guid,
    managementKeyAlgorithm: options.managementKeyAlgorithm ?? 'tdes',
    objects: {},
    sealedObjects: {},
    keys: {},
    vault: options.vaultState,
  };
  state.objects = factoryObjects(state);
  return state;
}

/**
 * The objects a card has when new (and again after RESET): none for a blank card,
 * discovery + CHUID + CCC + key history for a /generate card. RESET keeps serial and
 * GUID: the card's identity lasts as long as the card (Windows cards keep theirs).
 */
export function factoryObjects(state: Pick<PivCardState, 'generate' | 'guid'>): Record<string, string> {
  if (!state.generate || state.guid === null) return {};
  const guid = new Uint8Array(Buffer.from(state.guid, 'hex'));
  const entries: Array<[number, Uint8Array]> = [
    [DISCOVERY_TAG, discoveryObjectValue()],
    [CHUID_TAG, chuidValue(guid)],
    [CCC_TAG, cccValue(guid)],
    [KEY_HISTORY_TAG, keyHistoryValue(0, 0)],
  ];
  return Object.fromEntries(entries.map(([tag, value]) => [objectKey(tag), Buffer.from(value).toString('base64')]));
}

/**
 * Discovery object content (SP 800-73-4 Part 1 §3.3.2), constant for the card's life:
 *   4F 0B <PIV AID>      application identifier
 *   5F 2F 02 40 00       PIN usage policy: PIV card application PIN only, no global PIN
 */
export function discoveryObjectValue(): Uint8Array {
  return concatBytes(tlv(0x4f, PIV_AID), tlv(0x5f2f, Uint8Array.of(0x40, 0x00)));
}

/**
 * CHUID content (SP 800-73-4 Part 1 Table 9):
 *   30 19 FASC-N   34 10 GUID   35 08 expiration "YYYYMMDD"   3E 00 signature   FE 00 EDC
 * The FASC-N is the all-nines "non-federal issuer" value; the GUID identifies the card.
 */
export function chuidValue(guid: Uint8Array): Uint8Array {
  return concatBytes(
    tlv(0x30, encodeFascn(NON_FEDERAL_FASCN)),
    tlv(0x34, guid),
    tlv(0x35, new TextEncoder().encode('20991231')),
    tlv(0x3e),
    tlv(0xfe),
  );
}

/**
 * The GUID the card presents now: tag 34 of its CHUID object (which a client may have
 * rewritten since /generate, e.g. `ykman piv objects generate chuid`), as 32 hex digits;
 * null when the card has no CHUID or its CHUID holds no 16-byte GUID.
 */
export function presentedGuid(objects: Readonly<Record<string, string>>): string | null {
  const stored = objects[objectKey(CHUID_TAG)];
  if (stored === undefined) return null;
  try {
    const guid = findTlv(decodeTlvs(Buffer.from(stored, 'base64')), 0x34);
    return guid?.length === 16 ? Buffer.from(guid).toString('hex') : null;
  } catch {
    return null; // whatever a client wrote there is not TLV: no GUID to show
  }
}

/**
 * CCC content (SP 800-73-4 Part 1 Table 8):
 *   F0 15 card identifier: GSC-RID A0 00 00 01 16, manufacturer FF, card type 02, 14-byte id
 *   F1 01 21  container version    F2 01 21  grammar version   F3 00 applications URL
 *   F4 01 00  PKCS#15              F5 01 10  data model 0x10   F6 00 access control rule table
 *   F7 00 card APDUs  FA 00 redirection  FB 00 capability tuples  FC 00 status tuples
 *   FD 00 next CCC    FE 00 error detection code
 */
export function cccValue(guid: Uint8Array): Uint8Array {
  const cardIdentifier = concatBytes(Uint8Array.of(0xa0, 0x00, 0x00, 0x01, 0x16, 0xff, 0x02), guid.subarray(0, 14));
  return concatBytes(
    tlv(0xf0, cardIdentifier),
    tlv(0xf1, Uint8Array.of(0x21)),
    tlv(0xf2, Uint8Array.of(0x21)),
    tlv(0xf3),
    tlv(0xf4, Uint8Array.of(0x00)),
    tlv(0xf5, Uint8Array.of(0x10)),
    tlv(0xf6),
    tlv(0xf7),
    tlv(0xfa),
    tlv(0xfb),
    tlv(0xfc),
    tlv(0xfd),
    tlv(0xfe),
  );
}

/** Key history content (SP 800-73-4 Part 1 Table 19): C1 keys with on-card certs, C2 off-card, FE EDC. */
export function keyHistoryValue(onCard: number, offCard: number): Uint8Array {
  return concatBytes(tlv(0xc1, Uint8Array.of(onCard)), tlv(0xc2, Uint8Array.of(offCard)), tlv(0xfe));
}

/** FASC-N fields (TIG SCEPACS): agency, system, credential, CS, ICI, PI, OC, OI, POA. */
export interface Fascn {
  agencyCode: string; // 4 digits
  systemCode: string; // 4
  credentialNumber: string; // 6
  credentialSeries: string; // 1
  individualCredentialIssue: string; // 1
  personIdentifier: string; // 10
  organizationalCategory: string; // 1
  organizationalIdentifier: string; // 4
  personOrganizationAssociation: string; // 1
}

export const NON_FEDERAL_FASCN: Fascn = {
  agencyCode: '9999',
  systemCode: '9999',
  credentialNumber: '999999',
  credentialSeries: '0',
  individualCredentialIssue: '1',
  personIdentifier: '0000000000',
  organizationalCategory: '3', // commercial enterprise
  organizationalIdentifier: '0000',
  personOrganizationAssociation: '1',
};

/**
 * Packs a FASC-N into 25 bytes: 40 characters of 5 bits each (4 data bits
 * least-significant first, then an odd-parity bit), most significant bit first:
 *   SS agency FS system FS credential FS CS FS ICI FS PI OC OI POA ES LRC
 * SS = 0xB, FS = 0xD, ES = 0xF; LRC = XOR of the data bits of all other characters.
 */
export function encodeFascn(fields: Fascn): Uint8Array {
  const SS = 0xb;
  const FS = 0xd;
  const ES = 0xf;
  const digits = (text: string): number[] => [...text].map((char) => Number(char));
  const values = [
    SS,
    ...digits(fields.agencyCode),
    FS,
    ...digits(fields.systemCode),
    FS,
    ...digits(fields.credentialNumber),
    FS,
    ...digits(fields.credentialSeries),
    FS,
    ...digits(fields.individualCredentialIssue),
    FS,
    ...digits(fields.personIdentifier),
    ...digits(fields.organizationalCategory),
    ...digits(fields.organizationalIdentifier),
    ...digits(fields.personOrganizationAssociation),
    ES,
  ];
  values.push(values.reduce((lrc, value) => lrc ^ value, 0));
  if (values.length !== 40) throw new RangeError('FASC-N fields have the wrong number of digits');
  let bits = '';
  for (const value of values) {
    let chunk = '';
    for (let bit = 0; bit < 4; bit++) chunk += (value >> bit) & 1;
    const ones = [...chunk].filter((c) => c === '1').length;
    bits += chunk + (ones % 2 === 0 ? '1' : '0');
  }
  const out = new Uint8Array(25);
  for (let index = 0; index < 25; index++) out[index] = parseInt(bits.slice(index * 8, index * 8 + 8), 2);
  return out;
}
