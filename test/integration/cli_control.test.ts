/**
 * The real tpmvscmgr binary against a real ControlServer on a temp socket (card logic: the
 * recording test double of cli_test_daemon.ts).
 */
import { spawn } from 'node:child_process';
import { mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { EXIT } from '../../common/errors.js';
import { makeStaleSocket, runCli, startTestDaemon, type CliRun } from './cli_test_daemon.js';

const ADMIN_KEY = 'A1B2C3D4E5F60718293A4B5C6D7E8F90112233445566778F';
const PIN = 'Sec#Pn42';
const PUK = 'Unl#Pk77';
const SECRETS = [ADMIN_KEY, ADMIN_KEY.toLowerCase(), PIN, PUK];

function assertNoSecrets(t: { false: (value: boolean, message?: string) => void }, run: CliRun, extra: string[] = []): void {
  for (const secret of [...SECRETS, ...extra]) {
    t.false(run.stdout.includes(secret), 'secret on stdout');
    t.false(run.stderr.includes(secret), 'secret on stderr');
    t.false(run.argv.some((arg) => arg.includes(secret)), 'secret in argv');
  }
}

/** ONE line on stderr, starting "tpmvscmgr: ". */
function oneErrorLine(run: CliRun): string {
  const lines = run.stderr.split('\n').filter(Boolean);
  if (lines.length !== 1 || !lines[0]!.startsWith('tpmvscmgr: ')) throw new Error(`expected one error line, got: ${JSON.stringify(run.stderr)}`);
  return lines[0]!;
}

test('create with PROMPT reads admin key, PIN and PUK from non-TTY stdin in that order; progress on stderr, instance on stdout', async (t) => {
  const daemon = await startTestDaemon();
  t.teardown(() => daemon.stop());
  const run = await runCli(['create', '/name', 'Corp Card', '/AdminKey', 'PROMPT', '/PIN', 'PROMPT', '/PUK', 'PROMPT', '/generate'], {
    stdin: `${ADMIN_KEY.toLowerCase()}\r\n${PIN}\n${PUK}\n`,
    env: { TPMVSC_SOCKET: daemon.socketPath },
  });
  t.is(run.code, EXIT.ok, run.stderr);
  t.is(run.stdout, 'ROOT\\SMARTCARDREADER\\0000\n');
  t.deepEqual(run.stderr.split('\n').filter(Boolean), [
    'Initializing the Virtual Smart Card component...',
    'Creating the Virtual Smart Card Reader...',
    'TPM Smart Card created.',
  ]);
  t.like(daemon.cards.createRequests[0], { name: 'Corp Card', adminKeyHex: ADMIN_KEY, adminKeyRandom: false, pin: PIN, puk: PUK, generate: true, attestation: null });
  assertNoSecrets(t, run);

  const second = await runCli(['create', '/name', 'Second', '/AdminKey', 'DEFAULT', '--socket', daemon.socketPath]);
  t.is(second.stdout.trim().split('\n').at(-1), 'ROOT\\SMARTCARDREADER\\0001', 'instance n grows by one');
});

test('defaults: DEFAULT admin key and PIN, no PUK unless /PUK; /PUK DEFAULT is 12345678', async (t) => {
  const daemon = await startTestDaemon();
  t.teardown(() => daemon.stop());
  const first = await runCli(['create', '/name', 'A', '/AdminKey', 'DEFAULT', '--socket', daemon.socketPath]);
  t.is(first.code, EXIT.ok, first.stderr);
  t.like(daemon.cards.createRequests[0], { adminKeyHex: '010203040506070801020304050607080102030405060708', pin: '12345678', puk: null });
  await runCli(['create', '/name', 'B', '/AdminKey', 'DEFAULT', '/PUK', 'DEFAULT', '--socket', daemon.socketPath]);
  t.is(daemon.cards.createRequests[1]?.puk, '12345678');
});

test('/quiet prints only the instance; --json prints one JSON object', async (t) => {
  const daemon = await startTestDaemon();
  t.teardown(() => daemon.stop());
  const quiet = await runCli(['create', '/quiet', '/name', 'Q', '/AdminKey', 'DEFAULT', '--socket', daemon.socketPath]);
  t.is(quiet.code, EXIT.ok);
  t.is(quiet.stderr, '');
  t.is(quiet.stdout, 'ROOT\\SMARTCARDREADER\\0000\n');
  const json = await runCli(['create', '/name', 'J', '/AdminKey', 'DEFAULT', '--JSON', '/quiet', '--socket', daemon.socketPath]);
  t.like(JSON.parse(json.stdout), { instance: 'ROOT\\SMARTCARDREADER\\0001', reader: 'TPM Virtual Smart Card 00 01' });
  const list = await runCli(['list', '/json', '--socket', daemon.socketPath]);
  t.deepEqual(
    (JSON.parse(list.stdout) as { cards: Array<{ name: string }> }).cards.map((card) => card.name),
    ['Q', 'J'],
  );
  const status = await runCli(['status', '/instance', 'ROOT\\SMARTCARDREADER\\0001', '/json', '--socket', daemon.socketPath]);
  t.is((JSON.parse(status.stdout) as { cards: unknown[] }).cards.length, 1);
  const failure = await runCli(['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0009', '/json', '--socket', daemon.socketPath]);
  t.is(failure.code, EXIT.notFound);
  t.like(JSON.parse(failure.stdout), { ok: false, error: { code: 'NOT_FOUND' }, exitCode: EXIT.notFound });
});

test('/AdminKey RANDOM: 24 random bytes sent to the daemon, never printed, different every time', async (t) => {
  const daemon = await startTestDaemon();
  t.teardown(() => daemon.stop());
  const runs = [
    await runCli(['create', '/name', 'R1', '/AdminKey', 'RANDOM', '--socket', daemon.socketPath]),
    await runCli(['create', '/name', 'R2', '/AdminKey', 'RANDOM', '/json', '--socket', daemon.socketPath]),
  ];
  const keys = daemon.cards.createRequests.map((request) => request.adminKeyHex);
  t.is(keys.length, 2);
  for (const key of keys) t.regex(key, /^[0-9A-F]{48}$/);
  t.not(keys[0], keys[1]);
  t.true(daemon.cards.createRequests.every((request) => request.adminKeyRandom));
  for (const run of runs) {
    t.is(run.code, EXIT.ok);
    assertNoSecrets(t, run, [...keys, ...keys.map((key) => key.toLowerCase())]);
  }
});

test('a PIN shorter than the policy: one line naming the rule, exit 9, nothing created', async (t) => {
  const daemon = await startTestDaemon();
  t.teardown(() => daemon.stop());
  const run = await runCli(['create', '/name', 'P', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'minlen', '6', 'maxlen', '8', '--socket', daemon.socketPath], {
    stdin: 'Short#Pin1\n'.slice(0, 5) + '\n',
  });
  t.is(run.code, EXIT.rejected);
  t.is(oneErrorLine(run), 'tpmvscmgr: the PIN must be at least 6 characters long');
  t.is(run.stdout, '');
  t.is(daemon.cards.createRequests.length, 0);
  t.false(run.stderr.includes('Short'));
});

const PIV_REASON = 'PIV clients send at most 8 bytes (yubico-piv-tool refuses longer ones, OpenSC answers CKR_PIN_LEN_RANGE)';

test('a PIN, a PUK or a /pinpolicy maxlen longer than PIV clients can send: refused up front with the reason', async (t) => {
  const daemon = await startTestDaemon();
  t.teardown(() => daemon.stop());
  const socket = ['--socket', daemon.socketPath];
  // Refused while parsing, before any prompt: the PIN on stdin is never read.
  const policy = await runCli(['create', '/name', 'W', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'minlen', '4', 'maxlen', '12', ...socket], { stdin: `${PIN}\n` });
  t.is(policy.code, EXIT.usage);
  t.is(oneErrorLine(policy), `tpmvscmgr: /pinpolicy maxlen must be an integer from 6 to 8: ${PIV_REASON}`);
  const longPin = await runCli(['create', '/name', 'W', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', ...socket], { stdin: 'Longer#Pin42\n' });
  t.is(longPin.code, EXIT.rejected);
  t.is(oneErrorLine(longPin), `tpmvscmgr: the PIN must be exactly 8 characters long: Windows' minimum is 8 and ${PIV_REASON}`);
  const policyPin = await runCli(['create', '/name', 'W', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'minlen', '4', ...socket], { stdin: 'Pin#123456\n' });
  t.is(oneErrorLine(policyPin), `tpmvscmgr: the PIN must be at most 8 characters long: ${PIV_REASON}`);
  const longPuk = await runCli(['create', '/name', 'W', '/AdminKey', 'DEFAULT', '/PUK', 'PROMPT', ...socket], { stdin: 'Longer#Puk77\n' });
  t.is(longPuk.code, EXIT.rejected);
  t.is(oneErrorLine(longPuk), `tpmvscmgr: the PUK must be exactly 8 characters long: Windows' minimum is 8 and ${PIV_REASON}`);
  t.is(daemon.cards.createRequests.length, 0, 'nothing was sent');
  for (const run of [policy, longPin, policyPin, longPuk]) t.false(`${run.stdout}${run.stderr}`.includes('Longer') || run.stderr.includes('Pin#123456'), 'no secret echoed');
});

const badInputs: Array<{ name: string; args: string[]; stdin?: string; exit: number; line: string; noSocket?: true }> = [
  { name: 'admin key with 46 hex digits', args: ['create', '/name', 'C', '/AdminKey', 'PROMPT'], stdin: `${ADMIN_KEY.slice(0, 46)}\n`, exit: EXIT.usage, line: 'tpmvscmgr: /AdminKey PROMPT needs 48 hexadecimal characters (24 bytes)' },
  { name: 'stdin ends before the PIN', args: ['create', '/name', 'C', '/AdminKey', 'PROMPT', '/PIN', 'PROMPT'], stdin: `${ADMIN_KEY}\n`, exit: EXIT.usage, line: 'tpmvscmgr: stdin ended before the PIN was read (PROMPT reads one line per secret: admin key, PIN, PUK)' },
  { name: 'PUK too short', args: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PUK', 'PROMPT'], stdin: '1234\n', exit: EXIT.rejected, line: "tpmvscmgr: the PUK must be exactly 8 characters long: Windows' minimum is 8 and PIV clients send at most 8 bytes (yubico-piv-tool refuses longer ones, OpenSC answers CKR_PIN_LEN_RANGE)" },
  { name: '/machine that ssh would read as an option', args: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/machine', '-oProxyCommand=sh'], exit: EXIT.usage, line: 'tpmvscmgr: /machine cannot start with "-" (ssh would read it as an option)' },
  { name: 'destroy /machine with a bad port', args: ['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0000', '/machine', 'ssh://server1:0'], exit: EXIT.usage, line: 'tpmvscmgr: /machine needs a port from 1 to 65535 after ":"' },
  { name: 'unknown switch', args: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/force'], exit: EXIT.usage, line: 'tpmvscmgr: unknown switch /force for create (see tpmvscmgr create /?)' },
  { name: 'missing /name', args: ['create', '/AdminKey', 'DEFAULT'], exit: EXIT.usage, line: "tpmvscmgr: create needs /name <name> (the card's friendly name)" },
  { name: '/pinpolicy without /PIN PROMPT', args: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/pinpolicy', 'minlen', '4'], exit: EXIT.usage, line: 'tpmvscmgr: /pinpolicy is only valid with /PIN PROMPT' },
  { name: 'minlen > maxlen', args: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'minlen', '8', 'maxlen', '7'], exit: EXIT.usage, line: 'tpmvscmgr: /pinpolicy minlen (8) must not exceed maxlen (7)' },
  { name: 'destroy of an unknown instance', args: ['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0005'], exit: EXIT.notFound, line: 'tpmvscmgr: No virtual smart card has that instance ID: ROOT\\SMARTCARDREADER\\0005' },
  { name: 'bad instance syntax', args: ['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\5'], exit: EXIT.usage, line: 'tpmvscmgr: /instance must be an instance ID like ROOT\\SMARTCARDREADER\\0000 (0000 to 0015), as printed by create' },
  { name: 'no command', args: [], noSocket: true, exit: EXIT.usage, line: 'tpmvscmgr: missing command: create, destroy, list, status, unblock or verify-attestation (see tpmvscmgr /?)' },
];

for (const row of badInputs) {
  test(`bad input: ${row.name} -> one line, exit ${row.exit}, nothing changed`, async (t) => {
    const daemon = await startTestDaemon();
    t.teardown(() => daemon.stop());
    const run = await runCli(row.noSocket ? row.args : [...row.args, '--socket', daemon.socketPath], row.stdin === undefined ? {} : { stdin: row.stdin });
    t.is(run.code, row.exit);
    t.is(oneErrorLine(run), row.line);
    t.is(run.stdout, '');
    t.is(daemon.cards.createRequests.length, 0);
    t.deepEqual(daemon.cards.events.filter((event) => event !== 'destroy'), []);
    assertNoSecrets(t, run);
  });
}

test('destroy removes the card; list shows what is left', async (t) => {
  const daemon = await startTestDaemon();
  t.teardown(() => daemon.stop());
  await runCli(['create', '/name', 'One', '/AdminKey', 'DEFAULT', '--socket', daemon.socketPath]);
  await runCli(['create', '/name', 'Two', '/AdminKey', 'DEFAULT', '--socket', daemon.socketPath]);
  const destroyed = await runCli(['DESTROY', '/Instance', 'root\\smartcardreader\\0000', '--socket', daemon.socketPath]);
  t.is(destroyed.code, EXIT.ok, destroyed.stderr);
  t.is(destroyed.stderr, 'TPM Smart Card destroyed.\n');
  const list = await runCli(['list', '--socket', daemon.socketPath]);
  t.is(list.code, EXIT.ok);
  const lines = list.stdout.trim().split('\n');
  t.regex(lines[0]!, /^INSTANCE\s+NAME\s+READER\s+PUK\s+CREATED$/);
  t.is(lines.length, 2);
  t.regex(lines[1]!, /^ROOT\\SMARTCARDREADER\\0001\s+Two\s+TPM Virtual Smart Card 00 01\s+no/);
});

test('daemon not running: no socket, or a stale socket nobody listens on -> exit 4 before any prompt', async (t) => {
  const daemon = await startTestDaemon();
  const dir = daemon.dir;
  await daemon.server.close();
  t.teardown(() => daemon.stop());
  const missing = await runCli(['create', '/name', 'C', '/AdminKey', 'PROMPT', '--socket', join(dir, 'nope.sock')], { stdin: `${ADMIN_KEY}\n` });
  t.is(missing.code, EXIT.daemonNotRunning);
  // Not the system daemon's socket, not npm start's: say so, and name both.
  t.regex(
    oneErrorLine(missing),
    /^tpmvscmgr: The tpmvscd daemon is not running: nothing listens on \S+nope\.sock \(named by \/socket or TPMVSC_SOCKET\): start tpmvscd --socket \S+nope\.sock, or name a running daemon's socket \(systemd: \/run\/tpmvsc\/control\.sock, npm start: \S+\/control\.sock\)$/,
  );
  t.false(missing.stderr.includes('systemctl'), 'no systemctl hint for a socket systemd does not serve');
  t.false(missing.stderr.includes('Enter'), 'no prompt was shown');

  // A socket file left behind by a dead daemon (fd closed, file not unlinked): ECONNREFUSED.
  const stale = join(dir, 'stale.sock');
  makeStaleSocket(stale);
  const refused = await runCli(['list', '--socket', stale]);
  t.is(refused.code, EXIT.daemonNotRunning, refused.stderr);
  t.regex(refused.stderr, /not running.*nothing listens on .*stale\.sock/);
  const viaEnv = await runCli(['list'], { env: { TPMVSC_SOCKET: join(dir, 'nope.sock') } });
  t.is(viaEnv.code, EXIT.daemonNotRunning);

  // npm start's socket (a stopped npm start leaves its file behind): run npm start, not systemctl.
  const startDir = join(dir, 'start');
  await mkdir(startDir);
  makeStaleSocket(join(startDir, 'control.sock'));
  const npmStart = await runCli(['status'], { env: { TPMVSC_START_DIR: startDir, TPMVSC_SOCKET: join(startDir, 'control.sock') } });
  t.is(npmStart.code, EXIT.daemonNotRunning);
  t.is(
    oneErrorLine(npmStart),
    `tpmvscmgr: The tpmvscd daemon is not running: nothing listens on ${join(startDir, 'control.sock')}, the socket of npm start's daemon: run npm start in the tpmvsc repository and leave it running`,
  );
});

test('help: /?, -h and --help print the usage doc; the overview holds the shared sections once, a command its own part', async (t) => {
  const overview = await runCli(['/?']);
  t.is(overview.code, EXIT.ok);
  t.is((await runCli(['-h'])).stdout, overview.stdout);
  t.regex(overview.stdout, /Exit codes:[\s\S]*4 {2}the tpmvscd daemon is not running[\s\S]*9 {2}a PIN, PUK or admin key was rejected/);
  for (const section of ['Exit codes:', 'Options of every command:', '/machine <machine name> (create, destroy, list, status, unblock)', 'PINs and PUKs (the one difference from Windows']) {
    t.is(overview.stdout.split(section).length, 2, `once in the overview: ${section}`);
  }
  for (const args of [['create', '/?'], ['destroy', '--help'], ['list', '/?'], ['status', '/?'], ['unblock', '/?']]) {
    const run = await runCli(args);
    t.is(run.code, EXIT.ok);
    t.false(run.stdout.includes('Exit codes:') || run.stdout.includes('Options of every command:') || run.stdout.includes('TPMVSC_SSH_CONFIG'), `${args[0]} does not repeat the shared sections`);
    t.regex(run.stdout, /\/machine, PIN and PUK rules and exit codes: tpmvscmgr \/\?\n$/, `${args[0]} points to them`);
  }
  const create = await runCli(['create', '/?']);
  for (const fact of ['010203040506070801020304050607080102030405060708', 'minlen', 'at least 4', 'from 6 to 8', '12345678', 'RANDOM']) {
    t.true(create.stdout.includes(fact), fact);
  }
  t.false(create.stdout.includes('127 printable'), 'no 127-character PINs');
});

/** Every process descended from pid (the CLI must not re-exec with secrets). */
async function descendants(pid: number): Promise<number[]> {
  const parents = new Map<number, number>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parents.set(Number(entry), ppid);
    } catch {
      // the process ended meanwhile
    }
  }
  const found = [pid];
  for (let index = 0; index < found.length; index += 1) {
    for (const [child, parent] of parents) if (parent === found[index]) found.push(child);
  }
  return found;
}

test('Ctrl-C during create closes the connection: the daemon rolls back, exit 130; no secret in any argv meanwhile', async (t) => {
  const daemon = await startTestDaemon();
  t.teardown(() => daemon.stop());
  daemon.cards.hangCreate = true;
  let cliPid = 0;
  const running = runCli(['create', '/name', 'Hang', '/AdminKey', 'PROMPT', '/PIN', 'PROMPT', '--socket', daemon.socketPath], {
    stdin: `${ADMIN_KEY}\n${PIN}\n`,
    onSpawn: (pid) => (cliPid = pid),
  });
  // Wait until the daemon is inside create.
  for (let i = 0; i < 1200 && !daemon.cards.events.includes('create-start'); i++) await new Promise((r) => setTimeout(r, 50));
  t.true(daemon.cards.events.includes('create-start'));
  const pids = await descendants(cliPid);
  for (const pid of pids) {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    const environ = await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '');
    for (const secret of SECRETS) {
      t.false(cmdline.includes(secret), `secret in argv of ${pid}`);
      t.false(environ.includes(secret), `secret in environment of ${pid}`);
    }
  }
  process.kill(cliPid, 'SIGINT');
  const run = await running;
  t.is(run.code, 130);
  t.is(run.stdout, '');
  t.regex(run.stderr, /tpmvscmgr: interrupted; nothing was created\n$/);
  for (let i = 0; i < 100 && daemon.cards.rolledBack === 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.is(daemon.cards.rolledBack, 1);
  assertNoSecrets(t, run);
});

/** Runs a shell script asynchronously (the server under test lives in this process's event loop). */
function runShell(scriptPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('sh', [scriptPath], { cwd: process.cwd(), stdio: ['ignore', 'pipe', 'inherit'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', () => {
      clearTimeout(timer);
      resolve(output);
    });
  });
}

test('secrets typed at a terminal are not echoed and are asked twice; a mismatch is refused', async (t) => {
  const daemon = await startTestDaemon();
  t.teardown(() => daemon.stop());
  // script(1) gives the CLI a pseudo-terminal; what the CLI writes to the terminal comes back on stdout.
  // Typing starts once the prompt is shown (the wait loop), as a person would.
  const typedScript = async (second: string): Promise<string> => {
    const scriptFile = join(daemon.dir, 'typed.sh');
    const transcript = join(daemon.dir, 'transcript');
    const command = `${process.execPath} --import tsx cli/main.ts create /name Tty /AdminKey DEFAULT /PIN PROMPT --socket ${daemon.socketPath}`;
    await writeFile(
      scriptFile,
      `#!/bin/sh
rm -f ${transcript}
(i=0; while ! grep -q 'Enter PIN' ${transcript} 2>/dev/null && [ $i -lt 400 ]; do sleep 0.1; i=$((i+1)); done
 sleep 0.3; printf '${PIN}\\r'; sleep 0.5; printf '${second}\\r'; sleep 4) | script -qfec "${command}" ${transcript} >/dev/null
cat ${transcript}
`,
      { mode: 0o700 },
    );
    return runShell(scriptFile);
  };
  const ok = await typedScript(PIN);
  t.regex(ok, /Enter PIN: [\s\S]*Confirm PIN: /);
  t.false(ok.includes(PIN), 'the PIN was echoed');
  t.regex(ok, /ROOT\\SMARTCARDREADER\\0000/);
  t.is(daemon.cards.createRequests[0]?.pin, PIN);

  const mismatch = await typedScript('Other#Pin42');
  t.regex(mismatch, /tpmvscmgr: the two PIN entries do not match; run the command again/);
  t.false(mismatch.includes(PIN) || mismatch.includes('Other#Pin42'), 'a PIN was echoed');
  t.is(daemon.cards.createRequests.length, 1);
});
