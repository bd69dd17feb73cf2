/**
 * The README's first command: `npm start` brings up a working card on a machine with no
 * TPM and no pcscd. Run in a private mount namespace (its own /run/pcscd) so it cannot
 * touch the machine's pcscd, and a private network namespace, where the daemon's vpcd guard
 * (nftables) stays; the built product (dist/) is what runs, as for a user.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { guardTableName, readerPortRange } from '../../daemon/vpcd_guard.js';
import { EXIT } from '../../common/errors.js';
import { findFreePortRange } from '../helpers/pcscd.js';
import { REPO, runProgram } from '../helpers/stack.js';

const AS_NOBODY = ['setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--'];

test('npm start creates a demo card that yubico-piv-tool sees, and Ctrl-C stops everything', async (t) => {
  t.timeout(120_000);
  if (!existsSync(join(REPO, 'dist/scripts/start.js'))) {
    t.fail('dist/ is missing: npm test builds it first (npm run build)');
    return;
  }
  const dataDir = await mkdtemp(join(tmpdir(), 'tpmvsc-start-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const basePort = await findFreePortRange(2);
  // The namespace shell mounts a private /run/pcscd, then runs start.js in the foreground.
  const shell = spawn(
    'unshare',
    ['--mount', '--net', '--propagation', 'private', 'bash', '-c',
      'ip link set lo up && mkdir -p /run/pcscd && mount -t tmpfs tpmvsc-start /run/pcscd && exec node dist/scripts/start.js'],
    {
      cwd: REPO,
      env: { ...process.env, TPMVSC_START_DIR: dataDir, TPMVSC_VPCD: `127.0.0.1:${basePort}`, TPMVSC_TCTI: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let output = '';
  shell.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
  shell.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => shell.once('exit', (code) => resolve(code)));
  t.teardown(() => {
    if (shell.exitCode === null) shell.kill('SIGKILL');
  });

  const deadline = Date.now() + 90_000;
  while (!output.includes('Ctrl-C stops everything') && Date.now() < deadline && shell.exitCode === null) {
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  t.true(output.includes('Card ready: ROOT\\SMARTCARDREADER\\0000'), output);
  // The demo card has the well-known secrets: npm start says so next to them, and create warned.
  t.regex(output, /well-known defaults: every local account can reach the card/);
  t.regex(output, /^warning: \/AdminKey DEFAULT .*use \/AdminKey RANDOM or PROMPT$/m);
  t.true(output.includes('software TPM'), 'no /dev/tpmrm0 here: the embedded swtpm is used');
  t.regex(output, /tpmvscd: vpcd guard: table inet tpmvsc_vpcd_/, 'the daemon guarded its reader ports');

  // The guard is in place in npm start's network namespace: another user's connect is refused.
  const inNamespace = ['nsenter', `--net=/proc/${shell.pid}/ns/net`, '--'];
  const table = await runProgram(inNamespace[0]!, [...inNamespace.slice(1), '/usr/sbin/nft', 'list', 'table', ...guardTableName(readerPortRange(basePort, 2)).split(' ')]);
  t.is(table.code, 0, table.stderr);
  const probe = `import socket\ns = socket.socket()\ntry:\n  s.connect(("127.0.0.1", ${basePort})); print("connected")\nexcept OSError as e: print(e.errno)`;
  const asNobody = await runProgram(inNamespace[0]!, [...inNamespace.slice(1), ...AS_NOBODY, '/usr/bin/python3', '-c', probe]);
  t.is(asNobody.stdout.trim(), '111', `a connect as nobody is refused (ECONNREFUSED): ${asNobody.stdout}${asNobody.stderr}`);

  // The namespace's pcscd socket, reached from outside through the shell's root.
  const env = { ...process.env, PCSCLITE_CSOCK_NAME: `/proc/${shell.pid}/root/run/pcscd/pcscd.comm` };
  const status = await runProgram('yubico-piv-tool', ['-r', 'TPM Virtual Smart Card', '-a', 'status'], { env });
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /PIN tries left:\s+5/);

  shell.kill('SIGINT');
  t.is(await exited, 0, output);
  t.regex(output, /tpmvscd: SIG(INT|TERM): stopping/, 'the daemon was stopped cleanly');
});

test('npm start as another user than root stops at once with one line naming the fix', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'tpmvsc-start-'));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const result = await runProgram(AS_NOBODY[0]!, [...AS_NOBODY.slice(1), process.execPath, 'dist/scripts/start.js'], {
    env: { ...process.env, TPMVSC_START_DIR: dataDir, TPMVSC_TCTI: '' },
  });
  t.not(result.code, EXIT.ok);
  t.is(result.stderr.trim().split('\n').length, 1, result.stderr);
  t.regex(result.stderr, /^npm start: only root can guard the vpcd reader ports .*sudo npm start.*TPMVSC_ALLOW_UNPROTECTED_VPCD=1/);
  t.is(result.stdout, '', 'nothing was started');
});
