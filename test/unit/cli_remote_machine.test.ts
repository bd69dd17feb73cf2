/**
 * /machine without a network: destination checks, shell quoting (checked against a real
 * /bin/sh), the remote command line rebuilt from a parsed command, ssh's argv, the mapping of
 * ssh failures to exit codes, and the target-side session (marker, secret lines, abort on EOF).
 */
import test from 'ava';
import fc from 'fast-check';
import { execFileSync } from 'node:child_process';
import { PassThrough } from 'node:stream';
import { EXIT, TpmvscError } from '../../common/errors.js';
import type { CliIo } from '../../cli/cli_io.js';
import { parseArguments, type CliCommand } from '../../cli/parse_arguments.js';
import { failureWithoutSession, sshArguments, targetsMachine } from '../../cli/remote.js';
import { remoteArguments, secretLines, type MachineCommand } from '../../cli/remote_arguments.js';
import { REMOTE_SESSION_MARKER, REMOTE_SESSION_OPTION, runRemoteSession } from '../../cli/remote_session.js';
import { shellCommandLine, shellQuote } from '../../cli/shell_quote.js';
import { parseSshDestination } from '../../cli/ssh_destination.js';
import type { SecretReader } from '../../cli/prompt.js';

test('destinations ssh accepts are accepted and split', (t) => {
  t.like(parseSshDestination('db1'), { destination: 'db1', host: 'db1', user: undefined, port: undefined });
  t.like(parseSshDestination('admin@db1.example.com'), { host: 'db1.example.com', user: 'admin' });
  t.like(parseSshDestination('me@corp@db1'), { host: 'db1', user: 'me@corp' }, 'ssh splits at the last @');
  t.like(parseSshDestination('ssh://admin@10.0.0.7:2222'), { destination: 'ssh://admin@10.0.0.7:2222', host: '10.0.0.7', user: 'admin', port: 2222 });
  t.like(parseSshDestination('ssh://db1/'), { host: 'db1', user: undefined, port: undefined });
  t.like(parseSshDestination('SSH://[::1]:22'), { host: '::1', port: 22 });
  t.like(parseSshDestination('ssh://root@[fe80::1]'), { host: 'fe80::1', user: 'root', port: undefined });
});

test('destinations that could be options, words or other schemes are refused with USAGE', (t) => {
  for (const bad of [
    '',
    '-oProxyCommand=touch /tmp/x',
    '-p',
    'user@-oProxyCommand=x',
    '@host',
    'user@',
    'two words',
    'host\n',
    'tab\there',
    'hôte',
    'http://host',
    'ssh://host:0',
    'ssh://host:65536',
    'ssh://host:port',
    'ssh://@host',
    'ssh://user@',
    'ssh://host/path',
    'ssh://[::1',
    'x'.repeat(600),
  ]) {
    const error = t.throws(() => parseSshDestination(bad), { instanceOf: TpmvscError }, JSON.stringify(bad));
    t.is(error?.code, 'USAGE');
    t.true(error?.detail?.startsWith('/machine '));
  }
});

/** What /bin/sh makes of a command line: its words, as printf sees them. */
function wordsThroughShell(line: string): string[] {
  const output = execFileSync('/bin/sh', ['-c', `printf '%s\\0' ${line}`], { encoding: 'utf8' });
  return output.split('\0').slice(0, -1);
}

test('shell quoting survives the remote shell for any printable or control text', (t) => {
  t.deepEqual(wordsThroughShell(shellCommandLine(["it's", '$HOME', '`id`', 'a b', '', 'ROOT\\SMARTCARDREADER\\0000', '"q"', ';rm -rf /', '*'])), [
    "it's", '$HOME', '`id`', 'a b', '', 'ROOT\\SMARTCARDREADER\\0000', '"q"', ';rm -rf /', '*',
  ]);
  t.is(shellQuote('plain-word_1.2:3@x'), 'plain-word_1.2:3@x', 'plain words stay readable');
  fc.assert(
    fc.property(fc.array(fc.string({ unit: 'binary-ascii', maxLength: 20 }).map((s) => s.replace(/\0/g, '')), { minLength: 1, maxLength: 5 }), (words) => {
      t.deepEqual(wordsThroughShell(shellCommandLine(words)), words);
    }),
    { numRuns: 150 },
  );
});

function parsed(argv: string[]): MachineCommand {
  const command = parseArguments(argv);
  if (command.command === 'help') throw new Error('help');
  return command;
}

function withoutMachine(command: CliCommand): CliCommand {
  return { ...command, machine: null } as CliCommand;
}

test('the remote command is the same command without /machine, secrets left as PROMPT', (t) => {
  for (const argv of [
    ['create', '/name', "Bob's card", '/AdminKey', 'PROMPT', '/PIN', 'PROMPT', '/PUK', 'DEFAULT', '/generate', '/pinpolicy', 'minlen', '6', 'digits', 'REQUIRED', '/machine', 'db1', '/quiet', '/json'],
    ['create', '/name', 'R', '/AdminKey', 'RANDOM', '/machine', 'ssh://a@b:2', '/attestation', 'AIK_ONLY'],
    ['create', '/name', 'L', '/AdminKey', 'RANDOM', '/pinlifetime', '45', 'ONCE', '/machine', 'db1'],
    ['create', '/name', 'U', '/AdminKey', 'RANDOM', '/pinlifetime', 'unlimited', '/machine', 'db1'],
    ['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0003', '/machine', 'db1', '/socket', '/run/other.sock'],
    ['list', '/json', '/machine', 'db1'],
    ['status', '/instance', 'root\\smartcardreader\\0001', '/machine', 'db1'],
    ['status', '/machine', 'db1'],
    ['unblock', '/instance', 'ROOT\\SMARTCARDREADER\\0000', '/AdminKey', 'PROMPT', '/PIN', 'PROMPT', '/machine', 'db1'],
  ]) {
    const command = parsed(argv);
    t.true(targetsMachine(command), argv.join(' '));
    const remote = remoteArguments(command);
    t.false(remote.some((word) => word.toLowerCase() === '/machine'), 'no /machine on the target');
    t.deepEqual(parseArguments(remote), withoutMachine(command), argv.join(' '));
  }
  t.false(targetsMachine(parsed(['list'])));
});

test('ssh gets no pty, no forwarding, -- before the destination, and one quoted remote command', (t) => {
  const args = sshArguments(parseSshDestination('admin@db1'), ['create', '/name', 'A B'], { TPMVSC_SSH_CONFIG: '/etc/fleet/ssh_config' });
  const dashDash = args.indexOf('--');
  t.true(dashDash > 0);
  t.deepEqual(args.slice(dashDash + 1), ['admin@db1', `tpmvscmgr ${REMOTE_SESSION_OPTION} create /name 'A B'`]);
  for (const option of ['-T', '-x', '-a']) t.true(args.slice(0, dashDash).includes(option), option);
  t.deepEqual(args.slice(args.indexOf('-F'), args.indexOf('-F') + 2), ['-F', '/etc/fleet/ssh_config']);
  t.false(sshArguments(parseSshDestination('db1'), ['list'], {}).includes('-F'));
});

test('secrets are asked in the order admin key, PIN, PUK and checked before anything is sent', async (t) => {
  const answers: Record<string, string> = {
    'admin key (48 hexadecimal characters)': '01 02 03 04 05 06 07 08 01 02 03 04 05 06 07 08 01 02 03 04 05 06 07 aa',
    PIN: 'Abcd1234',
    PUK: 'Unl#Pk77',
    'new PIN': '87654321',
  };
  const asked: string[] = [];
  const reader = (): SecretReader => ({
    read: async (label) => {
      asked.push(label);
      return answers[label]!;
    },
    close: () => undefined,
  });
  const create = parsed(['create', '/name', 'A', '/AdminKey', 'PROMPT', '/PIN', 'PROMPT', '/PUK', 'PROMPT', '/machine', 'db1']);
  t.deepEqual(await secretLines(create, reader), ['0102030405060708010203040506070801020304050607AA', 'Abcd1234', 'Unl#Pk77']);
  t.deepEqual(asked, ['admin key (48 hexadecimal characters)', 'PIN', 'PUK']);
  t.deepEqual(await secretLines(parsed(['unblock', '/instance', 'ROOT\\SMARTCARDREADER\\0000', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/machine', 'db1']), reader), ['87654321']);
  t.deepEqual(await secretLines(parsed(['create', '/name', 'A', '/AdminKey', 'DEFAULT', '/machine', 'db1']), reader), []);
  answers.PIN = 'short';
  const refused = await t.throwsAsync(secretLines(create, reader), { instanceOf: TpmvscError });
  t.is(refused?.code, 'PIN_POLICY');
  t.false(refused?.message.includes('short'));
});

test('ssh failures map to one line with REMOTE_UNREACHABLE (10) or REMOTE_NOT_INSTALLED (11)', (t) => {
  const unreachable = failureWithoutSession('db1', 255, null, ['ssh: Could not resolve hostname db1: Name or service not known']);
  t.is(unreachable.code, 'REMOTE_UNREACHABLE');
  t.is(unreachable.exitCode, EXIT.remoteUnreachable);
  t.is(unreachable.detail, 'db1: Could not resolve hostname db1: Name or service not known');
  t.is(failureWithoutSession('db1', 255, null, ['Warning: x', 'Permission denied (publickey).', '']).detail, 'db1: Permission denied (publickey).');
  t.is(failureWithoutSession('db1', null, 'SIGTERM', []).detail, 'db1: ssh was ended by SIGTERM');
  const missing = failureWithoutSession('db1', 127, null, ['bash: line 1: tpmvscmgr: command not found\x1b[0m']);
  t.is(missing.code, 'REMOTE_NOT_INSTALLED');
  t.is(missing.exitCode, EXIT.remoteNotInstalled);
  t.is(missing.detail, 'db1: tpmvscmgr did not start (bash: line 1: tpmvscmgr: command not found?[0m)');
  t.is(failureWithoutSession('db1', 126, null, []).detail, 'db1: tpmvscmgr did not start (exit 126)');
});

function sessionIo(stdin: PassThrough): { io: CliIo; stderr: () => string } {
  let stderr = '';
  const err = new PassThrough();
  err.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  return { io: { stdin, stdout: new PassThrough(), stderr: err, env: {}, signal: new AbortController().signal }, stderr: () => stderr };
}

test('the target session announces itself, passes secret lines on, and aborts when its stdin ends', async (t) => {
  const stdin = new PassThrough();
  const { io, stderr } = sessionIo(stdin);
  let lineRead = '';
  const done = runRemoteSession(['create'], io, async (argv, inner) => {
    t.deepEqual(argv, ['create']);
    t.not(inner.stdin, stdin, 'the command reads a copy');
    for await (const chunk of inner.stdin) {
      lineRead += String(chunk);
      if (lineRead.includes('\n')) break;
    }
    t.false(inner.signal.aborted);
    await new Promise((resolve) => inner.signal.addEventListener('abort', resolve, { once: true }));
    return 130;
  });
  stdin.write('secret-line\n');
  await new Promise((resolve) => setTimeout(resolve, 20));
  stdin.end();
  t.is(await done, 130);
  t.is(lineRead, 'secret-line\n');
  t.is(stderr(), `${REMOTE_SESSION_MARKER}\n`);
  t.true(stdin.destroyed, 'stdin is released so the process can exit');
});

test('the target session returns the command\'s exit code and releases stdin when the command ends first', async (t) => {
  const stdin = new PassThrough();
  const { io } = sessionIo(stdin);
  t.is(await runRemoteSession(['list'], io, async (_argv, inner) => (inner.signal.aborted ? 1 : 0)), 0);
  t.true(stdin.destroyed);
});
