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
