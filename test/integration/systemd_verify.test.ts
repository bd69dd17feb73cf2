/**
 * The systemd files pass systemd's own checks: `systemd-analyze verify` on tpmvscd.service and
 * on pcscd.service with our drop-in (no warning allowed), sysusers creating the user and group
 * in a scratch root, and tmpfiles creating the directories there with the right modes.
 */
import { spawnSync } from 'node:child_process';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { REPO_ROOT } from './cli_test_daemon.js';

const SYSTEMD = join(REPO_ROOT, 'systemd');

function run(command: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const result = spawnSync(command, args, { encoding: 'utf8', env: { ...process.env, ...env } });
  return { code: result.status, output: `${result.stdout ?? ''}${result.stderr ?? ''}`.trim() };
}

test('systemd-analyze verify accepts tpmvscd.service and the pcscd drop-in without a warning', async (t) => {
  t.true(existsSync('/usr/bin/systemd-analyze'), 'systemd-analyze is missing: apt-get install systemd (scripts/setup.sh does)');
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-units-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // ExecStart must resolve: point it at an executable in the temp copy.
  const fakeDaemon = join(dir, 'tpmvscd');
  await writeFile(fakeDaemon, '#!/bin/sh\nexit 0\n');
  await chmod(fakeDaemon, 0o755);
  const unit = await readFile(join(SYSTEMD, 'tpmvscd.service'), 'utf8');
  t.regex(unit, /^ExecStart=\/usr\/bin\/tpmvscd$/m);
  t.regex(unit, /^ExecStartPre=\+\/usr\/bin\/tpmvscd guard-vpcd --daemon-user tpmvsc$/m);
  await writeFile(join(dir, 'tpmvscd.service'), unit.replaceAll('/usr/bin/tpmvscd', fakeDaemon));
  await mkdir(join(dir, 'pcscd.service.d'));
  await copyFile(join(SYSTEMD, 'pcscd.service.d', 'tpmvsc.conf'), join(dir, 'pcscd.service.d', 'tpmvsc.conf'));
  await copyFile('/lib/systemd/system/pcscd.service', join(dir, 'pcscd.service'));

  // The trailing ':' keeps the system's unit path after ours (for pcscd.socket, multi-user.target...).
  const verified = run('systemd-analyze', ['verify', join(dir, 'tpmvscd.service'), join(dir, 'pcscd.service')], { SYSTEMD_UNIT_PATH: `${dir}:` });
  t.is(verified.code, 0, verified.output);
  t.is(verified.output, '', 'systemd-analyze printed warnings');

  // The check is real: a misspelt key in the drop-in is reported.
  await writeFile(join(dir, 'pcscd.service.d', 'tpmvsc.conf'), '[Service]\nIPAddressDenny=any\n');
  const broken = run('systemd-analyze', ['verify', join(dir, 'pcscd.service')], { SYSTEMD_UNIT_PATH: `${dir}:` });
  t.regex(broken.output, /Unknown key 'IPAddressDenny'/);
});

test('systemd-analyze verify accepts pcscd.socket with the --restrict-pcscd drop-in; sysusers creates its group', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-units-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const dropIn = await readFile(join(SYSTEMD, 'pcscd.socket.d', 'tpmvsc-restrict.conf'), 'utf8');
  t.deepEqual(dropIn.split('\n').filter((line) => line !== '' && !line.startsWith('#')), ['[Socket]', 'SocketMode=0660', 'SocketGroup=scard']);
  await copyFile('/lib/systemd/system/pcscd.socket', join(dir, 'pcscd.socket'));
  await copyFile('/lib/systemd/system/pcscd.service', join(dir, 'pcscd.service'));
  await mkdir(join(dir, 'pcscd.socket.d'));
  await writeFile(join(dir, 'pcscd.socket.d', 'tpmvsc-restrict.conf'), dropIn);
  const verified = run('systemd-analyze', ['verify', join(dir, 'pcscd.socket')], { SYSTEMD_UNIT_PATH: `${dir}:` });
  t.is(verified.code, 0, verified.output);
  t.is(verified.output, '', 'systemd-analyze printed warnings');

  // The drop-in is read: a bad mode or group name in it is reported.
  await writeFile(join(dir, 'pcscd.socket.d', 'tpmvsc-restrict.conf'), '[Socket]\nSocketMode=0669\nSocketGroup=sc/ard\n');
  const broken = run('systemd-analyze', ['verify', join(dir, 'pcscd.socket')], { SYSTEMD_UNIT_PATH: `${dir}:` });
  t.regex(broken.output, /Failed to parse mode value, ignoring: 0669/);
  t.regex(broken.output, /Invalid user\/group name or numeric ID: sc\/ard/);

  const root = join(dir, 'root');
  await mkdir(join(root, 'etc'), { recursive: true });
  const sysusers = run('systemd-sysusers', [`--root=${root}`, join(SYSTEMD, 'sysusers.d', 'tpmvsc-pcscd.conf')]);
  t.is(sysusers.code, 0, sysusers.output);
  t.regex(await readFile(join(root, 'etc', 'group'), 'utf8'), /^scard:x:\d+:$/m);
});

test('sysusers creates user and group tpmvsc and group tss; tmpfiles creates the state and runtime directories', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'tpmvsc-root-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await mkdir(join(root, 'etc'));
  const sysusers = run('systemd-sysusers', [`--root=${root}`, join(SYSTEMD, 'sysusers.d', 'tpmvsc.conf')]);
  t.is(sysusers.code, 0, sysusers.output);
  const passwd = await readFile(join(root, 'etc', 'passwd'), 'utf8');
  const group = await readFile(join(root, 'etc', 'group'), 'utf8');
  t.regex(passwd, /^tpmvsc:x:\d+:\d+:TPM virtual smart card daemon:\/var\/lib\/tpmvsc:\/usr\/sbin\/nologin$/m);
  t.regex(group, /^tpmvsc:x:\d+:/m);
  // The unit's SupplementaryGroups=tss must resolve on a machine without tpm-udev's group.
  t.regex(group, /^tss:x:\d+:/m);

  const tmpfiles = run('systemd-tmpfiles', [`--root=${root}`, '--create', join(SYSTEMD, 'tmpfiles.d', 'tpmvsc.conf')]);
  t.is(tmpfiles.code, 0, tmpfiles.output);
  t.is((await stat(join(root, 'var', 'lib', 'tpmvsc'))).mode & 0o777, 0o700);
  t.is((await stat(join(root, 'run', 'tpmvsc'))).mode & 0o777, 0o750);
});

test('the daemon unit carries the hardening the design relies on', async (t) => {
  const unit = await readFile(join(SYSTEMD, 'tpmvscd.service'), 'utf8');
  for (const line of [
    'User=tpmvsc',
    'SupplementaryGroups=tss',
    'StateDirectory=tpmvsc',
    'StateDirectoryMode=0700',
    'RuntimeDirectory=tpmvsc',
    'RuntimeDirectoryMode=0750',
    'ProtectSystem=strict',
    'ProtectHome=yes',
    'NoNewPrivileges=yes',
    'PrivateTmp=yes',
    'PrivateDevices=no',
    'DeviceAllow=/dev/tpmrm0 rw',
    'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6',
    'IPAddressDeny=any',
    'IPAddressAllow=localhost',
    'CapabilityBoundingSet=',
    'SystemCallFilter=@system-service',
    'UMask=0077',
    'Restart=on-failure',
    'After=pcscd.service',
    'Wants=pcscd.service',
  ]) {
    t.true(unit.split('\n').includes(line), line);
  }
  t.false(/^ProtectProc=invisible/m.test(unit), 'the peer check reads /proc/<pid>/status');
  t.true(unit.split('\n').includes('RestartPreventExitStatus=12'), 'an unguarded start is not retried');
  const dropIn = await readFile(join(SYSTEMD, 'pcscd.service.d', 'tpmvsc.conf'), 'utf8');
  // pcscd without --auto-exit: Debian's ExecStart reset, then the same command without it.
  t.regex(dropIn, /^ExecStart=\nExecStart=\/usr\/sbin\/pcscd --foreground \$PCSCD_ARGS$/m);
  t.false(/^ExecStart=.*--auto-exit/m.test(dropIn));
  t.regex(dropIn, /^IPAddressDeny=any$/m);
  t.regex(dropIn, /^IPAddressAllow=localhost$/m);
  // Debian's ExecStart has --auto-exit: pcscd would quit 60 s after its last client, cards and all.
  t.regex(dropIn, /^ExecStart=\nExecStart=\/usr\/sbin\/pcscd --foreground \$PCSCD_ARGS$/m);
  t.false(/--auto-exit/.test(dropIn.replace(/^#.*$/gm, '')), 'the drop-in runs pcscd with --auto-exit');
});
