/**
 * create warns about well-known secrets: the real tpmvscmgr against a real ControlServer (card
 * logic: cli_test_daemon.ts's recording double). One stderr line per DEFAULT, none for
 * RANDOM/PROMPT; --json carries the same lines in "warnings"; /quiet silences stderr only.
 */
import test from 'ava';
import { EXIT } from '../../common/errors.js';
import { runCli, startTestDaemon, type TestDaemon } from './cli_test_daemon.js';

const ADMIN_KEY = 'A1B2C3D4E5F60718293A4B5C6D7E8F90112233445566778F';
const PIN = 'Pin#1234';
const PUK = 'Puk#5678';

/** The warning lines of a run, each as the kind of secret it names. */
function warningKinds(stderr: string): string[] {
  return stderr
    .split('\n')
    .filter((line) => line.startsWith('warning: /'))
    .map((line) => /^warning: \/(AdminKey|PIN|PUK) DEFAULT /.exec(line)?.[1] ?? `unexpected: ${line}`);
}

// A daemon per test: the recording double has a reader pool like the real one.
let daemon: TestDaemon;
test.beforeEach(async () => {
  daemon = await startTestDaemon();
});
test.afterEach.always(async () => {
  await daemon?.stop();
});

const rows: Array<{ name: string; args: string[]; stdin?: string; want: string[] }> = [
  { name: 'admin key and PIN DEFAULT, no PUK', args: ['/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT'], want: ['AdminKey', 'PIN'] },
  { name: 'PIN omitted is DEFAULT too', args: ['/AdminKey', 'DEFAULT'], want: ['AdminKey', 'PIN'] },
  { name: 'all three DEFAULT', args: ['/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/PUK', 'DEFAULT'], want: ['AdminKey', 'PIN', 'PUK'] },
  { name: 'RANDOM admin key, PIN and PUK PROMPT', args: ['/AdminKey', 'RANDOM', '/PIN', 'PROMPT', '/PUK', 'PROMPT'], stdin: `${PIN}\n${PUK}\n`, want: [] },
  { name: 'PROMPT admin key and PIN, no PUK', args: ['/AdminKey', 'PROMPT', '/PIN', 'PROMPT'], stdin: `${ADMIN_KEY}\n${PIN}\n`, want: [] },
  { name: 'PROMPT admin key, PUK DEFAULT', args: ['/AdminKey', 'PROMPT', '/PIN', 'PROMPT', '/PUK', 'DEFAULT'], stdin: `${ADMIN_KEY}\n${PIN}\n`, want: ['PUK'] },
];

for (const row of rows) {
  test.serial(`warnings: ${row.name}`, async (t) => {
    const run = await runCli(['create', '/name', 'W', ...row.args, '--socket', daemon.socketPath], row.stdin === undefined ? {} : { stdin: row.stdin });
    t.is(run.code, EXIT.ok, run.stderr);
    t.deepEqual(warningKinds(run.stderr), row.want);
    for (const line of run.stderr.split('\n').filter((l) => l.startsWith('warning: /'))) {
      t.regex(line, /every local account/, 'says who can use the card');
      t.regex(line, /use \/(AdminKey RANDOM or PROMPT|PIN PROMPT|PUK PROMPT)/, 'names the fix');
    }
    t.false(run.stderr.includes(ADMIN_KEY) || run.stderr.includes(PIN) || run.stderr.includes(PUK), 'no typed secret in a warning');
  });
}

test.serial('the admin-key warning says what the key does on the card: PIN reset without a PUK, key replacement with one', async (t) => {
  const withoutPuk = await runCli(['create', '/name', 'A', '/AdminKey', 'DEFAULT', '--socket', daemon.socketPath]);
  t.regex(withoutPuk.stderr, /^warning: \/AdminKey DEFAULT .*reset its PIN with that key and then use the owner's keys; use \/AdminKey RANDOM or PROMPT$/m);
  const withPuk = await runCli(['create', '/name', 'B', '/AdminKey', 'DEFAULT', '/PUK', 'DEFAULT', '--socket', daemon.socketPath]);
  t.regex(withPuk.stderr, /^warning: \/AdminKey DEFAULT .*replace or delete its keys and certificates with that key; use \/AdminKey RANDOM or PROMPT$/m);
});

test.serial('--json: the warnings are in "warnings" and on stderr; /quiet silences stderr, not the JSON', async (t) => {
  const json = await runCli(['create', '/name', 'J', '/AdminKey', 'DEFAULT', '/PUK', 'DEFAULT', '/json', '--socket', daemon.socketPath]);
  t.is(json.code, EXIT.ok, json.stderr);
  const output = JSON.parse(json.stdout) as { instance: string; warnings: string[] };
  t.regex(output.instance, /^ROOT\\SMARTCARDREADER\\\d{4}$/);
  t.deepEqual(warningKinds(output.warnings.join('\n')), ['AdminKey', 'PIN', 'PUK']);
  t.deepEqual(
    json.stderr.split('\n').filter((line) => line.startsWith('warning: ')),
    output.warnings,
  );
  const quiet = await runCli(['create', '/quiet', '/name', 'Q', '/AdminKey', 'DEFAULT', '/json', '--socket', daemon.socketPath]);
  t.is(quiet.stderr, '');
  t.deepEqual(warningKinds((JSON.parse(quiet.stdout) as { warnings: string[] }).warnings.join('\n')), ['AdminKey', 'PIN']);
  const none = await runCli(['create', '/name', 'N', '/AdminKey', 'RANDOM', '/PIN', 'PROMPT', '/json', '--socket', daemon.socketPath], { stdin: `${PIN}\n` });
  t.deepEqual((JSON.parse(none.stdout) as { warnings: string[] }).warnings, []);
});
