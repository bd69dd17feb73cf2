/**
 * Golden APDU transcripts: command hex -> expected response pattern, one row per
 * rule (the comment/name says which). Patterns: hex, `{n}` any n bytes, `{*}` any.
 * Each table runs on a fresh card; rows run in order and may depend on earlier rows.
 * A row with `auth: true` first performs management-key mutual authentication.
 */
import test from 'ava';
import { makeTestCard, matchesPattern, mutualAuthenticate, verifyCommand, type TestCardOptions } from '../helpers/applet_harness.js';

interface Row {
  rule: string;
  command: string;
  expect: string;
  /** Perform 9B mutual authentication before this row. */
  auth?: boolean;
  /** Power-cycle the card before this row. */
  powerCycle?: boolean;
}

const SELECT_ANSWER =
  '6143 4f06000010000100 79074f05a000000308 5016 54504d205669727475616c20536d6172742043617264' +
  ' ac18 800103 800108 80010a 80010c 800107 800111 800114 060100 9000';
const DISCOVERY = '7e124f0ba0000003080000100001005f2f024000';
const PIN_8 = '3132333435363738';
const WRONG_8 = '3131313131313131';

/** Five wrong PINs (VERIFY) or PUKs (RESET RETRY COUNTER): 63C4 down to 63C1, then 6983. */
function fiveWrong(code: 'PIN' | 'PUK'): Row[] {
  const command = code === 'PIN' ? `0020008008${WRONG_8}` : `002c008010${WRONG_8}${PIN_8}`;
  return Array.from({ length: 5 }, (_, i) => ({ rule: `wrong ${code} ${i + 1}`, command, expect: i === 4 ? '6983' : `63c${4 - i}` }));
}

const TABLES: Array<{ title: string; card?: TestCardOptions; rows: Row[] }> = [
  {
    title: 'SELECT and identification',
    rows: [
      { rule: 'SELECT by 5-byte RID prefix (libykpiv, ykman)', command: '00a4040005a000000308', expect: SELECT_ANSWER },
      { rule: 'SELECT by 9-byte prefix (OpenSC)', command: '00a4040009a00000030800001000', expect: SELECT_ANSWER },
      { rule: 'SELECT by full AID with Le (pivy)', command: '00a404000ba000000308000010000100' + '00', expect: SELECT_ANSWER },
      { rule: 'SELECT extended form (pivy probes it)', command: '00a4040000000ba0000003080000100001000000', expect: SELECT_ANSWER },
      { rule: 'unknown AID -> 6A82 (OTP applet probe)', command: '00a4040008a000000527200101', expect: '6a82' },
      { rule: 'AID shorter than the RID -> 6A82', command: '00a4040004a0000003', expect: '6a82' },
      { rule: 'AID longer than PIV AID -> 6A82', command: '00a404000ca00000030800001000010000', expect: '6a82' },
      { rule: 'PIV stays selected after a failed SELECT', command: '00fd0000', expect: '0504039000' },
      { rule: 'SELECT with P1 other than 04 -> 6A86', command: '00a4000002 3f00', expect: '6a86' },
      { rule: 'GET VERSION -> 5.4.3', command: '00fd000000', expect: '0504039000' },
      { rule: 'GET VERSION with data -> 6700', command: '00fd00000100', expect: '6700' },
      { rule: 'GET VERSION bad P1 -> 6A86', command: '00fd0100', expect: '6a86' },
      { rule: 'GET SERIAL -> 4 bytes big-endian', command: '00f80000', expect: '00bc614e9000' },
      { rule: 'short Le smaller than a 3-byte answer -> first Ne bytes, 61xx', command: '00fd000002', expect: '05046101' },
      { rule: 'GET RESPONSE fetches the rest', command: '00c0000000', expect: '039000' },
      { rule: 'unknown INS -> 6D00', command: '00e0000000', expect: '6d00' },
      { rule: 'unknown CLA -> 6E00', command: '80fd0000', expect: '6e00' },
      { rule: 'secure messaging CLA -> 6882', command: '0cfd0000', expect: '6882' },
      { rule: 'truncated APDU -> 6700', command: '00fd00', expect: '6700' },
      { rule: 'Lc larger than the data -> 6700', command: '00a4040009a000000308', expect: '6700' },
      { rule: 'extra bytes after Le -> 6700', command: '00a4040005a0000003080000', expect: '6700' },
      { rule: 'extended Lc of zero -> 6700', command: '00a4040000000000', expect: '6700' },
      { rule: 'GET RESPONSE with nothing pending -> 6985', command: '00c0000000', expect: '6985' },
    ],
  },
  {
    title: 'GET DATA on a /generate card',
    rows: [
      { rule: 'discovery object 7E, constant form', command: '00cb3fff035c017e00', expect: DISCOVERY + '9000' },
      { rule: 'CHUID with FASC-N and the GUID', command: '00cb3fff055c035fc10200', expect: '533b3019d4e739da739ced39ce739d836858210842108421c84210c3eb3410101112131415161718191a1b1c1d1e1f3508{8}3e00fe009000' },
      { rule: 'CCC present', command: '00cb3fff055c035fc107', expect: '5333f015a000000116ff02{14}f10121f20121f300f40100f50110f600f700fa00fb00fc00fd00fe009000' },
      { rule: 'key history: no retired keys', command: '00cb3fff055c035fc10c', expect: '5308c10100c20100fe009000' },
      { rule: 'absent certificate -> 6A82', command: '00cb3fff055c035fc105', expect: '6a82' },
      { rule: 'unknown object -> 6A82', command: '00cb3fff055c035fc1ff', expect: '6a82' },
      { rule: 'printed information before VERIFY -> 6982', command: '00cb3fff055c035fc109', expect: '6982' },
      { rule: 'facial image before VERIFY -> 6982', command: '00cb3fff055c035fc108', expect: '6982' },
      { rule: 'security object is free read (absent) -> 6A82', command: '00cb3fff055c035fc106', expect: '6a82' },
      { rule: 'GET DATA with bad P1P2 -> 6A86', command: '00cb0000055c035fc102', expect: '6a86' },
      { rule: 'GET DATA without 5C -> 6A80', command: '00cb3fff055d035fc102', expect: '6a80' },
      { rule: 'GET DATA with trailing garbage -> 6A80', command: '00cb3fff065c035fc10200', expect: '6a80' },
      { rule: 'GET DATA with short Le -> first Ne bytes, 61xx', command: '00cb3fff035c017e10', expect: DISCOVERY.slice(0, 32) + '6104' },
      { rule: 'OpenSC length probe: CHUID with Le 08 -> first 8 bytes, 61xx (not 6Cxx)', command: '00cb3fff055c035fc10208', expect: '533b3019d4e739da6135' },
      { rule: 'GET RESPONSE after the probe -> the other 0x35 bytes', command: '00c0000000', expect: '739ced39ce739d836858210842108421c84210c3eb3410101112131415161718191a1b1c1d1e1f3508{8}3e00fe009000' },
      { rule: 'VERIFY', command: verifyCommand('12345678'), expect: '9000' },
      { rule: 'printed information after VERIFY, absent -> 6A82', command: '00cb3fff055c035fc109', expect: '6a82' },
    ],
  },
  {
    title: 'blank card (no /generate)',
    card: { generate: false },
    rows: [
      { rule: 'SELECT works', command: '00a4040005a000000308', expect: SELECT_ANSWER },
      { rule: 'discovery absent -> 6A82', command: '00cb3fff035c017e', expect: '6a82' },
      { rule: 'CHUID absent -> 6A82', command: '00cb3fff055c035fc102', expect: '6a82' },
      { rule: 'PUT DATA CHUID with management key', command: '00db3fff0d5c035fc1025306340401020304', expect: '9000', auth: true },
      { rule: 'written object reads back', command: '00cb3fff055c035fc102', expect: '5306340401020304' + '9000' },
      { rule: 'discovery object is not writable -> 6A80', command: '00db3fff095c017e53044f020000', expect: '6a80' },
    ],
  },
  {
    title: 'PUT DATA and key history',
    rows: [
      { rule: 'PUT DATA without 9B -> 6982', command: '00db3fff0a5c035fc10553037001aa', expect: '6982' },
      { rule: 'PUT DATA certificate 9A', command: '00db3fff115c035fc105530a7003308100710100fe00', expect: '9000', auth: true },
      { rule: 'certificate reads back', command: '00cb3fff055c035fc105', expect: '530a7003308100710100fe009000' },
      { rule: 'PUT DATA unknown tag -> 6A80', command: '00db3fff0a5c035fc1ff53037001aa', expect: '6a80' },
      { rule: 'PUT DATA bad P1P2 -> 6A86', command: '00db3ffe0a5c035fc10553037001aa', expect: '6a86' },
      { rule: 'PUT DATA missing 53 -> 6A80', command: '00db3fff0a5c035fc10554037001aa', expect: '6a80' },
      { rule: 'PUT DATA 53 length past the data -> 6A80', command: '00db3fff0a5c035fc10553047001aa', expect: '6a80' },
      { rule: 'retired cert 1 (82)', command: '00db3fff0a5c035fc10d53037001aa', expect: '9000' },
      { rule: 'retired cert 3 (84): gap at 2', command: '00db3fff0a5c035fc10f53037001aa', expect: '9000' },
      { rule: 'key history C1 counts 82.. contiguously = 1', command: '00cb3fff055c035fc10c', expect: '5308c10101c20100fe009000' },
      { rule: 'retired cert 2 (83) closes the gap', command: '00db3fff0a5c035fc10e53037001aa', expect: '9000' },
      { rule: 'key history C1 = 3', command: '00cb3fff055c035fc10c', expect: '5308c10103c20100fe009000' },
      { rule: '53 00 deletes retired cert 1', command: '00db3fff075c035fc10d5300', expect: '9000' },
      { rule: 'deleted object -> 6A82', command: '00cb3fff055c035fc10d', expect: '6a82' },
      { rule: 'key history C1 = 0 after deleting cert 1', command: '00cb3fff055c035fc10c', expect: '5308c10100c20100fe009000' },
      { rule: 'power cycle drops 9B authentication', command: '00db3fff0a5c035fc10553037001aa', expect: '6982', powerCycle: true },
    ],
  },
  {
    title: 'VERIFY and PIN status',
    rows: [
      { rule: 'empty VERIFY (4 bytes, OpenSC): not verified -> 63C5', command: '00200080', expect: '63c5' },
      { rule: 'empty VERIFY (5 bytes, libykpiv): not verified -> 63C5', command: '0020008000', expect: '63c5' },
      { rule: 'wrong PIN -> 63C4', command: '00200080083131313131313131', expect: '63c4' },
      { rule: 'right PIN -> 9000, counter reset', command: `0020008008${PIN_8}`, expect: '9000' },
      { rule: 'empty VERIFY when verified -> 9000', command: '00200080', expect: '9000' },
      { rule: 'VERIFY with trailing Le (case 4) still verifies', command: `0020008008${PIN_8}00`, expect: '9000' },
      { rule: 'VERIFY FF 80 logs out', command: '0020ff80', expect: '9000' },
      { rule: 'empty VERIFY after logout -> 63C5', command: '00200080', expect: '63c5' },
      { rule: 'VERIFY FF 80 with data -> 6700', command: '0020ff800131', expect: '6700' },
      { rule: 'global PIN 00 -> 6A88', command: `0020000008${PIN_8}`, expect: '6a88' },
      { rule: 'VERIFY P1 01 -> 6A86', command: `0020018008${PIN_8}`, expect: '6a86' },
      { rule: 'PIN shorter than 4 bytes -> 6A80, no try used', command: '00200080083132ffffffffffff', expect: '6a80' },
      { rule: 'tries still 5', command: '00200080', expect: '63c5' },
      { rule: 'PIN metadata: default, 5 of 5', command: '00f7008000', expect: '0101ff050101060205059000' },
      { rule: 'wrong 1', command: '00200080083131313131313131', expect: '63c4' },
      { rule: 'wrong 2', command: '00200080083131313131313131', expect: '63c3' },
      { rule: 'wrong 3', command: '00200080083131313131313131', expect: '63c2' },
      { rule: 'wrong 4', command: '00200080083131313131313131', expect: '63c1' },
      { rule: 'wrong 5 blocks -> 6983', command: '00200080083131313131313131', expect: '6983' },
      { rule: 'blocked: right PIN -> 6983', command: `0020008008${PIN_8}`, expect: '6983' },
      { rule: 'blocked: empty VERIFY -> 6983', command: '00200080', expect: '6983' },
      { rule: 'PIN metadata shows 0 left', command: '00f70080', expect: '0101ff050101060205009000' },
      { rule: 'RESET without 9B -> 6982 (even with the PIN blocked)', command: '00fb0000', expect: '6982' },
      { rule: 'RESET after 9B, PUK not blocked -> 6985', command: '00fb0000', expect: '6985', auth: true },
      { rule: 'unblock with PUK || new PIN', command: '002c0080103132333435363738' + '3837363534333231', expect: '9000' },
      { rule: 'new PIN works', command: '00200080083837363534333231', expect: '9000' },
    ],
  },
  {
    title: 'CHANGE REFERENCE DATA and PIN policy',
    card: { pinPolicy: { minLength: 8, maxLength: 12, uppercase: 'ALLOWED', lowercase: 'REQUIRED', digits: 'ALLOWED', specialChars: 'DISALLOWED' } },
    rows: [
      { rule: 'new PIN breaks the policy (no lowercase) -> 6A80, no try used', command: '00240080103132333435363738' + '3837363534333231', expect: '6a80' },
      { rule: 'tries still 5', command: '00200080', expect: '63c5' },
      { rule: 'new PIN too short after padding strip -> 6A80', command: '0024008010' + PIN_8 + '61626364ffffffff', expect: '6a80' },
      { rule: 'new PIN with a special char -> 6A80', command: '0024008010' + PIN_8 + '616263642d313233', expect: '6a80' },
      { rule: 'wrong old PIN -> 63C4', command: '0024008010' + '3939393939393939' + '6162636431323334', expect: '63c4' },
      { rule: 'valid change', command: '0024008010' + PIN_8 + '6162636431323334', expect: '9000' },
      { rule: 'old PIN no longer works', command: `0020008008${PIN_8}`, expect: '63c4' },
      { rule: 'new PIN works, counter back to 5', command: '00200080086162636431323334', expect: '9000' },
      { rule: 'long form: values padded to 10 each (Lc 20)', command: '0024008014' + '6162636431323334ffff' + '6162636435363738ffff', expect: '9000' },
      { rule: 'the changed PIN verifies', command: '00200080086162636435363738', expect: '9000' },
      { rule: 'a new PIN of 9 bytes -> 6A80 although the stored policy allows 12 (PIV clients send 8)', command: '0024008012' + '6162636435363738ff' + '616263643132333435', expect: '6a80' },
      { rule: 'a new PIN of 12 bytes -> 6A80 too', command: '0024008018' + '6162636435363738ffffffff' + '616263643132333435363738', expect: '6a80' },
      { rule: 'neither refusal cost a try', command: '00200080', expect: '9000' },
      { rule: 'odd Lc -> 6A80', command: '0024008011' + PIN_8 + PIN_8 + '31', expect: '6a80' },
      { rule: 'too short data -> 6A80', command: '00240080083132333431323334', expect: '6a80' },
      { rule: 'CHANGE PUK: new PUK shorter than 8 -> 6A80', command: '0024008110' + PIN_8 + '31323334ffffffff', expect: '6a80' },
      { rule: 'CHANGE PUK', command: '0024008110' + PIN_8 + '3837363534333231', expect: '9000' },
      { rule: 'PUK metadata: not default', command: '00f70081', expect: '0101ff050100060205059000' },
      { rule: 'unknown reference -> 6A88', command: '0024008210' + PIN_8 + PIN_8, expect: '6a88' },
      { rule: 'RESET RETRY COUNTER with a policy-breaking PIN -> 6A80', command: '002c008010' + '3837363534333231' + '3132333435363738', expect: '6a80' },
      { rule: 'RESET RETRY COUNTER with a wrong PUK -> 63C4', command: '002c008010' + '3131313131313131' + '6162636431323334', expect: '63c4' },
    ],
  },
  {
    // A card created before the 8-byte limit: a 12-byte PIN, a 14-byte PUK, minlen 10 maxlen 12.
    title: 'card with a PIN and a PUK longer than 8 bytes (created before the limit)',
    card: {
      pin: 'Legacy-PIN12',
      puk: 'Legacy-PUK1234',
      pinPolicy: { minLength: 10, maxLength: 12, uppercase: 'ALLOWED', lowercase: 'ALLOWED', digits: 'ALLOWED', specialChars: 'ALLOWED' },
    },
    rows: [
      { rule: 'the 12-byte PIN still verifies', command: '002000800c' + '4c65676163792d50494e3132', expect: '9000' },
      { rule: 'a change to another 12-byte PIN -> 6A80 (new values have at most 8 bytes)', command: '0024008018' + '4c65676163792d50494e3132' + '4c65676163792d50494e3334', expect: '6a80' },
      { rule: 'a change to 8 bytes (the stored minlen 10 is clamped to 8), both padded to 12', command: '0024008018' + '4c65676163792d50494e3132' + '4e65772d50494e31ffffffff', expect: '9000' },
      { rule: 'the new PIN verifies in the PIV form', command: '0020008008' + '4e65772d50494e31', expect: '9000' },
      { rule: 'the 14-byte PUK unblocks, setting an 8-byte PIN (both padded to 14)', command: '002c00801c' + '4c65676163792d50554b31323334' + '4e65772d50494e32ffffffffffff', expect: '9000' },
      { rule: 'the unblocked PIN verifies', command: '0020008008' + '4e65772d50494e32', expect: '9000' },
      { rule: 'the PUK changes to 8 bytes', command: '002400811c' + '4c65676163792d50554b31323334' + '4e65772d50554b31ffffffffffff', expect: '9000' },
      { rule: 'the new PUK works in the PIV form (8 + 8)', command: '002c008010' + '4e65772d50554b31' + '4e65772d50494e33', expect: '9000' },
      { rule: 'the PIN it set verifies', command: '0020008008' + '4e65772d50494e33', expect: '9000' },
    ],
  },
  {
    title: 'card without a PUK: admin unblock',
    card: { puk: null },
    rows: [
      { rule: 'PUK metadata -> 6A88', command: '00f70081', expect: '6a88' },
      { rule: 'CHANGE PUK -> 6A88', command: '0024008110' + PIN_8 + PIN_8, expect: '6a88' },
      { rule: 'unblock without 9B -> 6982', command: '002c008008' + '6e657770696e3132', expect: '6982' },
      { rule: 'unblock after 9B: data = new PIN', command: '002c008008' + '6e657770696e3132', expect: '9000', auth: true },
      { rule: 'new PIN verifies', command: '00200080086e657770696e3132', expect: '9000' },
      { rule: 'unblock with a policy-breaking PIN (too short) -> 6A80', command: '002c008008' + '31323334ffffffff', expect: '6a80' },
    ],
  },
  {
    title: 'RESET needs 9B in this card session, and PIN and PUK blocked',
    rows: [
      { rule: 'RESET without 9B, nothing blocked -> 6982', command: '00fb0000', expect: '6982' },
      { rule: 'a key to lose', command: '0047009a05ac03800111', expect: '7f4943864104{64}9000', auth: true },
      ...fiveWrong('PIN'),
      ...fiveWrong('PUK'),
      { rule: 'RESET after a power cycle (9B lost), PIN and PUK blocked -> 6982', command: '00fb0000', expect: '6982', powerCycle: true },
      { rule: 'the key is still there', command: '00f7009a', expect: '010111020202010301010443864104{64}9000' },
      { rule: 'a failed 9B authentication leaves 9B unauthenticated', command: '0087039b167c14800800000000000000008108a0a1a2a3a4a5a6a7', expect: '6982' },
      { rule: 'RESET -> still 6982', command: '00fb0000', expect: '6982' },
      { rule: 'RESET with data -> 6700', command: '00fb00000100', expect: '6700', auth: true },
      { rule: 'RESET bad P1 -> 6A86', command: '00fb0100', expect: '6a86' },
      { rule: 'RESET after 9B in this session -> 9000', command: '00fb0000', expect: '9000' },
      { rule: 'the key is gone', command: '00f7009a', expect: '6a88' },
      { rule: 'RESET cleared 9B: GENERATE -> 6982', command: '0047009a05ac03800111', expect: '6982' },
      { rule: 'default PIN again', command: `0020008008${PIN_8}`, expect: '9000' },
    ],
  },
  {
    title: 'RESET on a card without a PUK: 9B and a blocked PIN',
    card: { puk: null },
    rows: [
      ...fiveWrong('PIN'),
      { rule: 'RESET without 9B -> 6982', command: '00fb0000', expect: '6982' },
      { rule: 'RESET after 9B -> 9000', command: '00fb0000', expect: '9000', auth: true },
      { rule: 'PUK metadata still absent -> 6A88', command: '00f70081', expect: '6a88' },
    ],
  },
  {
    title: 'management key',
    rows: [
      { rule: '9B metadata: 3DES, default', command: '00f7009b', expect: '010103020200010501019000' },
      { rule: 'witness request -> encrypted 8-byte witness', command: '0087039b047c028000', expect: '7c0a8008{8}9000' },
      { rule: 'witness answer without a pending witness, wrong value -> 6982', command: '0087039b167c14800800000000000000008108a0a1a2a3a4a5a6a7', expect: '6982' },
      { rule: 'OpenSC RNG: alg 00, 81 00 -> 8 random bytes', command: '0087009b047c028100', expect: '7c0a8108{8}9000' },
      { rule: 'wrong algorithm for the key (AES-128 on a 3DES key) -> 6A80', command: '0087089b047c028000', expect: '6a80' },
      { rule: 'external auth answer with no pending challenge -> 6982', command: '0087039b0c7c0a82080000000000000000', expect: '6982' },
      { rule: 'bad 7C content -> 6A80', command: '0087039b047c028300', expect: '6a80' },
      { rule: 'SET MANAGEMENT KEY without 9B -> 6982', command: '00ffffff1b039b18' + '11'.repeat(24), expect: '6982' },
      { rule: 'SET MANAGEMENT KEY to AES-128 (after mutual auth)', command: '00ffffff13089b10' + '22'.repeat(16), expect: '9000', auth: true },
      { rule: 'SET MANAGEMENT KEY wrong length -> 6A80', command: '00ffffff13039b10' + '22'.repeat(16), expect: '6a80' },
      { rule: 'SET MANAGEMENT KEY bad P2 -> 6A86', command: '00ffff00130c9b10' + '22'.repeat(16), expect: '6a86' },
      { rule: '9B metadata: AES-128, not default', command: '00f7009b', expect: '010108020200010501009000' },
      { rule: 'AES-128 witness is 16 bytes', command: '0087089b047c028000', expect: '7c128010{16}9000' },
      { rule: '3DES now refused -> 6A80', command: '0087039b047c028000', expect: '6a80' },
    ],
  },
  {
    title: 'GENERATE, metadata and slots',
    rows: [
      { rule: 'GENERATE without 9B -> 6982', command: '0047009a05ac03800111', expect: '6982' },
      { rule: 'GENERATE P-256 in 9A -> 7F49 43 86 41 04..', command: '0047009a05ac03800111', expect: '7f4943864104{64}9000', auth: true },
      { rule: 'GENERATE P-384 in 9E with AA never -> 7F49 63 86 61 04..', command: '0047009e08ac06800114aa0101', expect: '7f4963866104{96}9000' },
      { rule: 'GENERATE unsupported algorithm (RSA1024) -> 6A80', command: '0047009c05ac03800106', expect: '6a80' },
      { rule: 'GENERATE into 9B -> 6A86', command: '0047009b05ac03800111', expect: '6a86' },
      { rule: 'GENERATE bad PIN policy -> 6A80', command: '0047009c08ac06800111aa0109', expect: '6a80' },
      { rule: 'GENERATE without 80 -> 6A80', command: '0047009c05ac03aa0101', expect: '6a80' },
      { rule: 'GENERATE P1 01 -> 6A86', command: '0047019c05ac03800111', expect: '6a86' },
      { rule: 'metadata 9A: P-256, once, touch never, generated', command: '00f7009a', expect: '010111020202010301010443864104{64}9000' },
      { rule: 'metadata 9E: P-384, never', command: '00f7009e', expect: '010114020201010301010463866104{96}9000' },
      { rule: 'metadata empty slot 9C -> 6A88', command: '00f7009c', expect: '6a88' },
      { rule: 'metadata slot 96 (bio) -> 6A88', command: '00f70096', expect: '6a88' },
      { rule: 'metadata P1 01 -> 6A86', command: '00f7019a', expect: '6a86' },
      { rule: 'sign with 9A before VERIFY -> 6982', command: '0087119a267c2482008120' + 'ab'.repeat(32), expect: '6982' },
      { rule: 'sign with 9E needs no PIN (P-384, 32-byte hash)', command: '0087149e267c2482008120' + 'ab'.repeat(32), expect: '7c{1}82{1}30{*}9000' },
      { rule: 'sign with the wrong algorithm id -> 6A80', command: '0087079e267c2482008120' + 'ab'.repeat(32), expect: '6a80' },
      { rule: 'sign with empty slot 9D -> 6A88', command: '0087119d267c2482008120' + 'ab'.repeat(32), expect: '6a88' },
      { rule: 'GENERAL AUTHENTICATE without 82 00 -> 6A80', command: '0087149e247c228120' + 'ab'.repeat(32), expect: '6a80' },
      { rule: 'VERIFY', command: verifyCommand('12345678'), expect: '9000' },
      { rule: 'sign with 9A after VERIFY', command: '0087119a267c2482008120' + 'ab'.repeat(32), expect: '7c{1}82{1}30{*}9000' },
      { rule: '9A again: once per session', command: '0087119a267c2482008120' + 'ab'.repeat(32), expect: '7c{1}82{1}30{*}9000' },
      { rule: 'ECDH with a bad point -> 6A80', command: '0087119a477c458200854105' + '01'.repeat(64), expect: '6a80' },
      { rule: 'ATTEST without an attestor -> 6A81', command: '00f99a00', expect: '6a81' },
      { rule: 'power cycle forgets the PIN', command: '0087119a267c2482008120' + 'ab'.repeat(32), expect: '6982', powerCycle: true },
    ],
  },
];

for (const table of TABLES) {
  test(`golden: ${table.title}`, async (t) => {
    const card = makeTestCard(table.card);
    for (const row of table.rows) {
      if (row.powerCycle) {
        card.applet.powerOff();
        card.applet.powerOn();
      }
      if (row.auth) await mutualAuthenticate(card.send);
      const response = await card.send(row.command.replace(/\s+/g, ''));
      t.true(matchesPattern(response, row.expect), `${row.rule}\n  command  ${row.command}\n  got      ${response}\n  expected ${row.expect}`);
    }
  });
}
