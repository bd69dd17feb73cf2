/**
 * tpmvscmgr's help agrees with its parser: a switch the parser requires is shown without
 * brackets in the overview and in the command's own help, an optional one in brackets
 * (destroy's /instance once showed as optional). And exit code 4's message for the system
 * daemon's socket names systemctl, and npm start's socket when that daemon has one.
 */
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { helpText } from '../../cli/help.js';
import { parseArguments, type CommandName } from '../../cli/parse_arguments.js';
import { daemonNotRunning } from '../../cli/daemon_not_running.js';
import { DEFAULT_CONTROL_SOCKET } from '../../common/control_protocol.js';
import { TpmvscError } from '../../common/errors.js';

/** The shortest command line each command accepts, and the switch each value belongs to. */
const MINIMAL: Record<CommandName, string[]> = {
  create: ['/name', 'C', '/AdminKey', 'DEFAULT'],
  destroy: ['/instance', 'ROOT\\SMARTCARDREADER\\0000'],
  list: [],
  status: [],
  unblock: ['/instance', 'ROOT\\SMARTCARDREADER\\0000', '/AdminKey', 'DEFAULT'],
};

/** The usage lines of `command` in a help text ("tpmvscmgr destroy ..." plus continuation lines). */
function usage(text: string, command: CommandName): string {
  const lines = text.split('\n');
  const first = lines.findIndex((line) => line.trimStart().startsWith(`tpmvscmgr ${command} `));
  if (first < 0) throw new Error(`no usage line for ${command}`);
  let end = first + 1;
  while (end < lines.length && /^ {4,}\[/.test(lines[end]!)) end++;
  return lines.slice(first, end).join(' ');
}

/** Switches of a usage line, each marked optional when it sits inside [...] at depth 1. */
function switches(line: string): Map<string, boolean> {
  const found = new Map<string, boolean>();
  let depth = 0;
  for (const match of line.matchAll(/\[|\]|\/[A-Za-z]+/g)) {
    if (match[0] === '[') depth++;
    else if (match[0] === ']') depth--;
    else if (!found.has(match[0].toLowerCase())) found.set(match[0].toLowerCase(), depth > 0);
  }
  return found;
}

function requiredByParser(command: CommandName, name: string): boolean {
  const argv = [...MINIMAL[command]];
  const at = argv.findIndex((token) => token.toLowerCase() === name);
  if (at < 0) return false;
  argv.splice(at, 2);
  try {
    parseArguments([command, ...argv]);
    return false;
  } catch (error) {
    if (error instanceof TpmvscError && error.code === 'USAGE') return true;
    throw error;
  }
}

for (const command of Object.keys(MINIMAL) as CommandName[]) {
  test(`help of ${command}: required switches unbracketed, optional ones bracketed, in the overview and its own help`, (t) => {
    t.notThrows(() => parseArguments([command, ...MINIMAL[command]]), 'the minimal command line parses');
    for (const [where, text] of [['overview', helpText(undefined)], [`${command} /?`, helpText(command)]] as const) {
      for (const [name, optional] of switches(usage(text, command))) {
        if (name === '/pinpolicy' || name === '/json' || name === '/quiet' || name === '/machine' || name === '/generate') {
          t.true(optional, `${where}: ${name} is optional`);
          continue;
        }
        t.is(optional, !requiredByParser(command, name), `${where}: ${command} ${name}`);
      }
    }
  });
}

test('the overview and each command show the same usage', (t) => {
  for (const command of Object.keys(MINIMAL) as CommandName[]) {
    const words = (line: string): string => line.replace(/\s+/g, ' ').replace(' [/?]', '').trim();
    t.is(words(usage(helpText(undefined), command)), words(usage(helpText(command), command)), command);
  }
});

test('exit code 4 for the system socket names systemctl, and npm start\'s socket when one exists', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-help-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const env = { TPMVSC_START_DIR: dir };
  const alone = daemonNotRunning(DEFAULT_CONTROL_SOCKET, { env });
  t.is(alone.exitCode, 4);
  t.is(alone.detail, 'nothing listens on /run/tpmvsc/control.sock, the system daemon\'s socket: start it with systemctl start tpmvscd (installed by scripts/install.sh)');
  await writeFile(join(dir, 'control.sock'), '');
  const withDemo = daemonNotRunning(DEFAULT_CONTROL_SOCKET, { env });
  t.regex(withDemo.detail ?? '', new RegExp(`; npm start's daemon listens on ${join(dir, 'control.sock')}: TPMVSC_SOCKET=${join(dir, 'control.sock')} tpmvscmgr \\.\\.\\.$`));
});
