/**
 * An admin sets a TPM owner password (tpm2_changeauth -c owner) on a machine that already has
 * a card: tpmvscd then refuses to start with a message naming the fix, refuses a password file
 * others can read, and with --owner-auth-file (0600) the old card signs again and new cards are
 * created and destroyed (persistent parent + NV counter index under the owner hierarchy).
 */
import test from 'ava';
import { chmod, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { runProgram, startStack, type Stack } from '../helpers/stack.js';
import { createDefaultCard, mustSucceed } from '../helpers/card_setup.js';
import { DEFAULT_MANAGEMENT_KEY, DEFAULT_PIN, tempDir, verifySelfSigned, ykmanPiv } from '../helpers/piv_tools.js';
import { setHierarchyPassword } from '../helpers/tpm_passwords.js';

const READER_0 = 'TPM Virtual Smart Card 0 00 00';

/** After a daemon start the card reaches its reader a moment after "ready:". */
async function waitForCard(stack: Stack, reader: string): Promise<void> {
  for (const started = Date.now(); Date.now() - started < 15_000; await sleep(200)) {
    if ((await stack.run('yubico-piv-tool', ['-r', reader, '-a', 'status'])).code === 0) return;
  }
  throw new Error(`no card in ${reader}:\n${stack.daemonLog()}`);
}

test('cards keep working after the TPM gets an owner password, given with --owner-auth-file', async (t) => {
  const stack = await startStack({ readers: 2 });
  t.teardown(() => stack.stop());
  const dir = await tempDir();
  t.teardown(() => dir.cleanup());

  t.is(await createDefaultCard(stack, 'Before'), 'ROOT\\SMARTCARDREADER\\0000');
  const publicKey = join(dir.path, '9a.pub.pem');
  mustSucceed(await stack.run('yubico-piv-tool', ['-r', READER_0, '-a', 'generate', '-s', '9a', '-A', 'ECCP256', '-o', publicKey]), 'generate 9a');

  // the admin sets an owner password while the daemon is stopped
  await stack.stopDaemon();
  const password = `Owner-${randomBytes(10).toString('hex')}`;
  await setHierarchyPassword(stack.swtpm.tcti, 'owner', password);

  // without the password: a one-line error naming the option, not TPM_RC_BAD_AUTH
  await t.throwsAsync(stack.startDaemon());
  t.regex(stack.daemonLog(), /the TPM's owner hierarchy has a password: give it with --owner-auth-file/);
  t.notRegex(stack.daemonLog(), /TPM_RC_BAD_AUTH/);

  // a file others can read is refused before the TPM is touched
  const file = join(dir.path, 'owner-auth');
  await writeFile(file, `${password}\n`, { mode: 0o644 });
  await chmod(file, 0o644);
  await t.throwsAsync(stack.startDaemon(['--owner-auth-file', file]));
  t.regex(stack.daemonLog(), /owner-auth \(--owner-auth-file\) is accessible by group or others \(mode 0644\): chmod 600/);

  await chmod(file, 0o600);
  await stack.startDaemon(['--owner-auth-file', file]);

  // the card made before the password comes back into its reader and still signs
  await waitForCard(stack, READER_0);
  t.notRegex(stack.daemonLog(), /card_unavailable/);
  // its 9a key still signs: ykman has the card sign a certificate for it, openssl checks that signature
  // (yubico-piv-tool 2.2's own selfsign fails on OpenSSL 3 before reaching the card)
  const generated = await ykmanPiv(stack, READER_0, ['certificates', 'generate', '-s', 'CN=owner password', '-P', DEFAULT_PIN, '-m', DEFAULT_MANAGEMENT_KEY, '9a', publicKey]);
  t.is(generated.code, 0, generated.stderr);
  const certificate = await stack.run('yubico-piv-tool', ['-r', READER_0, '-a', 'read-certificate', '-s', '9a']);
  t.is(certificate.code, 0, certificate.stderr);
  const verified = await verifySelfSigned(dir.path, certificate.stdout, 'selfsigned');
  t.is(verified.code, 0, verified.stdout + verified.stderr);

  // a new card: EvictControl and NV_DefineSpace with the owner password; destroy undoes both
  t.is(await createDefaultCard(stack, 'After'), 'ROOT\\SMARTCARDREADER\\0001');
  const status = await stack.run('yubico-piv-tool', ['-r', 'TPM Virtual Smart Card 0 00 01', '-a', 'status']);
  t.is(status.code, 0, status.stderr);
  mustSucceed(await stack.cli(['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0001']), 'destroy 0001');

  await stack.stopDaemon();
  const left = await runProgram('tpm2_getcap', ['-T', stack.swtpm.tcti, 'handles-persistent']);
  t.is(left.stdout.split('\n').filter((line) => /0x811563/i.test(line)).length, 1, `only card 0000's parent is left:\n${left.stdout}`);
  t.false(stack.daemonLog().includes(password), 'the owner password appeared in the log');
});
