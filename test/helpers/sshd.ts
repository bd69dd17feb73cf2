/**
 * A second "computer" for /machine tests: a private sshd on a free loopback port, with its own
 * host key, config, authorized keys and log in a temp dir, and an ssh_config for the admin's
 * side (TPMVSC_SSH_CONFIG) that trusts exactly that host key and logs in with a temp key pair.
 * Started and ended here by PID.
 *
 *   const target = await startSshd({ setEnv: { TPMVSC_SOCKET: stack.socketPath, PATH: ... } });
 *   // ssh -F target.clientConfig target  ->  root on the private sshd
 *   await target.stop();
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { appendFile, chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { REPO, runProgram } from './stack.js';

export interface SshdInstance {
  port: number;
  dir: string;
  /** ssh_config for the client: Host "target" = root@127.0.0.1:port; known host and key set for every host. */
  clientConfig: string;
  /** sshd's log so far (-E). */
  log(): Promise<string>;
  /** Lets the client key log in as this user too. */
  authorize(user: string): Promise<void>;
  /** Lets this public key (an authorized_keys line, e.g. a card's from ssh-keygen -D) log in as this user too. */
  authorizeKey(user: string, publicKey: string): Promise<void>;
  /** The known_hosts file that trusts this sshd's host key (for clients not using clientConfig). */
  knownHosts: string;
  stop(): Promise<void>;
}

export interface SshdOptions {
  /** sshd_config SetEnv for every session (e.g. TPMVSC_SOCKET, PATH). */
  setEnv: Record<string, string>;
}

/** A port nothing listens on right now (bind 0, read, close). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (address === null || typeof address === 'string') throw new Error('no port');
  return address.port;
}

/** A bin dir whose `tpmvscmgr` runs this repository's CLI (readable by every user). */
export async function tpmvscmgrBinDir(parent: string): Promise<string> {
  const bin = join(parent, 'bin');
  await mkdir(bin, { recursive: true });
  const script = join(bin, 'tpmvscmgr');
  await writeFile(script, `#!/bin/sh\ncd '${REPO}' && exec '${process.execPath}' --import tsx cli/main.ts "$@"\n`);
  await chmod(parent, 0o755);
  await chmod(bin, 0o755);
  await chmod(script, 0o755);
  return bin;
}

function accepting(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function mustRun(program: string, args: string[]): Promise<void> {
  const result = await runProgram(program, args);
  if (result.code !== 0) throw new Error(`${program} ${args.join(' ')} failed: ${result.stderr}`);
}

export async function startSshd(options: SshdOptions): Promise<SshdInstance> {
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-sshd-'));
  let child: ChildProcess | undefined;
  try {
    // Other users' sessions read their authorized keys and run the bin dir from here.
    await chmod(dir, 0o755);
    const hostKey = join(dir, 'host_ed25519');
    const clientKey = join(dir, 'client_ed25519');
    await mustRun('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tpmvsc-test-host', '-f', hostKey]);
    await mustRun('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'tpmvsc-test-client', '-f', clientKey]);
    const keysDir = join(dir, 'authorized_keys');
    await mkdir(keysDir, { mode: 0o755 });
    await chmod(keysDir, 0o755);
    const clientPublic = await readFile(`${clientKey}.pub`, 'utf8');
    const authorize = async (user: string): Promise<void> => {
      const file = join(keysDir, user);
      await writeFile(file, clientPublic);
      await chmod(file, 0o644);
    };
    const authorizeKey = async (user: string, publicKey: string): Promise<void> => {
      const file = join(keysDir, user);
      await appendFile(file, `${publicKey.trim()}\n`, { mode: 0o644 });
    };
    await authorize('root');

    const port = await freePort();
    const logFile = join(dir, 'sshd.log');
    const setEnv = Object.entries(options.setEnv).map(([name, value]) => `"${name}=${value}"`).join(' ');
    const config = join(dir, 'sshd_config');
    await writeFile(
      config,
      [
        `Port ${port}`,
        'ListenAddress 127.0.0.1',
        `HostKey ${hostKey}`,
        'PidFile none',
        `AuthorizedKeysFile ${keysDir}/%u`,
        'StrictModes no',
        'PermitRootLogin prohibit-password',
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'UsePAM no',
        'PrintMotd no',
        'X11Forwarding no',
        'AllowTcpForwarding no',
        `SetEnv ${setEnv}`,
        'LogLevel INFO',
        '',
      ].join('\n'),
    );
    await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
    await mustRun('/usr/sbin/sshd', ['-t', '-f', config]);

    const hostPublic = (await readFile(`${hostKey}.pub`, 'utf8')).trim().split(' ').slice(0, 2).join(' ');
    const knownHosts = join(dir, 'known_hosts');
    await writeFile(knownHosts, `[127.0.0.1]:${port} ${hostPublic}\n`);
    const clientConfig = join(dir, 'ssh_config');
    await writeFile(
      clientConfig,
      [
        'Host target',
        '  HostName 127.0.0.1',
        `  Port ${port}`,
        '  User root',
        'Host *',
        `  IdentityFile ${clientKey}`,
        '  IdentitiesOnly yes',
        `  UserKnownHostsFile ${knownHosts}`,
        '  GlobalKnownHostsFile /dev/null',
        '  StrictHostKeyChecking yes',
        '  BatchMode yes',
        '  ConnectTimeout 10',
        '',
      ].join('\n'),
    );

    child = spawn('/usr/sbin/sshd', ['-D', '-f', config, '-E', logFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    const started = child;
    let stderr = '';
    started.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const deadline = Date.now() + 10_000;
    while (!(await accepting(port))) {
      if (started.exitCode !== null) throw new Error(`sshd exited with ${started.exitCode}: ${stderr}${await readFile(logFile, 'utf8').catch(() => '')}`);
      if (Date.now() > deadline) throw new Error('sshd did not start listening');
      await sleep(50);
    }
    return {
      port,
      dir,
      clientConfig,
      log: () => readFile(logFile, 'utf8').catch(() => ''),
      authorize,
      authorizeKey,
      knownHosts,
      stop: async () => {
        if (started.exitCode === null && started.signalCode === null) {
          const exited = new Promise<void>((resolve) => started.once('exit', () => resolve()));
          started.kill('SIGTERM');
          await exited;
        }
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    if (child && child.exitCode === null) child.kill('SIGTERM');
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}
