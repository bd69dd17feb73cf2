/**
 * PIN-protected data objects (read rule 'pin': 5FC109 and the biometric objects) never rest in
 * clear in the card state (applet/sealed_objects.ts): PUT DATA with the management key alone
 * seals them, GET DATA opens them only after VERIFY, RESET drops them, and a card state
 * written before sealing existed is sealed when the card is loaded. On the in-memory vault;
 * the TPM vault's sealing is tested in test/integration/vault_sealed_objects.test.ts.
 */
import test from 'ava';
import { DEFAULT_PIN_POLICY } from '../../common/control_protocol.js';
import { PivApplet } from '../../applet/piv_applet.js';
import { parsePivCardState } from '../../applet/piv_state.js';
import { provisionCard } from '../../applet/provision.js';
import { hexBytes, makeTestCard, MemoryCardStore, mutualAuthenticate, verifyCommand } from '../helpers/applet_harness.js';
import { MemoryVault } from '../helpers/memory_vault.js';

const PIN_OK = verifyCommand('12345678');
/** ykman's PIN-protected management key object: 88 { 89 <key> }. */
const SECRET = '881a8918' + 'c7c2377bbb99bae11a08b50e1c553c3909d8d67f9496d49c';
const PUT_PRINTED = `00db3fff235c035fc10953${(SECRET.length / 2).toString(16)}${SECRET}`;
const GET_PRINTED = '00cb3fff055c035fc109';

/** The secret in any of the forms a file could hold it. */
function secretForms(hex: string): string[] {
  const bytes = Buffer.from(hex, 'hex');
  return [hex, bytes.toString('base64'), bytes.toString('base64url'), bytes.subarray(4).toString('hex'), bytes.subarray(4).toString('base64')];
}

test('PUT DATA of 5FC109 needs only 9B and stores a sealed form; GET DATA needs the PIN and opens it', async (t) => {
  const card = makeTestCard();
  await mutualAuthenticate(card.send);
  t.is(await card.send(PUT_PRINTED), '9000', 'sealed while the PIN is not verified');
  const saved = card.store.last!;
  for (const form of secretForms(SECRET)) t.false(saved.includes(form), `the saved state does not hold ${form}`);
  const state = JSON.parse(saved) as { objects: Record<string, string>; sealedObjects: Record<string, string> };
  t.false('5fc109' in state.objects);
  t.truthy(state.sealedObjects['5fc109']);

  t.is(await card.send(GET_PRINTED), '6982', 'before VERIFY');
  t.is(await card.send(PIN_OK), '9000');
  t.is(await card.send(GET_PRINTED), `53${(SECRET.length / 2).toString(16)}${SECRET}9000`);
  t.is(await card.send(GET_PRINTED), `53${(SECRET.length / 2).toString(16)}${SECRET}9000`, 'opened again on every read');
  card.applet.powerOff();
  card.applet.powerOn();
  t.is(await card.send(GET_PRINTED), '6982', 'a power cycle locks it again');

  await mutualAuthenticate(card.send);
  t.is(await card.send(PUT_PRINTED), '9000');
  const again = JSON.parse(card.store.last!) as { sealedObjects: Record<string, string> };
  t.not(again.sealedObjects['5fc109'], state.sealedObjects['5fc109'], 'the same value seals differently each time');
  t.is(await card.send('00db3fff075c035fc1095300'), '9000', '53 00 deletes it');
  t.deepEqual((JSON.parse(card.store.last!) as { sealedObjects: object }).sealedObjects, {});
  t.is(await card.send(PIN_OK), '9000');
  t.is(await card.send(GET_PRINTED), '6a82');
});

test('every object whose read rule is PIN is sealed; the others stay readable by anyone', async (t) => {
  const card = makeTestCard();
  await mutualAuthenticate(card.send);
  for (const tag of ['5fc103', '5fc108', '5fc109', '5fc121', '5fc123']) {
    t.is(await card.send(`00db3fff0c5c03${tag}5305aabbccddee`), '9000', tag);
  }
  t.is(await card.send('00db3fff0a5c035fc10553037001ff'), '9000');
  const state = JSON.parse(card.store.last!) as { objects: Record<string, string>; sealedObjects: Record<string, string> };
  t.deepEqual(Object.keys(state.sealedObjects).sort(), ['5fc103', '5fc108', '5fc109', '5fc121', '5fc123']);
  t.false(card.store.last!.includes(Buffer.from('aabbccddee', 'hex').toString('base64')));
  t.is(state.objects['5fc105'], Buffer.from('7001ff', 'hex').toString('base64'), 'a certificate stays in clear');
  t.is(await card.send('00cb3fff055c035fc105'), '53037001ff9000');
  t.is(await card.send(PIN_OK), '9000');
  t.is(await card.send('00cb3fff055c035fc121'), '5305aabbccddee9000');
});

test('a sealed object copied under another object\'s tag does not open; nothing else is disturbed', async (t) => {
  const card = makeTestCard();
  await mutualAuthenticate(card.send);
  await card.send(PUT_PRINTED);
  const state = parsePivCardState(JSON.parse(card.store.last!));
  state.sealedObjects = { '5fc108': state.sealedObjects['5fc109'] };
  const applet = new PivApplet({ state, vault: card.vault, store: card.store });
  applet.powerOn();
  const send = async (hex: string): Promise<string> => Buffer.from(await applet.transmit(hexBytes(hex))).toString('hex');
  t.is(await send(PIN_OK), '9000');
  t.is(await send('00cb3fff055c035fc108'), '6f00');
  t.is(await send('00fd0000'), '0504039000');
});

test('RESET drops the sealed objects with the keys', async (t) => {
  const card = makeTestCard();
  await mutualAuthenticate(card.send);
  await card.send(PUT_PRINTED);
  for (let i = 0; i < 5; i++) await card.send('00200080083131313131313131');
  for (let i = 0; i < 5; i++) await card.send('002c0080103939393939393939' + '3131313131313131');
  t.is(await card.send('00fb0000'), '9000');
  t.deepEqual((JSON.parse(card.store.last!) as { sealedObjects: object }).sealedObjects, {});
  t.is(await card.send(PIN_OK), '9000');
  t.is(await card.send(GET_PRINTED), '6a82');
});

test('a card state from before sealing (5FC109 in clear) is sealed at load, once, and still reads after VERIFY', async (t) => {
  const vault = new MemoryVault({ pin: '12345678', puk: '12345678' });
  const state = provisionCard({ name: 'old', serial: 7, pinPolicy: DEFAULT_PIN_POLICY, hasPuk: true, generate: true, vaultState: vault.state() });
  const old = JSON.parse(JSON.stringify(state)) as Record<string, unknown> & { objects: Record<string, string> };
  delete old['sealedObjects'];
  old.objects['5fc109'] = Buffer.from(SECRET, 'hex').toString('base64');
  const store = new MemoryCardStore();
  const applet = new PivApplet({ state: parsePivCardState(old), vault, store });
  applet.powerOn();
  t.is(await applet.sealClearObjects(), 1);
  t.is(store.saved.length, 1);
  for (const form of secretForms(SECRET)) t.false(store.last!.includes(form));
  t.is(await applet.sealClearObjects(), 0, 'nothing left to seal: no second save');
  t.is(store.saved.length, 1);
  const send = async (hex: string): Promise<string> => Buffer.from(await applet.transmit(hexBytes(hex))).toString('hex');
  t.is(await send(GET_PRINTED), '6982');
  t.is(await send(PIN_OK), '9000');
  t.is(await send(GET_PRINTED), `53${(SECRET.length / 2).toString(16)}${SECRET}9000`);
});

test('a failed save while sealing an old state leaves the state as it was, and the object readable', async (t) => {
  const vault = new MemoryVault({ pin: '12345678', puk: '12345678' });
  const state = provisionCard({ name: 'old', serial: 8, pinPolicy: DEFAULT_PIN_POLICY, hasPuk: true, generate: false, vaultState: vault.state() });
  state.objects['5fc109'] = Buffer.from('00112233', 'hex').toString('base64');
  const store = new MemoryCardStore();
  store.failing = true;
  const applet = new PivApplet({ state, vault, store });
  applet.powerOn();
  await t.throwsAsync(applet.sealClearObjects());
  t.is(applet.state.objects['5fc109'], Buffer.from('00112233', 'hex').toString('base64'));
  const send = async (hex: string): Promise<string> => Buffer.from(await applet.transmit(hexBytes(hex))).toString('hex');
  t.is(await send(PIN_OK), '9000');
  t.is(await send(GET_PRINTED), '5304001122339000');
  store.failing = false;
  t.is(await applet.sealClearObjects(), 1, 'sealed at the next chance');
});
