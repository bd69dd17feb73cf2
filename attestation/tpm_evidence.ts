/**
 * The TPM's evidence about one card key, carried in a non-critical extension of the slot
 * certificate (OID_TPM_KEY_EVIDENCE, oids.ts):
 *
 *   TpmKeyEvidence ::= SEQUENCE {
 *     version    INTEGER (1 | 2),
 *     slot       INTEGER,       -- PIV key reference (0x9A ...)
 *     serial     INTEGER,       -- the card's serial (GET SERIAL)
 *     keyPublic  OCTET STRING,  -- the key's TPMT_PUBLIC with an EMPTY unique field: the verifier
 *                               --   fills it from the certificate's public key, so the name it
 *                               --   recomputes proves the certificate's key is the certified one
 *     attest     OCTET STRING,  -- TPMS_ATTEST from TPM2_Certify, exactly as the AIK signed it
 *     signature  OCTET STRING,  -- DER ECDSA-SHA256 signature by the AIK over attest
 *     -- version 2 only:
 *     pinPolicy  INTEGER,       -- the slot's PIN policy as the card applies it: 1 never, 2 once, 3 always
 *     touchPolicy INTEGER       -- the slot's touch policy byte (stored and reported; no sensor)
 *   }
 *
 * TPM2_Certify's extraData (qualifyingData) binds the evidence to the slot and card the
 * certificate names (and, version 2, to the slot's policies):
 *   version 1  SHA-256("tpmvsc/attest\0" || u8 slot || u32 serial)
 *   version 2  SHA-256("tpmvsc/attest\0" || u8 slot || u32 serial || u8 pinPolicy || u8 touchPolicy)
 * Version 1 is what cards made slot certificates with before the policies were added; verifiers
 * still read it (the policies are then unknown).
 */
import { createHash, type KeyObject } from 'node:crypto';
import * as asn1js from 'asn1js';
import { TPM_ALG, Reader, marshalPublic, readPublic, type TpmPublic } from '../tpm/index.js';
import { AttestationError } from './attestation_error.js';
import { arrayBuffer } from './asn1_bytes.js';
import { PIN_POLICY_BYTE, pinPolicyFromByte, type SlotPinPolicy } from '../applet/key_slots.js';

/** The slot's policies as the card applies them (version 2 evidence). */
export interface SlotUsage {
  pinPolicy: SlotPinPolicy;
  touchPolicy: number;
}

export interface KeyEvidence {
  slot: number;
  serial: number;
  /** TPMT_PUBLIC of the key, unique field empty. */
  keyPublic: TpmPublic;
  attest: Uint8Array;
  signature: Uint8Array;
  /** Present in version 2 evidence (what ATTEST makes now). */
  usage?: SlotUsage;
}

// A copy: a Buffer's .buffer may be a shared pool much larger than the Buffer.

/** DER INTEGER of a non-negative safe integer (asn1js's own number path is unreliable above 2^23). */
function unsignedInteger(value: number): asn1js.Integer {
  let hex = value.toString(16);
  if (hex.length % 2) hex = `0${hex}`;
  if (parseInt(hex.slice(0, 2), 16) & 0x80) hex = `00${hex}`;
  return new asn1js.Integer({ valueHex: arrayBuffer(new Uint8Array(Buffer.from(hex, 'hex'))) });
}

export function qualifyingDataFor(slot: number, serial: number, usage?: SlotUsage): Uint8Array {
  const tail = Buffer.alloc(usage ? 7 : 5);
  tail.writeUInt8(slot & 0xff, 0);
  tail.writeUInt32BE(serial >>> 0, 1);
  if (usage) {
    tail.writeUInt8(PIN_POLICY_BYTE[usage.pinPolicy], 5);
    tail.writeUInt8(usage.touchPolicy & 0xff, 6);
  }
  return new Uint8Array(createHash('sha256').update('tpmvsc/attest\0').update(tail).digest());
}

/** The public area without its key (what the evidence carries). */
export function withoutUnique(area: TpmPublic): TpmPublic {
  if (area.type === TPM_ALG.ECC) return { ...area, unique: { x: new Uint8Array(0), y: new Uint8Array(0) } };
  return { ...area, unique: new Uint8Array(0) };
}

function fromBase64Url(text: string | undefined, size?: number): Uint8Array {
  const bytes = new Uint8Array(Buffer.from(text ?? '', 'base64url'));
  if (size === undefined || bytes.length >= size) return bytes;
  const out = new Uint8Array(size);
  out.set(bytes, size - bytes.length);
  return out;
}

/** The public area with `key` as its unique field; refuses a key of another type, size or exponent. */
export function withKey(template: TpmPublic, key: KeyObject): TpmPublic {
  const jwk = key.export({ format: 'jwk' });
  if (template.type === TPM_ALG.RSA && jwk.kty === 'RSA') {
    const modulus = fromBase64Url(jwk.n);
    const exponent = Buffer.from(fromBase64Url(jwk.e)).readUIntBE(0, Math.min(6, fromBase64Url(jwk.e).length));
    if (modulus.length * 8 !== template.keyBits) throw new AttestationError('VERIFY_FAILED', 'the certificate key size differs from the TPM key');
    if ((template.exponent === 0 ? 65537 : template.exponent) !== exponent) throw new AttestationError('VERIFY_FAILED', 'the certificate key exponent differs from the TPM key');
    return { ...template, unique: modulus };
  }
  if (template.type === TPM_ALG.ECC && jwk.kty === 'EC') {
    const size = jwk.crv === 'P-256' ? 32 : jwk.crv === 'P-384' ? 48 : 0;
    const curve = size === 32 ? 0x0003 : 0x0004;
    if (size === 0 || curve !== template.curveId) throw new AttestationError('VERIFY_FAILED', 'the certificate key curve differs from the TPM key');
    return { ...template, unique: { x: fromBase64Url(jwk.x, size), y: fromBase64Url(jwk.y, size) } };
  }
  throw new AttestationError('VERIFY_FAILED', 'the certificate key type differs from the TPM key');
}

export function encodeKeyEvidence(evidence: KeyEvidence): Uint8Array {
  const sequence = new asn1js.Sequence({
    value: [
      unsignedInteger(evidence.usage ? 2 : 1),
      unsignedInteger(evidence.slot),
      unsignedInteger(evidence.serial),
      new asn1js.OctetString({ valueHex: arrayBuffer(marshalPublic(withoutUnique(evidence.keyPublic))) }),
      new asn1js.OctetString({ valueHex: arrayBuffer(evidence.attest) }),
      new asn1js.OctetString({ valueHex: arrayBuffer(evidence.signature) }),
      ...(evidence.usage ? [unsignedInteger(PIN_POLICY_BYTE[evidence.usage.pinPolicy]), unsignedInteger(evidence.usage.touchPolicy)] : []),
    ],
  });
  return new Uint8Array(sequence.toBER());
}

export function decodeKeyEvidence(der: Uint8Array): KeyEvidence {
  const bad = (why: string): AttestationError => new AttestationError('VERIFY_FAILED', `TPM evidence extension is malformed: ${why}`);
  const parsed = asn1js.fromBER(arrayBuffer(der));
  if (parsed.offset === -1 || parsed.offset !== der.length || !(parsed.result instanceof asn1js.Sequence)) throw bad('not one DER SEQUENCE');
  const items = parsed.result.valueBlock.value;
  if (items.length === 0) throw bad('wrong number of fields');
  const integer = (i: number): number => {
    const item = items[i];
    if (!(item instanceof asn1js.Integer)) throw bad(`field ${i} is not an INTEGER`);
    const bytes = item.valueBlock.valueHexView;
    if (bytes.length === 0 || bytes.length > 6 || bytes[0]! & 0x80) throw bad(`field ${i} is out of range`);
    return Buffer.from(bytes).readUIntBE(0, bytes.length);
  };
  const octets = (i: number): Uint8Array => {
    const item = items[i];
    if (!(item instanceof asn1js.OctetString)) throw bad(`field ${i} is not an OCTET STRING`);
    return new Uint8Array(item.valueBlock.valueHexView);
  };
  const version = integer(0);
  if (version !== 1 && version !== 2) throw bad('unknown version');
  if (items.length !== (version === 1 ? 6 : 8)) throw bad('wrong number of fields');
  const keyPublicBytes = octets(3);
  let keyPublic: TpmPublic;
  try {
    const reader = new Reader(keyPublicBytes);
    keyPublic = readPublic(reader);
    reader.done('TPMT_PUBLIC');
  } catch (e) {
    throw new AttestationError('VERIFY_FAILED', 'TPM evidence extension is malformed: keyPublic is not a TPMT_PUBLIC', { cause: e });
  }
  const evidence: KeyEvidence = { slot: integer(1), serial: integer(2), keyPublic, attest: octets(4), signature: octets(5) };
  if (version === 2) {
    const pinPolicy = pinPolicyFromByte(integer(6));
    const touchPolicy = integer(7);
    if (!pinPolicy || touchPolicy > 0xff) throw bad('unknown PIN or touch policy');
    evidence.usage = { pinPolicy, touchPolicy };
  }
  return evidence;
}
