/**
 * Only root and members of the admin group may manage cards: a real system user outside the
 * group is refused by the socket's file mode (EACCES -> exit 3) and, with the mode opened up,
 * by the server's SO_PEERCRED check (NOT_PERMITTED -> exit 3). A member gets in.
 * Needs root (to add and remove the users and group); the group name is unique per run.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { chmod, lstat, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { EXIT } from '../../common/errors.js';
import { CONTROL_CHANNEL } from '../../daemon/control_server.js';
import { runCli, startTestDaemon } from './cli_test_daemon.js';

function run(command: string, args: string[]): string {
  return execFileSync(command, args, { encoding: 'utf8' }).trim();
}

test.serial('a user outside the tpmvsc group is refused by file mode and by SO_PEERCRED; a member is served', async (t) => {
  if (process.getuid?.() !== 0) return t.fail('this test must run as root (it adds a system user and group)');
  const suffix = randomBytes(3).toString('hex');
  const group = `tpmvt${suffix}`;
  const outsider = `tpmvo${suffix}`;
  const member = `tpmvm${suffix}`;
  run('groupadd', ['-r', group]);
  t.teardown(() => void execFileSync('groupdel', [group]));
  run('useradd', ['-r', '-M', '-N', '-s', '/usr/sbin/nologin', outsider]);
  t.teardown(() => void execFileSync('userdel', [outsider]));
  run('useradd', ['-r', '-M', '-N', '-s', '/usr/sbin/nologin', '-G', group, member]);
  t.teardown(() => void execFileSync('userdel', [member]));
  const gid = Number(run('getent', ['group', group]).split(':')[2]);
  const as = (user: string): string[] => ['setpriv', `--reuid=${user}`, `--regid=${run('id', ['-g', user])}`, '--init-groups', '--'];

  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-perm-'));
  await chmod(dir, 0o755); // others may traverse to run/, whose own mode then decides
  const daemon = await startTestDaemon({ adminGroup: group, dir });
  t.teardown(async () => {
    await daemon.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const refused: unknown[] = [];
  const listener = (event: unknown): void => {
    if ((event as { event: string }).event === 'refused') refused.push(event);
  };
  subscribe(CONTROL_CHANNEL, listener);
  t.teardown(() => unsubscribe(CONTROL_CHANNEL, listener));

  const socketStat = await lstat(daemon.socketPath);
  t.is(socketStat.mode & 0o777, 0o660);
  t.is(socketStat.gid, gid);
  const runDirStat = await lstat(join(dir, 'run'));
  t.is(runDirStat.mode & 0o777, 0o750);
  t.is(runDirStat.gid, gid);

  await runCli(['create', '/quiet', '/name', 'Mine', '/AdminKey', 'DEFAULT', '--socket', daemon.socketPath]);
  t.is(daemon.cards.cards.size, 1);

  // 1. The file mode keeps the outsider out.
  const byMode = await runCli(['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0000', '--socket', daemon.socketPath], { prefix: as(outsider) });
  t.is(byMode.code, EXIT.notPermitted, byMode.stderr);
  t.regex(byMode.stderr, /^tpmvscmgr: Access denied: run as root or as a member of the tpmvsc group: cannot open .*\n$/);

  // 2. Even with the socket wide open, SO_PEERCRED keeps the outsider out.
  await chmod(join(dir, 'run'), 0o755);
  await chmod(daemon.socketPath, 0o666);
  for (const args of [['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0000'], ['create', '/name', 'Theirs', '/AdminKey', 'DEFAULT'], ['list']]) {
    const byCredentials = await runCli([...args, '--socket', daemon.socketPath], { prefix: as(outsider) });
    t.is(byCredentials.code, EXIT.notPermitted, byCredentials.stderr);
    t.is(byCredentials.stderr, 'tpmvscmgr: Access denied: run as root or as a member of the tpmvsc group\n');
    t.is(byCredentials.stdout, '');
  }
  t.is(refused.length, 3);
  t.is(daemon.cards.cards.size, 1, 'nothing was destroyed');
  t.is(daemon.cards.createRequests.length, 1, 'nothing was created');

  // 3. A member of the group (supplementary) is served, through the 0660 socket too.
  await chmod(join(dir, 'run'), 0o750);
  await chmod(daemon.socketPath, 0o660);
  const byMember = await runCli(['list', '/json', '--socket', daemon.socketPath], { prefix: as(member) });
  t.is(byMember.code, EXIT.ok, byMember.stderr);
  t.is((JSON.parse(byMember.stdout) as { cards: unknown[] }).cards.length, 1);
});
