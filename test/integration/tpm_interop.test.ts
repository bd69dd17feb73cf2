/**
 * Interoperability with tpm2-tools (TPM2B_PUBLIC / TPM2B_PRIVATE files as `-u` / `-r` use them).
 * swtpm serves one TCP client at a time, so our Tpm is closed while tpm2-tools run, and every
 * tpm2-tools step ends by flushing transient objects (swtpm has only 3 slots).
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { createHash, verify } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startSwtpm } from '../helpers/swtpm.js';
import { Tpm, TPM_ALG, TPM_ECC, ecdsaSignatureToDer, eccKeyTemplate, publicKeyToNode, parsePublic2b } from '../../tpm/index.js';

const run = promisify(execFile);
/** Same attributes as srkEccTemplate(): the tools then create the very same primary key. */
const PRIMARY = ['-C', 'o', '-g', 'sha256', '-G', 'ecc256:null:aes128cfb', '-a', 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt'];

async function tools(tcti: string, ...args: string[]): Promise<string> {
  const [cmd, ...rest] = args;
  const { stdout } = await run(cmd!, [...rest, '-T', tcti], { timeout: 30_000 });
  // the tools leave what they loaded in swtpm's 3 object slots
  await run('tpm2_flushcontext', ['-t', '-T', tcti], { timeout: 30_000 });
  return stdout;
}

test('a key made by tpm2_create loads and signs in ours; a key made by ours loads and signs in tpm2-tools', async (t) => {
  const sw = await startSwtpm();
  t.teardown(() => sw.stop());
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-interop-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const f = (n: string): string => join(dir, n);
  const auth = 'interop-auth-1234';

  // tpm2-tools -> ours
  await tools(sw.tcti, 'tpm2_createprimary', ...PRIMARY, '-c', f('prim.ctx'));
  await tools(sw.tcti, 'tpm2_readpublic', '-c', f('prim.ctx'), '-n', f('prim.name'));
  await tools(sw.tcti, 'tpm2_create', '-C', f('prim.ctx'), '-G', 'ecc256', '-p', auth, '-u', f('t.pub'), '-r', f('t.priv'));

  let tpm = await Tpm.open({ tcti: sw.tcti });
  const srk = await tpm.storageRoot();
  t.deepEqual(Buffer.from(srk.name), await readFile(f('prim.name')), 'tpm2_createprimary and ours make the same SRK');
  const theirs = await tpm.load(srk, { public: await readFile(f('t.pub')), private: await readFile(f('t.priv')) });
  const msg = Buffer.from('signed by a tpm2-tools key');
  const sig = await tpm.sign(theirs, createHash('sha256').update(msg).digest(), { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { auth: Buffer.from(auth) });
  t.true(verify('sha256', msg, { key: publicKeyToNode(theirs.publicArea), dsaEncoding: 'der' }, ecdsaSignatureToDer(sig)));
  await tpm.flushContext(theirs.handle);

  // ours -> tpm2-tools
  const blob = await tpm.create(srk, eccKeyTemplate(TPM_ECC.NIST_P256), { userAuth: Buffer.from(auth) });
  await writeFile(f('o.pub'), blob.public);
  await writeFile(f('o.priv'), blob.private);
  await tpm.close();

  await tools(sw.tcti, 'tpm2_createprimary', ...PRIMARY, '-c', f('prim2.ctx'));
  await writeFile(f('msg'), msg);
  await tools(sw.tcti, 'tpm2_load', '-C', f('prim2.ctx'), '-u', f('o.pub'), '-r', f('o.priv'), '-c', f('o.ctx'));
  await tools(sw.tcti, 'tpm2_sign', '-c', f('o.ctx'), '-p', auth, '-g', 'sha256', '-s', 'ecdsa', '-f', 'plain', '-o', f('sig'), f('msg'));
  const der = await readFile(f('sig'));
  t.true(verify('sha256', msg, { key: publicKeyToNode(parsePublic2b(blob.public)), dsaEncoding: 'der' }, der));

  tpm = await Tpm.open({ tcti: sw.tcti });
  t.teardown(() => tpm.close());
  t.is((await tpm.getRandom(4)).length, 4);
});
