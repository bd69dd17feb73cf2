/**
 * A TPM whose owner hierarchy has a password (tpm2_changeauth -c owner): the library builds its
 * storage root key with TpmOptions.ownerAuth, names what is wrong when the password is missing,
 * wrong or superfluous, and the vault creates, destroys and sweeps cards with it (EvictControl,
 * NV_DefineSpace, NV_UndefineSpace) without the password ever crossing the wire in clear.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { TPM_ALG, TPMA_NV, Tpm, TpmProtocolError } from '../../tpm/index.js';
import { TpmVault } from '../../vault/tpm_vault.js';
import { sweepOrphans } from '../../vault/orphan_sweep.js';
import { startSwtpm, startSwtpmProxy } from '../helpers/swtpm.js';
import { setHierarchyPassword } from '../helpers/tpm_passwords.js';
import { encode } from './vault_fixture.js';

const MANAGEMENT_KEY = { algorithm: 'tdes' as const, key: new Uint8Array(Buffer.from('010203040506070801020304050607080102030405060708', 'hex')) };

function appearsIn(capture: Buffer, secret: Uint8Array): boolean {
  // the whole value or any 6-byte window of it
  for (let i = 0; i + 6 <= secret.length; i += 2) if (capture.includes(Buffer.from(secret.subarray(i, i + 6)))) return true;
  return capture.includes(Buffer.from(secret));
}

async function ownerAuthCode(tcti: string, ownerAuth?: Uint8Array): Promise<string | undefined> {
  const tpm = await Tpm.open(ownerAuth ? { tcti, ownerAuth } : { tcti });
  try {
    await tpm.storageRoot();
    return undefined;
  } catch (error) {
    if (error instanceof TpmProtocolError) return error.code;
    throw error;
  } finally {
    await tpm.close();
  }
}

test('with an owner password: the SRK, card create / destroy and the orphan sweep work, and the password stays off the wire', async (t) => {
  const swtpm = await startSwtpm();
  t.teardown(() => swtpm.stop());
  const password = `owner-${randomBytes(12).toString('hex')}`;
  const ownerAuth = encode(password);
  await setHierarchyPassword(swtpm.tcti, 'owner', password);

  // missing and wrong passwords are named, not left as TPM_RC_BAD_AUTH
  t.is(await ownerAuthCode(swtpm.tcti), 'OWNER_AUTH_REQUIRED');
  t.is(await ownerAuthCode(swtpm.tcti, encode('not-the-owner-password')), 'OWNER_AUTH_REFUSED');

  const proxy = await startSwtpmProxy(swtpm);
  t.teardown(() => proxy.close());
  const tpm = await Tpm.open({ tcti: proxy.tcti, ownerAuth });
  t.teardown(() => tpm.close());
  t.true((await tpm.permanentAttributes()).ownerAuthSet);
  const srkName = await tpm.storageRootName();

  const options = { ownerAuth };
  const init = { pin: encode('12345678'), puk: encode('87654321'), managementKey: MANAGEMENT_KEY };
  // create (EvictControl + NV_DefineSpace), use, destroy (EvictControl + NV_UndefineSpace)
  const card = await TpmVault.create(tpm, init, options);
  const reopened = await TpmVault.open(tpm, card.state(), options);
  t.deepEqual(await reopened.verifyPin(encode('12345678')), { ok: true });
  const key = await reopened.generateKey('eccp256', 'pin');
  t.is((await reopened.ecdsaSign(key, randomBytes(32))).length > 60, true);
  await card.destroy();
  // a card whose file was never written (crash during create) is swept with the owner password
  const orphan = await TpmVault.create(tpm, init, options);
  const orphanState = orphan.state();
  const swept = await sweepOrphans(tpm, [], options);
  t.deepEqual(swept.evictedParents, [orphanState.parent.handle]);
  t.deepEqual(swept.undefinedIndices, [orphanState.counters]);

  const capture = Buffer.concat([...proxy.sent, ...proxy.received]);
  t.true(capture.length > 5000, 'the proxy saw the traffic');
  t.false(appearsIn(capture, ownerAuth), 'the owner password appeared on the wire');

  // control: sent in a password session, the same capture does show it
  const before = proxy.sent.length;
  const index = 0x01500401;
  await tpm.nvDefineSpace(
    { nvIndex: index, nameAlg: TPM_ALG.SHA256, attributes: TPMA_NV.OWNERREAD | TPMA_NV.OWNERWRITE | TPMA_NV.NO_DA, authPolicy: new Uint8Array(0), dataSize: 8 },
    undefined,
    { auth: ownerAuth, session: 'password' },
  );
  await tpm.nvUndefineSpace(index, { auth: ownerAuth });
  t.true(appearsIn(Buffer.concat(proxy.sent.slice(before)), ownerAuth));

  // a pinned SRK still matches: the owner password changes how it is authorized, not what it is
  await tpm.close(); // swtpm serves one connection at a time
  const pinned = await Tpm.open({ tcti: proxy.tcti, ownerAuth, expectedSrkName: srkName });
  await pinned.close();
});

test('an owner password given for a TPM whose owner hierarchy has none is named', async (t) => {
  const swtpm = await startSwtpm();
  t.teardown(() => swtpm.stop());
  t.is(await ownerAuthCode(swtpm.tcti, encode('ownerpass')), 'OWNER_AUTH_NOT_SET');
  t.is(await ownerAuthCode(swtpm.tcti), undefined);
});
