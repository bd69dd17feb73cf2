/**
 * The TPM password files (owner, endorsement): where the daemon looks for them (option, environment, systemd
 * credential), how its content is read (tpm2-tools' TEXT / str: / hex:, one trailing newline),
 * and which files it refuses (others can read them, another user owns them, not a file).
 */
import test from 'ava';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TpmvscError } from '../../common/errors.js';
import { parseDaemonArguments, type TpmPasswordSource, type RunConfig } from '../../daemon/config.js';
import { parseTpmPassword, readTpmPassword } from '../../daemon/tpm_password_file.js';

const OPTION: TpmPasswordSource = { path: '/etc/tpmvsc/owner-auth', source: '--owner-auth-file', kind: 'option' };
const bytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, 'latin1'));
const text = (value: Uint8Array | undefined): string | undefined => (value === undefined ? undefined : Buffer.from(value).toString('latin1'));

function runConfig(argv: string[], env: NodeJS.ProcessEnv = {}): RunConfig {
  const config = parseDaemonArguments(argv, env);
  if (config.command !== 'run') throw new Error('expected a run configuration');
  return config;
}

test('the endorsement password: its own option, variable and credential', (t) => {
  t.is(runConfig([]).endorsementAuthFile, undefined);
  t.deepEqual(runConfig(['--endorsement-auth-file', '/e']).endorsementAuthFile, { path: '/e', source: '--endorsement-auth-file', kind: 'option' });
  t.deepEqual(runConfig([], { TPMVSC_ENDORSEMENT_AUTH_FILE: '/f' }).endorsementAuthFile, { path: '/f', source: 'TPMVSC_ENDORSEMENT_AUTH_FILE', kind: 'option' });
  const fromCredential = runConfig([], { CREDENTIALS_DIRECTORY: '/run/credentials/tpmvscd.service' });
  t.deepEqual(fromCredential.endorsementAuthFile, {
    path: '/run/credentials/tpmvscd.service/tpm-endorsement-auth',
    source: 'systemd credential tpm-endorsement-auth',
    kind: 'credential',
  });
  t.is(fromCredential.ownerAuthFile?.path, '/run/credentials/tpmvscd.service/tpm-owner-auth');
});

test('the option, then TPMVSC_OWNER_AUTH_FILE, then the systemd credential', (t) => {
  t.is(runConfig([]).ownerAuthFile, undefined);
  t.deepEqual(runConfig(['--owner-auth-file', '/a']).ownerAuthFile, { path: '/a', source: '--owner-auth-file', kind: 'option' });
  t.deepEqual(runConfig(['--owner-auth-file=/a'], { TPMVSC_OWNER_AUTH_FILE: '/b' }).ownerAuthFile?.path, '/a');
  t.deepEqual(runConfig([], { TPMVSC_OWNER_AUTH_FILE: '/b', CREDENTIALS_DIRECTORY: '/run/credentials/tpmvscd.service' }).ownerAuthFile,
    { path: '/b', source: 'TPMVSC_OWNER_AUTH_FILE', kind: 'option' });
  t.deepEqual(runConfig([], { CREDENTIALS_DIRECTORY: '/run/credentials/tpmvscd.service' }).ownerAuthFile, {
    path: '/run/credentials/tpmvscd.service/tpm-owner-auth',
    source: 'systemd credential tpm-owner-auth',
    kind: 'credential',
  });
  const error = t.throws(() => parseDaemonArguments(['--owner-auth-file'], {}), { instanceOf: TpmvscError });
  t.regex(error.message, /--owner-auth-file needs a value/);
  t.throws(() => parseDaemonArguments(['register-readers', '--owner-auth-file', '/a'], {}), { message: /unknown option --owner-auth-file/ });
});

test('content is read as tpm2-tools read a password: TEXT, str:TEXT, hex:HEX, one trailing newline dropped', (t) => {
  t.is(text(parseTpmPassword(bytes('ownerpass'), OPTION)), 'ownerpass');
  t.is(text(parseTpmPassword(bytes('ownerpass\n'), OPTION)), 'ownerpass');
  t.is(text(parseTpmPassword(bytes('ownerpass\n\n'), OPTION)), 'ownerpass\n', 'only one newline is dropped');
  t.is(text(parseTpmPassword(bytes(' pass word \n'), OPTION)), ' pass word ', 'spaces are part of it');
  t.is(text(parseTpmPassword(bytes('str:hex:41\n'), OPTION)), 'hex:41');
  t.deepEqual(parseTpmPassword(bytes('hex:00ff41\n'), OPTION), new Uint8Array([0x00, 0xff, 0x41]));
  for (const bad of ['', '\n', 'str:', 'hex:', 'hex:abc', 'hex:zz', 'x'.repeat(65)]) {
    const error = t.throws(() => parseTpmPassword(bytes(bad), OPTION), { instanceOf: TpmvscError }, JSON.stringify(bad));
    t.is(error?.code, 'TPM_PASSWORD_FILE');
    t.regex(error?.message ?? '', /^A TPM password file cannot be used: \/etc\/tpmvsc\/owner-auth \(--owner-auth-file\) /);
  }
  t.is(parseTpmPassword(bytes('x'.repeat(64)), OPTION).length, 64);
});

test('a file others can read, another user owns, or that is missing is refused; an absent credential is no password', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-owner-auth-unit-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const uid = process.geteuid?.() ?? 0;
  const path = join(dir, 'owner-auth');
  const option: TpmPasswordSource = { path, source: '--owner-auth-file', kind: 'option' };
  const credential: TpmPasswordSource = { path, source: 'systemd credential tpm-owner-auth', kind: 'credential' };
  const secret = 'S3cret-owner';
  await writeFile(path, `${secret}\n`, { mode: 0o600 });
  await chmod(path, 0o600);
  t.is(text(await readTpmPassword(option, uid)), secret);
  await chmod(path, 0o400);
  t.is(text(await readTpmPassword(option, uid)), secret);

  const refused = async (source: TpmPasswordSource, pattern: RegExp, asUid = uid): Promise<void> => {
    const error = await t.throwsAsync(readTpmPassword(source, asUid), { instanceOf: TpmvscError });
    t.is(error?.code, 'TPM_PASSWORD_FILE');
    t.regex(error?.message ?? '', pattern);
    t.false(error?.message.includes(secret), 'the password is in the message');
  };
  for (const mode of [0o640, 0o604, 0o660, 0o644]) {
    await chmod(path, mode);
    await refused(option, new RegExp(`accessible by group or others \\(mode 0${mode.toString(8)}\\): chmod 600 `));
  }
  await chmod(path, 0o600);
  await refused(option, /is owned by uid \d+, not by the daemon's user \(uid 4242\): chown it/, 4242);
  await refused({ ...option, path: join(dir, 'absent') }, /absent \(--owner-auth-file\) does not exist/);
  await refused({ ...option, path: dir }, /is not a regular file/);

  // systemd's credential: absent means no password; its ACL mask may show in the group bits; root may own it
  t.is(await readTpmPassword({ ...credential, path: join(dir, 'absent') }, uid), undefined);
  await chmod(path, 0o440);
  t.is(text(await readTpmPassword(credential, uid)), secret);
  if (uid === 0) t.is(text(await readTpmPassword(credential, 4242)), secret, 'a root-owned credential is accepted');
  await chmod(path, 0o404);
  await refused(credential, /accessible by others \(mode 0404\)/);

  const large = join(dir, 'large');
  await writeFile(large, 'x'.repeat(5000), { mode: 0o600 });
  await refused({ ...option, path: large }, /larger than 4096 bytes/);
});
