/**
 * The README's first command: `npm start` brings up a working card on a machine with no
 * TPM and no pcscd. Run in a private mount namespace (its own /run/pcscd) so it cannot
 * touch the machine's pcscd; the built product (dist/) is what runs, as for a user.
 */
import test from 'ava';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { findFreePortRange } from '../helpers/pcscd.js';
import { REPO, runProgram } from '../helpers/stack.js';

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
    ['--mount', '--propagation', 'private', 'bash', '-c',
      'mkdir -p /run/pcscd && mount -t tmpfs tpmvsc-start /run/pcscd && exec node dist/scripts/start.js'],
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

  // The namespace's pcscd socket, reached from outside through the shell's root.
  const env = { ...process.env, PCSCLITE_CSOCK_NAME: `/proc/${shell.pid}/root/run/pcscd/pcscd.comm` };
  const status = await runProgram('yubico-piv-tool', ['-r', 'TPM Virtual Smart Card', '-a', 'status'], { env });
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /PIN tries left:\s+5/);

  shell.kill('SIGINT');
  t.is(await exited, 0, output);
  t.regex(output, /tpmvscd: SIG(INT|TERM): stopping/, 'the daemon was stopped cleanly');
});
