/**
 * Captures the APDU sequences real PIV clients send to a tpmvsc card and turns them into
 * replay fixtures, test/fixtures/transcripts/<client>-<version>-<operation>.real.json.
 *
 *   npx tsx scripts/capture_transcripts.ts [--raw-dir DIR]      capture (keeps DIR/capture.json)
 *   npx tsx scripts/capture_transcripts.ts --from-raw FILE      convert an earlier capture again
 *
 * Starts the whole stack (test/helpers/stack.ts) with TPMVSC_APDU_TRACE set (see
 * daemon/apdu_trace.ts), creates a card with the Windows defaults, runs each client
 * command and cuts the trace at the client's boundaries. The conversion itself lives in
 * scripts/transcript_conversion.ts.
 */
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStack, REPO, type Stack } from '../test/helpers/stack.js';
import { convertCapture, type CaptureLine, type CapturedClientRun } from './transcript_conversion.js';

const PIN = '12345678';
const READER = 'TPM Virtual Smart Card 0 00 00';
const OPENSC_MODULE = '/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so';

interface ClientRun {
  /** Fixture name without `.real.json`. */
  name: string;
  client: string;
  description: string;
  program: string;
  args: (work: string) => string[];
  /** Earlier runs (fixture names) this one needs on the card, replayed first. */
  after: string[];
  /** The client is known to fail here (the capture still shows what it sent). */
  expectFailure?: boolean;
}

const SETUP_9A = ['yubico-piv-tool-2.2-generate', 'ykman-4.0.9-piv-certificates-generate', 'yubico-piv-tool-2.2-import-certificate'];

const RUNS: ClientRun[] = [
  { name: 'opensc-0.23-tool-name', client: 'OpenSC 0.23 opensc-tool', description: 'opensc-tool -n: card detection and name', program: 'opensc-tool', args: () => ['-r', READER, '-n'], after: [] },
  { name: 'opensc-0.23-pkcs11-list-slots', client: 'OpenSC 0.23 pkcs11-tool', description: 'pkcs11-tool -L on a fresh card', program: 'pkcs11-tool', args: () => ['--module', OPENSC_MODULE, '-L'], after: [] },
  { name: 'opensc-0.23-pkcs11-list-objects-empty', client: 'OpenSC 0.23 pkcs11-tool', description: 'pkcs11-tool -O on a fresh card (no keys)', program: 'pkcs11-tool', args: () => ['--module', OPENSC_MODULE, '-O'], after: [] },
  { name: 'yubico-piv-tool-2.2-status', client: 'yubico-piv-tool 2.2', description: 'yubico-piv-tool -a status on a fresh card', program: 'yubico-piv-tool', args: () => ['-r', 'TPM Virtual', '-a', 'status'], after: [] },
  { name: 'yubico-piv-tool-2.2-verify-pin', client: 'yubico-piv-tool 2.2', description: 'yubico-piv-tool -a verify-pin (PIN data redacted in the capture, the card PIN put back)', program: 'yubico-piv-tool', args: () => ['-r', 'TPM Virtual', '-a', 'verify-pin', '-P', PIN], after: [] },
  { name: 'yubico-piv-tool-2.2-generate', client: 'yubico-piv-tool 2.2', description: 'yubico-piv-tool -a generate -s 9a -A ECCP256 with the default management key', program: 'yubico-piv-tool', args: (work) => ['-r', 'TPM Virtual', '-a', 'generate', '-s', '9a', '-A', 'ECCP256', '-o', join(work, 'public.pem')], after: [] },
  // yubico-piv-tool 2.2 with OpenSSL 3 fails inside OpenSSL before any sign APDU (Yubico/yubico-piv-tool#388)
  { name: 'yubico-piv-tool-2.2-selfsign', client: 'yubico-piv-tool 2.2', description: 'yubico-piv-tool -a verify-pin -a selfsign -s 9a: with OpenSSL 3 it fails before sending the signature (upstream issue 388), after a real VERIFY', program: 'yubico-piv-tool', args: (work) => ['-r', 'TPM Virtual', '-a', 'verify-pin', '-P', PIN, '-a', 'selfsign', '-s', '9a', '-S', '/CN=tpmvsc transcript/', '-i', join(work, 'public.pem'), '-o', join(work, 'cert.pem')], after: ['yubico-piv-tool-2.2-generate'], expectFailure: true },
  { name: 'ykman-4.0.9-piv-certificates-generate', client: 'ykman 4.0.9', description: 'ykman piv certificates generate 9a: PIN, management key, the card signs the TBSCertificate with 9A, PUT DATA of the certificate', program: 'ykman', args: (work) => ['--reader', READER, 'piv', 'certificates', 'generate', '-s', 'CN=tpmvsc transcript', '-P', PIN, '-m', '010203040506070801020304050607080102030405060708', '9a', join(work, 'public.pem')], after: ['yubico-piv-tool-2.2-generate'] },
  { name: 'ykman-4.0.9-piv-certificates-export', client: 'ykman 4.0.9', description: 'ykman piv certificates export 9a', program: 'ykman', args: (work) => ['--reader', READER, 'piv', 'certificates', 'export', '9a', join(work, 'cert.pem')], after: ['yubico-piv-tool-2.2-generate', 'ykman-4.0.9-piv-certificates-generate'] },
  { name: 'yubico-piv-tool-2.2-import-certificate', client: 'yubico-piv-tool 2.2', description: 'yubico-piv-tool -a import-certificate -s 9a with the default management key', program: 'yubico-piv-tool', args: (work) => ['-r', 'TPM Virtual', '-a', 'import-certificate', '-s', '9a', '-i', join(work, 'cert.pem')], after: ['yubico-piv-tool-2.2-generate', 'ykman-4.0.9-piv-certificates-generate'] },
  { name: 'opensc-0.23-pkcs11-list-objects', client: 'OpenSC 0.23 pkcs11-tool', description: 'pkcs11-tool -O with an ECC key and certificate in 9A', program: 'pkcs11-tool', args: () => ['--module', OPENSC_MODULE, '-O'], after: SETUP_9A },
  { name: 'opensc-0.23-pkcs11-login-sign', client: 'OpenSC 0.23 pkcs11-tool', description: 'pkcs11-tool -l -p PIN --sign -m ECDSA --id 01 (PIN data redacted in the capture, the card PIN put back)', program: 'pkcs11-tool', args: (work) => ['--module', OPENSC_MODULE, '-l', '-p', PIN, '--sign', '-m', 'ECDSA', '--id', '01', '-i', join(work, 'data.bin'), '-o', join(work, 'signature.bin')], after: SETUP_9A },
  { name: 'ykman-4.0.9-piv-info', client: 'ykman 4.0.9', description: 'ykman --reader "TPM Virtual" piv info with an ECC key and certificate in 9A', program: 'ykman', args: () => ['--reader', READER, 'piv', 'info'], after: SETUP_9A },
];

async function traceSize(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

async function runClients(stack: Stack, traceFile: string, work: string, captured: CapturedClientRun[]): Promise<void> {
  const created = await stack.cli(['create', '/name', 'Transcript', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/PUK', 'DEFAULT', '/generate']);
  if (created.code !== 0) throw new Error(`tpmvscmgr create failed: ${created.stderr}`);
  await writeFile(join(work, 'data.bin'), 'transcript data to sign\n');
  for (const run of RUNS) {
    const start = await traceSize(traceFile);
    const result = await stack.run(run.program, run.args(work), { timeoutMs: 60_000 });
    // the daemon appends asynchronously: let the last lines land
    await new Promise((resolve) => setTimeout(resolve, 300));
    const text = (await readFile(traceFile)).subarray(start).toString('utf8');
    const lines = text.split('\n').filter((line) => line.trim() !== '').map((line) => JSON.parse(line) as CaptureLine);
    captured.push({ ...run, lines: lines.filter((line) => line.reader === READER), output: result.stdout + result.stderr });
    if ((result.code !== 0) !== (run.expectFailure ?? false)) throw new Error(`${run.name}: ${run.program} exited ${result.code} (expected failure: ${String(run.expectFailure ?? false)})\n${result.stdout}\n${result.stderr}`);
    console.error(`captured ${run.name}: ${lines.length} lines`);
  }
}

async function writeFixtures(runs: CapturedClientRun[]): Promise<void> {
  const fixtures = await convertCapture(runs, PIN);
  for (const [name, fixture] of fixtures) {
    await writeFile(join(REPO, 'test/fixtures/transcripts', `${name}.real.json`), JSON.stringify(fixture, null, 2) + '\n');
    console.error(`wrote ${name}.real.json (${fixture.steps.length} steps)`);
  }
}

async function main(): Promise<void> {
  const fromRaw = process.argv.indexOf('--from-raw');
  if (fromRaw > 0) {
    await writeFixtures(JSON.parse(await readFile(process.argv[fromRaw + 1]!, 'utf8')) as CapturedClientRun[]);
    return;
  }
  const rawIndex = process.argv.indexOf('--raw-dir');
  const work = await mkdtemp(join(tmpdir(), 'tpmvsc-capture-'));
  const traceFile = join(work, 'trace.jsonl');
  process.env.TPMVSC_APDU_TRACE = traceFile; // inherited by the daemon the stack starts
  const stack = await startStack({ readers: 1 });
  const runs: CapturedClientRun[] = [];
  try {
    try {
      await runClients(stack, traceFile, work, runs);
    } finally {
      if (rawIndex > 0) await writeFile(join(process.argv[rawIndex + 1]!, 'capture.json'), JSON.stringify(runs, null, 1));
    }
    await writeFixtures(runs);
  } finally {
    await stack.stop();
    await rm(work, { recursive: true, force: true });
  }
}

await main();
