/**
 * PIN-protected data objects sealed at rest, with the real ykman: `ykman piv access
 * change-management-key --protect` keeps a random management key in object 5FC109, readable
 * only after VERIFY. Afterwards no file under the daemon's state directory and no line of the
 * APDU trace holds that key (hex, raw bytes, base64), uid nobody cannot read it through the
 * real pcscd, and ykman keeps using it across daemon restarts and a PIN change. A card file
 * written before sealing existed (the object in clear) is sealed when the daemon loads it.
 * Real swtpm, pcscd + vpcd, tpmvscd, ykman 4.0.9, opensc-tool.
 */
import test from 'ava';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startStack, type Stack } from '../helpers/stack.js';
import { CREATE_WITH_PUK, DEFAULT_MANAGEMENT_KEY, DEFAULT_PIN, readerName, tempDir, ykmanPiv } from '../helpers/piv_tools.js';
import { runAsNobody } from '../helpers/other_user.js';
import { openWinscardApp, type WinscardApp } from '../helpers/winscard.js';
import { connectPivCard, readBerTlv } from '../helpers/piv_card.js';

const READER = readerName(0);
const PRINTED_INFORMATION = 0x5fc109;

let stack: Stack;
let app: WinscardApp;
let work: { path: string; cleanup: () => Promise<void> };
let traceFile: string;

test.before(async () => {
  work = await tempDir();
  traceFile = join(work.path, 'apdu-trace.jsonl');
  // The daemon inherits this process's environment: trace every APDU of the run.
  process.env['TPMVSC_APDU_TRACE'] = traceFile;
  stack = await startStack({ readers: 2 });
  const created = await stack.cli(CREATE_WITH_PUK);
  if (created.code !== 0) throw new Error(`create failed: ${created.stderr}`);
  stack.pcscd.useInThisProcess();
  app = await openWinscardApp();
});

test.after.always(async () => {
  delete process.env['TPMVSC_APDU_TRACE'];
  await app?.close();
  await stack?.stop();
  await work?.cleanup();
});

/** 5FC109 as the card answers it after VERIFY with `pin`, or the status word. */
async function printedInformation(pin: string): Promise<Buffer | string> {
  const { card, connection } = await connectPivCard(app, READER);
  try {
    const verified = await card.verifyPin(pin);
    if (verified !== '9000') return `VERIFY ${verified}`;
    return (await card.getData(PRINTED_INFORMATION)) ?? 'absent';
  } finally {
    await connection.disconnect('reset');
  }
}

/** The management key inside ykman's object: 88 { 89 <key> }. */
function protectedKey(object: Buffer): Buffer {
  const outer = readBerTlv(object);
  if (outer.tag !== 0x88) throw new Error(`not ykman's protected-key object: ${object.toString('hex')}`);
  const inner = readBerTlv(outer.value);
  if (inner.tag !== 0x89) throw new Error(`no key in ykman's object: ${object.toString('hex')}`);
  return inner.value;
}

/**
 * Every form a file could hold the key in: hex (both cases), raw bytes, and base64 / base64url
 * at each of the three alignments it can have inside a longer value (only the characters that
 * depend on the key's bytes alone).
 */
function keyForms(key: Buffer): string[] {
  const forms = [key.toString('hex'), key.toString('hex').toUpperCase(), key.toString('latin1')];
  for (const offset of [0, 1, 2]) {
    for (const encoding of ['base64', 'base64url'] as const) {
      forms.push(Buffer.concat([Buffer.alloc(offset), key]).toString(encoding).slice(offset === 0 ? 0 : 4, -4));
    }
  }
  return forms;
}

/** Every file under the state directory plus the trace, each as UTF-8 and as raw bytes (latin1). */
async function filesText(): Promise<Array<{ file: string; text: string }>> {
  const entries = await readdir(stack.stateDir, { recursive: true, withFileTypes: true });
  const files = [...entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)), traceFile];
  const texts: Array<{ file: string; text: string }> = [];
  for (const file of files) {
    texts.push({ file, text: await readFile(file, 'utf8') }, { file, text: await readFile(file, 'latin1') });
  }
  return texts;
}

async function assertKeyNowhere(t: import('ava').ExecutionContext, key: Buffer, when: string): Promise<void> {
  for (const { file, text } of await filesText()) {
    for (const form of keyForms(key)) t.false(text.includes(form), `${when}: ${file} holds the key`);
  }
}

let key: Buffer;

test.serial('ykman --protect stores a random management key that no state file and no trace line holds, and nobody reads', async (t) => {
  const changed = await ykmanPiv(stack, READER, ['access', 'change-management-key', '--protect', '-a', 'AES256', '-m', DEFAULT_MANAGEMENT_KEY, '-P', DEFAULT_PIN, '-f']);
  t.is(changed.code, 0, changed.stderr);
  const object = await printedInformation(DEFAULT_PIN);
  if (typeof object === 'string') return t.fail(object);
  key = protectedKey(object);
  t.is(key.length, 32, 'an AES-256 key');
  await assertKeyNowhere(t, key, 'after --protect');
  const trace = await readFile(traceFile, 'utf8');
  t.regex(trace, /"command":"00db3fff0000[0-9a-f]{2}5c035fc109(xx)+"/, 'the trace shows the PUT DATA of 5FC109, masked');
  t.regex(trace, /"command":"00cb3fff[0-9a-f]*5c035fc109[0-9a-f]*","response":"53(xx)+9000"/, 'and its GET DATA answer, masked');

  const attacker = await runAsNobody(stack, 'opensc-tool', ['-r', '0', '-s', '00A4040005A000000308', '-s', '00CB3FFF055C035FC10900']);
  t.regex(attacker.stdout, /Received \(SW1=0x69, SW2=0x82\)/, 'uid nobody gets 6982 without the PIN');
  t.false(attacker.stdout.replace(/\s/g, '').toLowerCase().includes(key.toString('hex')));
});

test.serial('ykman uses the protected key after a daemon restart and after a PIN change', async (t) => {
  t.truthy(key, 'the previous test found the key');
  const generate = (slot: string, pin: string) =>
    ykmanPiv(stack, READER, ['keys', 'generate', '-P', pin, '-a', 'ECCP256', slot, join(work.path, `${slot}.pem`)]);
  const first = await generate('9a', DEFAULT_PIN);
  t.is(first.code, 0, `ykman finds the key behind the PIN: ${first.stderr}`);

  await stack.stopDaemon();
  await stack.startDaemon();
  const afterRestart = await generate('9c', DEFAULT_PIN);
  t.is(afterRestart.code, 0, `after a restart: ${afterRestart.stderr}`);

  const newPin = '87654321';
  const changed = await ykmanPiv(stack, READER, ['access', 'change-pin', '-P', DEFAULT_PIN, '-n', newPin]);
  t.is(changed.code, 0, changed.stderr);
  const afterChange = await generate('9d', newPin);
  t.is(afterChange.code, 0, `after a PIN change: ${afterChange.stderr}`);
  t.not((await generate('9e', DEFAULT_PIN)).code, 0, 'the old PIN opens nothing');
  const object = await printedInformation(newPin);
  t.deepEqual(typeof object === 'string' ? object : protectedKey(object), key);
  await assertKeyNowhere(t, key, 'after restart and PIN change');
});

test.serial('a card file from before sealing (5FC109 in clear) is sealed when the daemon loads it, and says so', async (t) => {
  t.truthy(key);
  await stack.stopDaemon();
  const file = join(stack.stateDir, 'cards', '0000', 'card.json');
  const card = JSON.parse(await readFile(file, 'utf8')) as { applet: { objects: Record<string, string>; sealedObjects?: Record<string, string> } };
  // What an older daemon wrote: the object in clear among the others, no sealedObjects field.
  const clear = Buffer.concat([Buffer.from([0x88, key.length + 2, 0x89, key.length]), key]);
  card.applet.objects['5fc109'] = clear.toString('base64');
  delete card.applet.sealedObjects;
  await writeFile(file, JSON.stringify(card), { mode: 0o600 });
  const oldFile = await readFile(file, 'utf8');
  t.true(keyForms(key).some((form) => oldFile.includes(form)), 'the old file holds it in clear (and the search finds it)');

  await stack.startDaemon();
  t.regex(stack.daemonLog(), /"event":"objects_sealed","slot":0,"count":1/);
  await assertKeyNowhere(t, key, 'after the daemon sealed the old file');
  const used = await ykmanPiv(stack, READER, ['keys', 'generate', '-P', '87654321', '-a', 'ECCP256', '9e', join(work.path, '9e.pem')]);
  t.is(used.code, 0, `ykman still finds its key: ${used.stderr}`);
});
