/**
 * The applet saves the vault's state when vault.revision() moved, not after a deep compare
 * of vault.state(): a signature with an unchanged vault neither saves nor copies the state,
 * and a vault change that comes without any card-state draft is still saved.
 */
import test from 'ava';
import { createHash } from 'node:crypto';
import { DEFAULT_PIN_POLICY } from '../../common/control_protocol.js';
import { PivApplet } from '../../applet/piv_applet.js';
import { provisionCard } from '../../applet/provision.js';
import { hexBytes, makeTestCard, MemoryCardStore, mutualAuthenticate, toHex, verifyCommand, type TestCard } from '../helpers/applet_harness.js';
import { MemoryVault } from '../helpers/memory_vault.js';

const encode = (text: string): Uint8Array => new TextEncoder().encode(text);
const lc = (hex: string): string => (hex.length / 2).toString(16).padStart(2, '0');

/** GENERAL AUTHENTICATE ECDSA P-256 over a SHA-256 hash with the key in `slot`. */
function signCommand(slot: string, message: string): string {
  const hash = createHash('sha256').update(message).digest('hex');
  const data = `7c${lc('8200' + '81' + lc(hash) + hash)}820081${lc(hash)}${hash}`;
  return `008711${slot}${lc(data)}${data}`;
}

/** Counts calls of vault.state() (the deep copy the revision is there to avoid). */
function countStateCalls(card: TestCard): { readonly count: number } {
  const counter = { count: 0 };
  const original = card.vault.state.bind(card.vault);
  card.vault.state = () => {
    counter.count++;
    return original();
  };
  return counter;
}

const savedVault = (card: TestCard): unknown => JSON.parse(card.store.last!).vault;

test('signatures with an unchanged vault neither save nor read the vault state', async (t) => {
  const card = makeTestCard();
  await mutualAuthenticate(card.send);
  t.regex(await card.send('0047009e05ac03800111'), /9000$/); // 9E: usable without PIN
  const saves = card.store.saved.length;
  const stateCalls = countStateCalls(card);
  for (let i = 0; i < 5; i++) t.regex(await card.send(signCommand('9e', `message ${i}`)), /9000$/);
  t.is(card.store.saved.length, saves, 'no save for a signature');
  t.is(stateCalls.count, 0, 'no state() copy for a signature');
  // A right VERIFY moves no persisted state either (the counters live in the vault, not in state()).
  t.is(await card.send(verifyCommand('12345678')), '9000');
  t.is(card.store.saved.length, saves);
});

test('a vault change without a card-state draft is saved (CHANGE REFERENCE DATA)', async (t) => {
  const card = makeTestCard();
  const revision = card.vault.revision();
  const saves = card.store.saved.length;
  // CHANGE REFERENCE DATA for the PIN edits no card state: only the vault moves.
  t.is(await card.send('002400801031323334353637383837363534333231'), '9000');
  t.not(card.vault.revision(), revision);
  t.is(card.store.saved.length, saves + 1);
  t.deepEqual(savedVault(card), card.vault.state());
  // And nothing more while it stays put.
  t.is(await card.send(verifyCommand('87654321')), '9000');
  t.is(card.store.saved.length, saves + 1);
});

test('a vault change between commands is saved by the next command that may change state', async (t) => {
  const card = makeTestCard();
  t.is(await card.send(verifyCommand('12345678')), '9000');
  const saves = card.store.saved.length;
  // The vault moves on its own (as the TPM vault does when it settles a PIN generation).
  t.deepEqual(await card.vault.changePin(encode('12345678'), encode('11223344')), { ok: true });
  // A read-only command does not look; the next change-capable one (a failed VERIFY) saves.
  t.regex(await card.send('00cb3fff055c035fc107'), /9000$|6a82$/);
  t.is(card.store.saved.length, saves);
  t.regex(await card.send(verifyCommand('12345678')), /^63c/);
  t.is(card.store.saved.length, saves + 1);
  t.deepEqual(savedVault(card), card.vault.state());
});

test('an applet given a vault whose state moved since the card state was made saves it at the first chance', async (t) => {
  const vault = new MemoryVault({ pin: '12345678', puk: '12345678' });
  const state = provisionCard({ name: 'stale', pinPolicy: DEFAULT_PIN_POLICY, hasPuk: true, generate: false, vaultState: vault.state() });
  await vault.changePin(encode('12345678'), encode('55667788')); // state() moves after the card state was made
  const store = new MemoryCardStore();
  const applet = new PivApplet({ state, vault, store });
  applet.powerOn();
  const send = async (hex: string): Promise<string> => toHex(await applet.transmit(hexBytes(hex)));
  t.is(await send(verifyCommand('55667788')), '9000');
  t.is(store.saved.length, 1);
  t.deepEqual(JSON.parse(store.last!).vault, vault.state());
});
