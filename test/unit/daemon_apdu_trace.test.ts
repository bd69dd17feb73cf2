/**
 * The opt-in APDU trace (daemon/apdu_trace.ts): secrets never reach the file, and every
 * line carries when the command arrived and how long the card took.
 */
import test, { type ExecutionContext } from 'ava';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { APDU_TRACE_VARIABLE, apduTraceFromEnvironment, redactCommand, type ApduTrace } from '../../daemon/apdu_trace.js';

/** A trace writing to a fresh temp file, removed after the test. */
async function traceInTempDir(t: ExecutionContext): Promise<{ trace: ApduTrace; file: string }> {
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-trace-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'trace.jsonl');
  const trace = apduTraceFromEnvironment({ [APDU_TRACE_VARIABLE]: file });
  if (!trace) throw new Error('tracing should be on');
  return { trace, file };
}

const bytes = (hex: string): Uint8Array => new Uint8Array(Buffer.from(hex.replace(/\s+/g, ''), 'hex'));

test('VERIFY, CHANGE REFERENCE DATA, RESET RETRY COUNTER, SET MANAGEMENT KEY and IMPORT KEY lose their data field', (t) => {
  t.is(redactCommand(bytes('00 20 00 80 08 3132333435363738')), '0020008008' + 'xx'.repeat(8));
  t.is(redactCommand(bytes('00 24 00 80 10 31323334353637383837363534333231')), '0024008010' + 'xx'.repeat(16));
  t.is(redactCommand(bytes('00 2c 00 80 10 31323334353637383837363534333231')), '002c008010' + 'xx'.repeat(16));
  t.is(redactCommand(bytes('00 ff ff ff 1b 039b18 010203040506070801020304050607080102030405060708')), '00ffffff1b' + 'xx'.repeat(27));
  // extended IMPORT KEY: 00 Lc1 Lc2 data Le1 Le2
  t.is(redactCommand(bytes('00 fe 11 9a 00 0003 aabbcc 0000')), '00fe119a000003' + 'xx'.repeat(3) + '0000');
});

test('GENERAL AUTHENTICATE with the management key (P2 9B) is redacted; a signature request is not', (t) => {
  t.is(redactCommand(bytes('00 87 03 9b 04 7c028000')), '0087039b04' + 'xx'.repeat(4));
  const sign = '0087119e267c24820081 20' + '5a'.repeat(32) + '00';
  t.is(redactCommand(bytes(sign)), sign.replace(/\s+/g, ''));
});

test('a command whose lengths do not add up is redacted after its header', (t) => {
  t.is(redactCommand(bytes('00 20 00 80 08 313233')), '00200080' + 'xx'.repeat(4));
});

test('the trace file gets one JSON line per exchange and event, with times, mode 0600, no secret', async (t) => {
  const { trace, file } = await traceInTempDir(t);
  const before = Date.now();
  trace.event('Reader 0', 'power-on');
  await trace.record('Reader 0', bytes('00 20 00 80 08 3132333435363738'), bytes('9000'), { at: performance.now(), took: 0.25 });
  const after = Date.now();
  const lines = (await readFile(file, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
  t.is(lines.length, 2);
  t.like(lines[0], { reader: 'Reader 0', event: 'power-on' });
  t.like(lines[1], { reader: 'Reader 0', command: '0020008008' + 'xx'.repeat(8), response: '9000', took: 0.25 });
  for (const line of lines) {
    const at = line.at as number;
    t.true(at >= before - 1 && at <= after + 1, `at ${at} is Unix time in ms`);
  }
  t.false((await readFile(file, 'utf8')).includes('3132333435363738'));
  t.is((await stat(file)).mode & 0o777, 0o600);
});

test('without the variable there is no trace', (t) => {
  t.is(apduTraceFromEnvironment({}), undefined);
});

test('answers of GENERAL AUTHENTICATE (and the GET RESPONSE parts that continue them) keep only the tag and status word', async (t) => {
  const { trace, file } = await traceInTempDir(t);
  const timing = { at: performance.now(), took: 0 };
  const shared = 'c0ffee'.repeat(10);
  // ECDH on 9D answered in two parts, then an ordinary GET DATA with its own 61xx chain.
  await trace.record('R', bytes('00 87 11 9d 47 7c458200854104' + '11'.repeat(64)), bytes(`7c22 8220 ${shared.slice(0, 20)} 6112`), timing);
  await trace.record('R', bytes('00 c0 00 00 12'), bytes(`${shared.slice(20, 56)} 9000`), timing);
  await trace.record('R', bytes('00 cb 3f ff 05 5c035fc102 00'), bytes('53 3b 3019 6135'), timing);
  await trace.record('R', bytes('00 c0 00 00 35'), bytes('d4e739da 9000'), timing);
  // A different reader's GET RESPONSE is not part of this card's chain.
  await trace.record('R', bytes('00 87 11 9d 47 7c458200854104' + '11'.repeat(64)), bytes('7c22 6120'), timing);
  await trace.record('S', bytes('00 c0 00 00 20'), bytes('0102 9000'), timing);
  const lines = (await readFile(file, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { response: string });
  t.is(lines[0]!.response, '7c' + 'xx'.repeat(13) + '6112');
  t.is(lines[1]!.response, 'xx'.repeat(18) + '9000');
  t.is(lines[2]!.response, '533b30196135');
  t.is(lines[3]!.response, 'd4e739da9000');
  t.is(lines[4]!.response, '7c' + 'xx'.repeat(1) + '6120');
  t.is(lines[5]!.response, '01029000');
  t.false((await readFile(file, 'utf8')).includes('c0ffee'));
});

test('PUT DATA of a PIN-protected object keeps only its tag list; other objects stay readable', (t) => {
  const key = '0102030405060708'.repeat(3);
  // ykman's PIN-protected management key: 5FC109 = 88 1A 89 18 <key>
  t.is(redactCommand(bytes(`00 db 3f ff 23 5c035fc109 531c 881a8918 ${key}`)), '00db3fff235c035fc109' + 'xx'.repeat(30));
  t.is(redactCommand(bytes(`00 db 3f ff 00 0023 5c035fc109 531c 881a8918 ${key}`)), '00db3fff0000235c035fc109' + 'xx'.repeat(30));
  for (const tag of ['5fc103', '5fc108', '5fc121', '5fc123']) {
    t.is(redactCommand(bytes(`00 db 3f ff 0a 5c03${tag} 5303 aabbcc`)), `00db3fff0a5c03${tag}` + 'xx'.repeat(5));
  }
  const certificate = '00db3fff0a5c035fc10553037001aa';
  t.is(redactCommand(bytes(certificate)), certificate);
  t.is(redactCommand(bytes('00 db 3f ff 05 53030102ff')), '00db3fff05' + 'xx'.repeat(5), 'no tag list: all masked');
});

test('a chained PUT DATA of a PIN-protected object is masked in every part; a certificate chain is not; a power event ends a chain', async (t) => {
  const { trace, file } = await traceInTempDir(t);
  const timing = { at: performance.now(), took: 0 };
  const secretPart = 'c0ffee'.repeat(100);
  await trace.record('R', bytes(`10 db 3f ff f5 5c035fc108 5382 0200 ${secretPart.slice(0, 236 * 2)}`), bytes('9000'), timing);
  await trace.record('R', bytes(`10 db 3f ff 02 ${secretPart.slice(0, 4)}`), bytes('9000'), timing);
  await trace.record('R', bytes(`00 db 3f ff 02 ${secretPart.slice(0, 4)}`), bytes('9000'), timing);
  await trace.record('R', bytes('10 db 3f ff 08 5c035fc105 5382 01'), bytes('9000'), timing);
  await trace.record('R', bytes('00 db 3f ff 02 7001'), bytes('9000'), timing);
  await trace.record('R', bytes('10 db 3f ff 08 5c035fc105 5382 01'), bytes('9000'), timing);
  trace.event('R', 'reset');
  await trace.record('R', bytes(`10 db 3f ff 0a 5c035fc109 5382 0100 ${secretPart.slice(0, 2)}`), bytes('9000'), timing);
  await trace.record('R', bytes(`00 db 3f ff 02 ${secretPart.slice(0, 4)}`), bytes('9000'), timing);
  const lines = (await readFile(file, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { command?: string });
  const commands = lines.map((line) => line.command).filter((command) => command !== undefined);
  t.is(commands[0], '10db3ffff55c035fc108' + 'xx'.repeat(240));
  t.is(commands[1], '10db3fff02xxxx');
  t.is(commands[2], '00db3fff02xxxx');
  t.is(commands[3], '10db3fff085c035fc105538201');
  t.is(commands[4], '00db3fff027001');
  t.is(commands[6], '10db3fff0a5c035fc109' + 'xx'.repeat(5), 'after a reset the new chain is judged by its own tag');
  t.is(commands[7], '00db3fff02xxxx');
  t.false((await readFile(file, 'utf8')).includes('c0ffee'));
});

test('a chained PUT DATA whose first part holds the tag list of a PIN-protected object alone masks the parts after it', async (t) => {
  const { trace, file } = await traceInTempDir(t);
  const timing = { at: performance.now(), took: 0 };
  await trace.record('R', bytes('10 db 3f ff 05 5c035fc109'), bytes('9000'), timing);
  await trace.record('R', bytes('00 db 3f ff 06 5304c0ffee01'), bytes('9000'), timing);
  const commands = (await readFile(file, 'utf8')).trim().split('\n').map((line) => (JSON.parse(line) as { command: string }).command);
  t.deepEqual(commands, ['10db3fff055c035fc109', '00db3fff06' + 'xx'.repeat(6)]);
});

test('GET DATA answers of PIN-protected objects (and their GET RESPONSE parts) keep only 53 and the status word', async (t) => {
  const { trace, file } = await traceInTempDir(t);
  const timing = { at: performance.now(), took: 0 };
  await trace.record('R', bytes('00 cb 3f ff 05 5c035fc109 00'), bytes('53 1c 881a8918 c0ffee 6115'), timing);
  await trace.record('R', bytes('00 c0 00 00 15'), bytes('c0ffee c0ffee 9000'), timing);
  await trace.record('R', bytes('00 cb 3f ff 00 0005 5c035fc103 0000'), bytes('53 02 c0ff 9000'), timing);
  await trace.record('R', bytes('00 cb 3f ff 05 5c035fc102 00'), bytes('53 02 abcd 9000'), timing);
  await trace.record('R', bytes('00 cb 3f ff 05 5c035fc109 00'), bytes('6982'), timing);
  const lines = (await readFile(file, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as { response: string; command: string });
  t.is(lines[0]!.response, '53' + 'xx'.repeat(8) + '6115');
  t.is(lines[1]!.response, 'xx'.repeat(6) + '9000');
  t.is(lines[2]!.response, '53xxxxxx9000', 'extended GET DATA too');
  t.is(lines[3]!.response, '5302abcd9000', 'the CHUID is not secret');
  t.is(lines[4]!.response, '6982');
  t.is(lines[0]!.command, '00cb3fff055c035fc10900', 'the request names only the tag');
  t.false((await readFile(file, 'utf8')).includes('c0ff'));
});

test('a refusal the card reported is the line\'s note', async (t) => {
  const { trace, file } = await traceInTempDir(t);
  await trace.record('R', bytes('00 fb 00 00'), bytes('6982'), { at: performance.now(), took: 0 }, 'RESET refused: no 9B');
  await trace.record('R', bytes('00 fd 00 00'), bytes('0504039000'), { at: performance.now(), took: 0 });
  const lines = (await readFile(file, 'utf8')).trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
  t.like(lines[0], { command: '00fb0000', response: '6982', note: 'RESET refused: no 9B' });
  t.false('note' in lines[1]!);
});
