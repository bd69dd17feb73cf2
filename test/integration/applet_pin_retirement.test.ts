/**
 * The card application and the TPM vault together: a PIN change retires the old PIN object
 * as soon as the new state is on disk (vault.persisted), not only at the next PIN use, so a
 * backup taken before the change stops opening with the old PIN right away.
 */
import test from 'ava';
import { PivApplet } from '../../applet/piv_applet.js';
import { provisionCard } from '../../applet/provision.js';
import type { PivCardState } from '../../applet/piv_state.js';
import { DEFAULT_PIN_POLICY } from '../../common/control_protocol.js';
import { TpmVault } from '../../vault/tpm_vault.js';
import type { TpmVaultState } from '../../vault/vault_state.js';
import { encode, useTpmFixture } from './vault_fixture.js';

const fixture = useTpmFixture(test);

const padded = (pin: string): string => Buffer.from(pin.padEnd(8, '\xff'), 'latin1').toString('hex');

test('CHANGE REFERENCE DATA saves twice: the new PIN object, then the old one retired in NV', async (t) => {
  const vault = await TpmVault.create(fixture.tpm, {
    pin: encode('12345678'),
    puk: encode('87654321'),
    managementKey: { algorithm: 'tdes', key: new Uint8Array(24).fill(1) },
  });
  const saved: PivCardState[] = [];
  const state = provisionCard({ name: 't', pinPolicy: DEFAULT_PIN_POLICY, hasPuk: true, generate: true, vaultState: vault.state() });
  const applet = new PivApplet({ state, vault, store: { save: async (next) => void saved.push(structuredClone(next)) } });
  applet.powerOn();
  const send = async (hex: string): Promise<string> => Buffer.from(await applet.transmit(Buffer.from(hex, 'hex'))).toString('hex');
  t.is(await send('00a4040005a000000308').then((r) => r.slice(-4)), '9000');
  const backup = structuredClone(vault.state()) as TpmVaultState;

  t.is(await send(`0024008010${padded('12345678')}${padded('24681357')}`), '9000');
  const states = saved.map((s) => s.vault as TpmVaultState);
  t.true(states.some((s) => s.pinNext !== undefined), 'first save: the new PIN object, pending');
  t.is(states.at(-1)!.pinNext, undefined, 'second save: promoted, nothing pending');
  t.is(states.at(-1)!.pinGeneration, backup.pinGeneration + 1);

  // The backup from before the change: its PIN object is from a retired generation.
  const fromBackup = await TpmVault.open(fixture.tpm, backup);
  await t.throwsAsync(fromBackup.verifyPin(encode('12345678')), { message: /older .* generation/ });
  t.deepEqual(await vault.verifyPin(encode('24681357')), { ok: true }, 'the new PIN works');
});
