/**
 * tpmvscd on a TPM whose owner hierarchy has a password, started for real on swtpm: the
 * password comes from TPMVSC_OWNER_AUTH_FILE or systemd's credential tpm-owner-auth; a
 * missing, wrong or superfluous password and a file others can read each stop the daemon
 * with one line naming the fix, and the password itself is never in what it prints.
 */
import test from 'ava';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EXIT } from '../../common/errors.js';
import { runDaemonOnce, type DaemonRun } from '../helpers/daemon_run.js';
import { startSwtpm } from '../helpers/swtpm.js';
import { setHierarchyPassword } from '../helpers/tpm_passwords.js';

/** The daemon's last line: the one error it stopped with. */
function lastLine(run: DaemonRun): string {
  return run.log.trim().split('\n').at(-1) ?? '';
}

test('the owner password from TPMVSC_OWNER_AUTH_FILE or the systemd credential; clear refusals otherwise', async (t) => {
  const swtpm = await startSwtpm();
  t.teardown(() => swtpm.stop());
  const work = await mkdtemp(join(tmpdir(), 'tpmvsc-owner-auth-'));
  t.teardown(() => rm(work, { recursive: true, force: true }));
  const stateDir = join(work, 'state');
  const password = `pw-${randomBytes(10).toString('hex')}`;
  const logs: string[] = [];
  const start = async (args: string[], env: NodeJS.ProcessEnv = {}): Promise<DaemonRun> => {
    const run = await runDaemonOnce({ tcti: swtpm.tcti, stateDir, args, env: { ...process.env, ...env } });
    logs.push(run.log);
    return run;
  };

  // first start before any password: the SRK name is pinned; then the admin sets one
  t.true((await start([])).ready);
  await setHierarchyPassword(swtpm.tcti, 'owner', password);

  const missing = await start([]);
  t.false(missing.ready);
  t.is(missing.code, EXIT.tpm);
  t.regex(lastLine(missing), /^tpmvscd: .*the TPM's owner hierarchy has a password: give it with --owner-auth-file/);

  const wrongFile = join(work, 'wrong');
  await writeFile(wrongFile, 'not-the-password\n', { mode: 0o600 });
  const wrong = await start(['--owner-auth-file', wrongFile]);
  t.is(wrong.code, EXIT.tpm);
  t.regex(lastLine(wrong), /owner hierarchy has another password than the one in .*wrong \(--owner-auth-file\)/);

  const file = join(work, 'owner-auth');
  await writeFile(file, `${password}\n`, { mode: 0o640 });
  await chmod(file, 0o640);
  const open = await start([], { TPMVSC_OWNER_AUTH_FILE: file });
  t.is(open.code, EXIT.usage);
  t.regex(lastLine(open), /owner-auth \(TPMVSC_OWNER_AUTH_FILE\) is accessible by group or others \(mode 0640\): chmod 600/);

  await chmod(file, 0o600);
  const fromEnv = await start([], { TPMVSC_OWNER_AUTH_FILE: file });
  t.true(fromEnv.ready, fromEnv.log);
  t.regex(fromEnv.log, /TPM owner password from TPMVSC_OWNER_AUTH_FILE/);

  // systemd: LoadCredential=tpm-owner-auth:... puts a 0400 copy in $CREDENTIALS_DIRECTORY
  const credentials = join(work, 'credentials');
  await mkdir(credentials, { mode: 0o700 });
  await writeFile(join(credentials, 'tpm-owner-auth'), password, { mode: 0o400 });
  const fromCredential = await start([], { CREDENTIALS_DIRECTORY: credentials });
  t.true(fromCredential.ready, fromCredential.log);
  t.regex(fromCredential.log, /TPM owner password from systemd credential tpm-owner-auth/);
  // the option wins over the credential
  const optionWins = await start(['--owner-auth-file', wrongFile], { CREDENTIALS_DIRECTORY: credentials });
  t.is(optionWins.code, EXIT.tpm);

  // a password given for a TPM whose owner hierarchy has none
  const fresh = await startSwtpm();
  t.teardown(() => fresh.stop());
  const superfluous = await runDaemonOnce({ tcti: fresh.tcti, args: ['--owner-auth-file', file] });
  logs.push(superfluous.log);
  t.is(superfluous.code, EXIT.tpm);
  t.regex(lastLine(superfluous), /an owner password is given in .* but the TPM's owner hierarchy has none: remove that setting/);

  for (const log of logs) t.false(log.includes(password), `the password appeared in:\n${log}`);
});
