/**
 * ssh with the card: ssh-keygen -D lists the card's keys; a private sshd on a free
 * loopback port accepts a login with the 9A key through `ssh -I <OpenSC module>` and
 * through ssh-agent (`ssh-add -s`). The PIN reaches ssh only through an SSH_ASKPASS
 * script, never argv. A wrong PIN fails the login and costs exactly one try.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runProgram, startStack, type CommandResult, type Stack } from '../helpers/stack.js';
import {
  DEFAULT_PIN, OPENSC_MODULE, createDefaultCard, freePort, makeTestCa, mustSucceed, provisionSlot, writeAskpass,
} from '../helpers/card_setup.js';
import { cardTries } from '../helpers/piv_tools.js';

const READER = 'TPM Virtual Smart Card 0 00 00';

interface Fixture {
  stack: Stack;
  dir: string;
  port: number;
  sshd: ChildProcess;
  sshdLog: () => string;
  goodAskpass: string;
  badAskpass: string;
}
let fixture: Fixture | undefined;
const children: ChildProcess[] = [];

function fx(): Fixture {
  if (!fixture) throw new Error('fixture not set up');
  return fixture;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(3000)]);
  if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
}

test.before(async () => {
  const stack = await startStack({ readers: 2 });
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-ssh-'));
  try {
    await createDefaultCard(stack, 'Ssh');
    const ca = await makeTestCa(dir);
    await provisionSlot(stack, { reader: READER, slot: '9a', algorithm: 'RSA2048', subject: '/CN=ssh 9a', ca, dir, prefix: 'ssh' });
    await provisionSlot(stack, { reader: READER, slot: '9c', algorithm: 'ECCP256', subject: '/CN=ssh 9c', ca, dir, prefix: 'ssh' });

    // The card's 9A key in ssh form, from ssh-keygen -D (which is itself under test below).
    const keys = mustSucceed(await stack.run('ssh-keygen', ['-D', OPENSC_MODULE]), 'ssh-keygen -D');
    const authKey = keys.stdout.split('\n').find((line) => line.endsWith('PIV AUTH pubkey'));
    if (!authKey) throw new Error(`no PIV AUTH key in:\n${keys.stdout}`);
    await writeFile(join(dir, 'authorized_keys'), `${authKey}\n`, { mode: 0o600 });
    mustSucceed(await runProgram('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_ed25519')]), 'host key');

    const port = await freePort();
    await writeFile(join(dir, 'sshd_config'), [
      `ListenAddress 127.0.0.1:${port}`,
      `HostKey ${join(dir, 'host_ed25519')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      'PubkeyAuthentication yes',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'PermitRootLogin prohibit-password',
      'StrictModes no',
      'UsePAM no',
      'LogLevel VERBOSE',
      '',
    ].join('\n'));
    // sshd's privilege separation directory (Debian's service creates it at start).
    if (!existsSync('/run/sshd')) await mkdir('/run/sshd', { mode: 0o755 });
    mustSucceed(await runProgram('/usr/sbin/sshd', ['-t', '-f', join(dir, 'sshd_config')]), 'sshd -t');
    const sshd = spawn('/usr/sbin/sshd', ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: ['ignore', 'ignore', 'pipe'] });
    children.push(sshd);
    let log = '';
    sshd.stderr?.on('data', (chunk: Buffer) => (log += chunk.toString()));
    for (let i = 0; i < 100 && !log.includes('Server listening'); i++) await sleep(50);
    if (!log.includes('Server listening')) throw new Error(`sshd did not start:\n${log}`);
    fixture = {
      stack, dir, port, sshd, sshdLog: () => log,
      goodAskpass: await writeAskpass(dir, 'askpass-good', DEFAULT_PIN),
      badAskpass: await writeAskpass(dir, 'askpass-bad', '87654321'),
    };
  } catch (error) {
    for (const child of children) await stopChild(child);
    await stack.stop();
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
});

test.after.always(async () => {
  for (const child of children) await stopChild(child);
  await fixture?.stack.stop();
  if (fixture) await rm(fixture.dir, { recursive: true, force: true });
});

function askpassEnv(askpass: string): NodeJS.ProcessEnv {
  return { SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: ':0' };
}

function sshOptions(): string[] {
  const { dir, port } = fx();
  return ['-F', '/dev/null', '-p', String(port), '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=${join(dir, 'known_hosts')}`,
    '-o', 'PreferredAuthentications=publickey', '-o', 'IdentityFile=none', '-v', '-o', 'ConnectTimeout=10'];
}

function ssh(args: string[], env: NodeJS.ProcessEnv): Promise<CommandResult> {
  return fx().stack.run('ssh', [...sshOptions(), ...args, 'root@127.0.0.1', 'echo', 'ok'], { env, timeoutMs: 60_000 });
}

test.serial('ssh-keygen -D prints the card keys as ssh public keys', async (t) => {
  const { stdout } = mustSucceed(await fx().stack.run('ssh-keygen', ['-D', OPENSC_MODULE]), 'ssh-keygen -D');
  const lines = stdout.trim().split('\n');
  t.regex(lines.find((l) => l.endsWith('PIV AUTH pubkey')) ?? '', /^ssh-rsa AAAA/);
  t.regex(lines.find((l) => l.endsWith('SIGN pubkey')) ?? '', /^ecdsa-sha2-nistp256 AAAA/);
  // The 9A key matches the card's public key.
  const fromPem = mustSucceed(await runProgram('ssh-keygen', ['-i', '-m', 'PKCS8', '-f', join(fx().dir, 'ssh-9a.pub.pem')]), 'convert');
  t.true(stdout.includes(fromPem.stdout.trim()), 'same 9A key as GENERATE returned');
});

test.serial('ssh -I <module> logs in with the PIN from SSH_ASKPASS', async (t) => {
  const result = await ssh(['-I', OPENSC_MODULE], askpassEnv(fx().goodAskpass));
  t.is(result.code, 0, `${result.stderr}\nsshd:\n${fx().sshdLog().slice(-2000)}`);
  t.is(result.stdout.trim(), 'ok');
  t.regex(fx().sshdLog(), /Accepted publickey for root from 127\.0\.0\.1/);
});

test.serial('a wrong PIN fails the login and costs exactly one try', async (t) => {
  // The daemon's count: the login before left the card PIN-verified (OpenSC does not reset it),
  // and yubico-piv-tool -a status then prints "PIN tries left: -1".
  const before = (await cardTries(fx().stack)).pin;
  const result = await ssh(['-I', OPENSC_MODULE], askpassEnv(fx().badAskpass));
  t.not(result.code, 0, 'login refused');
  t.notRegex(result.stdout, /ok/);
  t.is((await cardTries(fx().stack)).pin, before - 1);
  // A correct login restores the counter.
  t.is((await ssh(['-I', OPENSC_MODULE], askpassEnv(fx().goodAskpass))).code, 0);
  t.is((await cardTries(fx().stack)).pin, 5);
});

test.serial('ssh-agent with ssh-add -s: the agent logs in with the card', async (t) => {
  const socket = join(fx().dir, 'agent.sock');
  const agent = spawn('ssh-agent', ['-D', '-a', socket], {
    env: { ...fx().stack.env, ...askpassEnv(fx().goodAskpass) },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(agent);
  for (let i = 0; i < 100 && !existsSync(socket); i++) await sleep(50);
  t.true(existsSync(socket), 'agent socket');
  const agentEnv = { SSH_AUTH_SOCK: socket, ...askpassEnv(fx().goodAskpass) };
  const added = await fx().stack.run('ssh-add', ['-s', OPENSC_MODULE], { env: agentEnv });
  t.is(added.code, 0, added.stdout + added.stderr);
  const listed = await fx().stack.run('ssh-add', ['-L'], { env: agentEnv });
  t.regex(listed.stdout, /PIV AUTH pubkey/);

  const result = await ssh(['-o', `IdentityAgent=${socket}`], agentEnv);
  t.is(result.code, 0, result.stderr);
  t.is(result.stdout.trim(), 'ok');

  await stopChild(agent);
});
