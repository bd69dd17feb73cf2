/**
 * /machine: tpmvscmgr manages cards on another computer over ssh. The other computer is
 * simulated here: a private sshd on a free loopback port whose sessions see their own stack
 * (swtpm, pcscd, tpmvscd) through SetEnv TPMVSC_SOCKET, and a `tpmvscmgr` on PATH that runs
 * this repository's CLI. The admin's tpmvscmgr runs with a TPMVSC_SOCKET that points nowhere,
 * so anything done locally by mistake fails.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO, runProgram, startStack, type CommandResult, type Stack } from '../helpers/stack.js';
import { startSshd, tpmvscmgrBinDir, freePort, type SshdInstance } from '../helpers/sshd.js';

interface World {
  stack: Stack;
  binParent: string;
  /** PATH with tpmvscmgr, TPMVSC_SOCKET = the stack's daemon. */
  target: SshdInstance;
  /** PATH without tpmvscmgr. */
  bare: SshdInstance;
  /** tpmvscmgr present, TPMVSC_SOCKET points nowhere. */
  daemonDown: SshdInstance;
}

let world: World | undefined;
const LOCAL_SOCKET_NOWHERE = '/nonexistent/tpmvsc-local/control.sock';
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

test.before(async () => {
  const stack = await startStack({ readers: 4 });
  const binParent = await mkdtemp(join(tmpdir(), 'tpmvsc-remote-bin-'));
  try {
    const bin = await tpmvscmgrBinDir(binParent);
    const pcsc = { PCSCLITE_CSOCK_NAME: stack.env.PCSCLITE_CSOCK_NAME ?? '' };
    const target = await startSshd({ setEnv: { TPMVSC_SOCKET: stack.socketPath, PATH: `${bin}:${SYSTEM_PATH}`, ...pcsc } });
    const bare = await startSshd({ setEnv: { TPMVSC_SOCKET: stack.socketPath, PATH: SYSTEM_PATH } });
    const daemonDown = await startSshd({ setEnv: { TPMVSC_SOCKET: join(binParent, 'no-daemon.sock'), PATH: `${bin}:${SYSTEM_PATH}` } });
    world = { stack, binParent, target, bare, daemonDown };
  } catch (error) {
    await stack.stop();
    await rm(binParent, { recursive: true, force: true });
    throw error;
  }
});

test.after.always(async () => {
  if (!world) return;
  await world.target.stop();
  await world.bare.stop();
  await world.daemonDown.stop();
  await world.stack.stop();
  await rm(world.binParent, { recursive: true, force: true });
});

function the(): World {
  if (!world) throw new Error('the test world did not start');
  return world;
}

/** The admin's tpmvscmgr: no local daemon, ssh configured for the given target. */
function adminCli(sshd: SshdInstance, args: string[], input = ''): Promise<CommandResult> {
  return runProgram(process.execPath, ['--import', 'tsx', join(REPO, 'cli/main.ts'), ...args], {
    input,
    env: { ...process.env, TPMVSC_SOCKET: LOCAL_SOCKET_NOWHERE, TPMVSC_SSH_CONFIG: sshd.clientConfig },
    timeoutMs: 60_000,
  });
}

async function targetCards(): Promise<{ instance: string; name: string }[]> {
  const list = await the().stack.cli(['list', '/json']);
  return (JSON.parse(list.stdout) as { cards: { instance: string; name: string }[] }).cards;
}

async function cardFiles(): Promise<string[]> {
  return readdir(join(the().stack.stateDir, 'cards')).catch(() => []);
}

/** Every process's command line on this computer (the target is this computer). */
async function allCommandLines(): Promise<string> {
  const lines: string[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    lines.push(cmdline.replace(/\0/g, ' '));
  }
  return lines.join('\n');
}

const lastLine = (text: string): string => text.trim().split('\n').at(-1) ?? '';

test.serial('create /machine makes the card on the target only; list, status --json and destroy work remotely; secrets stay in the channel', async (t) => {
  const { target, stack } = the();
  const adminKey = randomBytes(24).toString('hex').toUpperCase();
  const pin = `Rp${randomBytes(3).toString('hex')}`; // 8 characters
  const puk = `Uk${randomBytes(3).toString('hex')}`; // 8 characters: PIV clients send no more

  // Watch every process's command line while the create runs.
  let watching = true;
  let leaked = '';
  const watcher = (async () => {
    while (watching) {
      const commandLines = await allCommandLines();
      for (const secret of [adminKey, pin, puk]) if (commandLines.includes(secret)) leaked = secret === pin ? 'PIN' : secret === puk ? 'PUK' : 'admin key';
      await sleep(25);
    }
  })();
  const created = await adminCli(
    target,
    ['create', '/name', "Remote 'card' $HOME", '/AdminKey', 'PROMPT', '/PIN', 'PROMPT', '/PUK', 'PROMPT', '/generate', '/machine', 'target'],
    `${adminKey}\n${pin}\n${puk}\n`,
  );
  watching = false;
  await watcher;
  t.is(created.code, 0, created.stderr);
  t.is(lastLine(created.stdout), 'ROOT\\SMARTCARDREADER\\0000');
  t.true(created.stderr.includes('Creating the Virtual Smart Card Simulator...'), 'progress streams back');
  t.true(created.stderr.includes('TPM Smart Card created.'));
  t.false(created.stderr.includes('tpmvscmgr-remote-session'), 'the session marker is not shown');
  t.notRegex(created.stderr, /^warning: \//m, 'no well-known-secret warning for PROMPT secrets');
  t.is(leaked, '', `the ${leaked} appeared in a process command line`);

  // On the target, with the name intact through the remote shell; not here.
  t.deepEqual((await targetCards()).map((card) => card.name), ["Remote 'card' $HOME"]);
  const local = await adminCli(target, ['list']);
  t.is(local.code, 4, 'no local daemon: a local list fails');

  // The card really has the secrets sent through the channel.
  const verify = await stack.run('yubico-piv-tool', ['-r', 'TPM Virtual Smart Card 0 00 00', '-a', 'verify-pin', '-P', pin]);
  t.is(verify.code, 0, verify.stderr + verify.stdout);

  const listed = await adminCli(target, ['list', '/json', '/machine', 'target']);
  t.is(listed.code, 0, listed.stderr);
  const cards = (JSON.parse(listed.stdout) as { cards: { instance: string; hasPuk: boolean }[] }).cards;
  t.deepEqual(cards.map((card) => [card.instance, card.hasPuk]), [['ROOT\\SMARTCARDREADER\\0000', true]]);

  const status = await adminCli(target, ['status', '--json', '/instance', 'ROOT\\SMARTCARDREADER\\0000', '/machine', `ssh://root@127.0.0.1:${target.port}`]);
  t.is(status.code, 0, status.stderr);
  const parsed = JSON.parse(status.stdout) as { readers: number; cards: { instance: string; pinTriesRemaining: number }[] };
  t.is(parsed.readers, 4);
  t.is(parsed.cards[0]?.pinTriesRemaining, 5);

  const destroyed = await adminCli(target, ['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0000', '/machine', 'root@target']);
  t.is(destroyed.code, 0, destroyed.stderr);
  t.true(destroyed.stderr.includes('TPM Smart Card destroyed.'));
  t.deepEqual(await targetCards(), []);

  // Remote errors come back with the local wording and exit code.
  const again = await adminCli(target, ['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0000', '/machine', 'target', '/json']);
  t.is(again.code, 7, again.stderr);
  t.regex(again.stderr, /^tpmvscmgr: No virtual smart card has that instance ID/m);
  t.is((JSON.parse(again.stdout) as { error: { code: string } }).error.code, 'NOT_FOUND');

  for (const log of [stack.daemonLog(), await target.log(), created.stderr, created.stdout]) {
    for (const secret of [adminKey, pin, puk]) t.false(log.includes(secret), 'a secret reached a log or the output');
  }
});

test.serial('unblock /machine sets a new PIN on the target card, prompted here', async (t) => {
  const { target, stack } = the();
  const created = await adminCli(target, ['create', '/name', 'NoPuk', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/generate', '/machine', 'target']);
  t.is(created.code, 0, created.stderr);
  // The target's warnings for its well-known secrets come back, one line each.
  t.regex(created.stderr, /^warning: \/AdminKey DEFAULT .*reset its PIN .*; use \/AdminKey RANDOM or PROMPT$/m);
  t.regex(created.stderr, /^warning: \/PIN DEFAULT .*; use \/PIN PROMPT.*$/m);
  const instance = lastLine(created.stdout);
  const newPin = `Nw${randomBytes(3).toString('hex')}`;
  const unblocked = await adminCli(target, ['unblock', '/instance', instance, '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/machine', 'target'], `${newPin}\n`);
  t.is(unblocked.code, 0, unblocked.stderr);
  t.true(unblocked.stderr.includes('PIN unblocked.'));
  const reader = (await targetCards()).length === 1 ? 'TPM Virtual Smart Card 0 00 00' : '';
  const verify = await stack.run('yubico-piv-tool', ['-r', reader, '-a', 'verify-pin', '-P', newPin]);
  t.is(verify.code, 0, verify.stderr + verify.stdout);
  const destroyed = await adminCli(target, ['destroy', '/instance', instance, '/machine', 'target']);
  t.is(destroyed.code, 0, destroyed.stderr);
});

test.serial('a remote user who is neither root nor in the admin group is refused with exit 3', async (t) => {
  const { target } = the();
  const user = `tvsc${randomBytes(3).toString('hex')}`;
  const added = await runProgram('useradd', ['--system', '--no-create-home', '--home-dir', '/', '--shell', '/bin/sh', '--password', '*', user]);
  t.is(added.code, 0, added.stderr);
  t.teardown(async () => {
    await runProgram('userdel', [user]);
  });
  await target.authorize(user);
  for (const args of [
    ['list', '/machine', `${user}@target`],
    ['create', '/name', 'Nope', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/machine', `${user}@target`],
  ]) {
    const refused = await adminCli(target, args);
    t.is(refused.code, 3, refused.stderr);
    t.regex(refused.stderr, /^tpmvscmgr: Access denied: run as root or as a member of the tpmvsc group/m);
  }
  t.deepEqual(await targetCards(), []);
});

test.serial('Ctrl-C during a remote create leaves nothing on the target', async (t) => {
  const { target } = the();
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(REPO, 'cli/main.ts'), 'create', '/name', 'Interrupted', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/PUK', 'DEFAULT', '/generate', '/machine', 'target'],
    { env: { ...process.env, TPMVSC_SOCKET: LOCAL_SOCKET_NOWHERE, TPMVSC_SSH_CONFIG: target.clientConfig }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let stderr = '';
  let stdout = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  const exited = new Promise<number | string | null>((resolve) => child.once('close', (code, signal) => resolve(code ?? signal)));
  let sent = false;
  const interrupted = new Promise<void>((resolve) => {
    child.stderr.on('data', (chunk: Buffer) => {
      stderr += chunk.toString();
      // The daemon has started sealing the card in the TPM: interrupt now.
      if (!sent && stderr.includes('Creating the Virtual Smart Card Simulator...')) {
        sent = true;
        child.kill('SIGINT');
        resolve();
      }
    });
  });
  await Promise.race([interrupted, exited]);
  t.is(await exited, 130, stderr);
  t.regex(stderr, /interrupted; nothing was created/);
  t.false(stdout.includes('ROOT\\SMARTCARDREADER'), 'no instance ID was printed');
  // The target's rollback runs on its own: give it a moment, then nothing may remain.
  for (let i = 0; i < 100 && ((await targetCards()).length > 0 || (await cardFiles()).length > 0); i++) await sleep(100);
  t.deepEqual(await targetCards(), []);
  t.deepEqual(await cardFiles(), []);
  // The interrupt reached the daemon in the middle of the create (its rollback path), not before.
  t.regex(the().stack.daemonLog(), /"event":"client-gone","op":"create"/);
});

test.serial('unreachable, refused, not installed, daemon down: one line each with a documented exit code', async (t) => {
  const { target, bare, daemonDown } = the();
  const oneLine = (result: CommandResult): string[] => result.stderr.trim().split('\n');

  // In a network namespace of its own (only a loopback that is down), so the name lookup
  // fails on this machine and no query ever leaves it.
  const unknown = await runProgram(
    'unshare',
    ['--net', process.execPath, '--import', 'tsx', join(REPO, 'cli/main.ts'), 'list', '/machine', 'nohost.invalid'],
    { env: { ...process.env, TPMVSC_SOCKET: LOCAL_SOCKET_NOWHERE, TPMVSC_SSH_CONFIG: target.clientConfig }, timeoutMs: 60_000 },
  );
  t.is(unknown.code, 10, unknown.stderr);
  t.deepEqual(oneLine(unknown), [oneLine(unknown)[0]!]);
  t.regex(unknown.stderr, /^tpmvscmgr: Cannot reach the computer over SSH: nohost\.invalid: .*resolve/);

  const port = await freePort();
  const refused = await adminCli(target, ['status', '/json', '/machine', `ssh://root@127.0.0.1:${port}`]);
  t.is(refused.code, 10, refused.stderr);
  t.is(oneLine(refused).length, 1);
  t.regex(refused.stderr, /^tpmvscmgr: Cannot reach the computer over SSH: 127\.0\.0\.1: .*Connection refused/);
  t.is((JSON.parse(refused.stdout) as { error: { code: string } }).error.code, 'REMOTE_UNREACHABLE');

  const notInstalled = await adminCli(bare, ['list', '/machine', 'target']);
  t.is(notInstalled.code, 11, notInstalled.stderr);
  t.is(oneLine(notInstalled).length, 1);
  t.regex(notInstalled.stderr, /^tpmvscmgr: tpmvsc is not installed on the computer: target: tpmvscmgr did not start/);

  const down = await adminCli(daemonDown, ['create', '/name', 'X', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/machine', 'target']);
  t.is(down.code, 4, down.stderr);
  t.is(oneLine(down).length, 1);
  t.regex(down.stderr, /^tpmvscmgr: The tpmvscd daemon is not running/);
});

test.serial('a /machine that starts with "-" is refused before ssh runs', async (t) => {
  const { target } = the();
  const marker = join(the().binParent, 'injected');
  const result = await adminCli(target, ['list', '/machine', `-oProxyCommand=touch ${marker}`]);
  t.is(result.code, 2, result.stderr);
  t.regex(result.stderr, /^tpmvscmgr: \/machine cannot start with "-"/);
  await t.throwsAsync(readFile(marker));
});
