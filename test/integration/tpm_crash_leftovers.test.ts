/**
 * What a crashed TPM client leaves behind must not cost the next one anything:
 * - swtpm (no resource manager) keeps a dead client's sessions loaded. TPM_HT_LOADED_SESSION
 *   lists policy sessions with their own 0x03 handles; the library used to keep only 0x02
 *   ones, so policy sessions of a killed daemon stayed loaded until every VERIFY failed with
 *   TPM_RC_SESSION_MEMORY (found with kill -9 of tpmvscd during PIN changes).
 * - a PIN check the TPM could not even start (no session slot) checked nothing: it must not
 *   cost a try (it used to: three such failures took a card from 5 to 2 tries).
 */
import test from 'ava';
import { Tpm, HANDLE_RANGE, TpmError, openTransport } from '../../tpm/index.js';
import { TpmVault } from '../../vault/tpm_vault.js';
import { encode, useTpmFixture } from './vault_fixture.js';
import { startSwtpm } from '../helpers/swtpm.js';

const fixture = useTpmFixture(test);

test.serial("a vanished client's policy sessions are flushed at the next connect", async (t) => {
  const sw = await startSwtpm();
  t.teardown(() => sw.stop());
  const transport = openTransport(sw.tcti);
  const crashed = await Tpm.open({ transport });
  // swtpm has 3 session slots: a dead client holding all three blocks every new session.
  for (let i = 0; i < 3; i++) await crashed.startPolicySession();
  await transport.close(); // dies without flushing

  const look = await Tpm.open({ tcti: sw.tcti, flushLeftovers: false });
  const leftovers = await look.getHandles(HANDLE_RANGE.HMAC_SESSION);
  t.is(leftovers.length, 3, 'loaded sessions are listed, policy ones included');
  t.true(leftovers.every((handle) => handle >>> 24 === 0x03));
  await look.close();

  const fresh = await Tpm.open({ tcti: sw.tcti });
  t.deepEqual(await fresh.getHandles(HANDLE_RANGE.HMAC_SESSION), []);
  const sessions = [];
  for (let i = 0; i < 3; i++) sessions.push(await fresh.startPolicySession());
  for (const session of sessions) await fresh.flushContext(session.handle);
  await fresh.close();
});

test.serial('a PIN check that fails before the TPM checks the PIN costs no try', async (t) => {
  const pin = encode('13572468');
  const vault = await TpmVault.create(fixture.tpm, {
    pin,
    puk: encode('86420135'),
    managementKey: { algorithm: 'tdes', key: new Uint8Array(24).fill(7) },
    pinTries: 5,
    pukTries: 3,
  });
  const tpm = fixture.tpm;
  const startPolicySession = tpm.startPolicySession.bind(tpm);
  // The TPM's answer when a dead client's sessions fill every slot.
  tpm.startPolicySession = () => Promise.reject(new TpmError(0x903, 'StartAuthSession'));
  try {
    for (let i = 0; i < 3; i++) await t.throwsAsync(vault.verifyPin(encode('00000000')));
    await t.throwsAsync(vault.unblockPinWithPuk(encode('00000000'), encode('24682468')));
  } finally {
    tpm.startPolicySession = startPolicySession;
  }
  t.is((await vault.pinStatus()).remaining, 5, 'no PIN try was spent');
  t.is((await vault.pukStatus())?.remaining, 3, 'no PUK try was spent');
  // A real check still counts.
  t.deepEqual(await vault.verifyPin(encode('00000000')), { ok: false, reason: 'wrong', remaining: 4 });
  t.deepEqual(await vault.verifyPin(pin), { ok: true });
  await vault.destroy();
});
