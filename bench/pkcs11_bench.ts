/**
 * One `pkcs11-tool --login --sign` process, start to exit, with our card (OpenSC's PIV module
 * through pcscd + vpcd + tpmvscd) next to the same with tpm2-pkcs11 (Debian libtpm2-pkcs11-1,
 * talking to the same swtpm directly), both ECDSA P-256, measured in the same run.
 * Goal: faster than tpm2-pkcs11. Reported: median and p90 ms per process.
 *
 *   npx tsx bench/pkcs11_bench.ts [runs]      (or via bench/index.ts: runPkcs11Bench())
 *
 * Two more rows, measured in the same run, show where OpenSC's time goes:
 *  - `pkcs11-tool -I` with no PC/SC service reachable: loading OpenSC and OpenSSL, no reader;
 *  - `pkcs11-tool -I` with our card: the above plus reader listing and card detection (about 25
 *    APDUs of PIV discovery and certificate reads) but no login and no signature.
 * Found with the daemon's APDU trace (TPMVSC_APDU_TRACE, with per-command times) and ltrace:
 * the card answers each APDU in 0.05-0.2 ms; OpenSC's reader polling costs more, because
 * pcsc-lite's SCardGetStatusChange with a zero timeout busy-waits about 1 ms and then asks
 * pcscd to stop waiting (~2 ms per call), and OpenSC makes a dozen such calls per process
 * (per reader; vpcd always shows two readers per block).
 *
 * tpm2-pkcs11 provisioning (tpm2_ptool) leaves objects loaded, which bare swtpm (3 slots)
 * cannot take: it goes through tpm2-abrmd on a private D-Bus session bus, both started here
 * and ended by PID; the module itself then uses the bare swtpm TCTI.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { runProgram, startStack, type CommandResult } from '../test/helpers/stack.js';

const OPENSC_MODULE = '/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so';
const TPM2_MODULE = '/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so';
const READER = 'TPM Virtual Smart Card 0 00 00';
const PIN = '12345678';
const SO_PIN = '87654321';
const DEFAULT_MANAGEMENT_KEY = '010203040506070801020304050607080102030405060708';

function mustSucceed(what: string, result: CommandResult): CommandResult {
  if (result.code !== 0) throw new Error(`${what} failed (${result.code}):\n${result.stdout}\n${result.stderr}`);
  return result;
}

interface Timing {
  medianMs: number;
  p90Ms: number;
  runs: number;
}

/** Runs the process `runs` times (after 2 unmeasured warm-ups) and times each from spawn to exit. */
async function timeProcess(runs: number, start: () => Promise<CommandResult>, succeeded = (result: CommandResult) => result.code === 0): Promise<Timing> {
  const check = (result: CommandResult): void => {
    if (!succeeded(result)) throw new Error(`measured process failed (${result.code}):\n${result.stdout}\n${result.stderr}`);
  };
  for (let i = 0; i < 2; i++) check(await start());
  const samples: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    check(await start());
    samples.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  samples.sort((a, b) => a - b);
  const at = (fraction: number): number => samples[Math.min(samples.length - 1, Math.floor(fraction * samples.length))]!;
  return { medianMs: at(0.5), p90Ms: at(0.9), runs };
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

/** Provisions a tpm2-pkcs11 token with an ECC P-256 key (label "bench", CKA_ID "01" = 3031). */
async function provisionTpm2Pkcs11(tcti: string, store: string, work: string): Promise<void> {
  const socket = join(work, 'dbus.sock');
  const dbus = mustSucceed('dbus-daemon', await runProgram('dbus-daemon', ['--session', '--fork', `--address=unix:path=${socket}`, '--print-pid']));
  const dbusPid = Number.parseInt(dbus.stdout.trim(), 10);
  const busEnv = { ...process.env, DBUS_SESSION_BUS_ADDRESS: `unix:path=${socket}` };
  const abrmd = spawn('tpm2-abrmd', ['--session', '--allow-root', '--flush-all', `--tcti=${tcti}`], { env: busEnv, stdio: 'ignore' });
  try {
    const env = { ...busEnv, TPM2TOOLS_TCTI: 'tabrmd:bus_type=session' };
    const ptool = (args: string[]) => runProgram('tpm2_ptool', [...args, `--path=${store}`], { env, timeoutMs: 120_000 });
    let init = await ptool(['init']);
    for (let i = 0; i < 50 && init.code !== 0; i++) {
      await sleep(100); // tpm2-abrmd takes a moment to claim its bus name
      init = await ptool(['init']);
    }
    mustSucceed('tpm2_ptool init', init);
    mustSucceed('tpm2_ptool addtoken', await ptool(['addtoken', '--pid=1', '--label=bench', `--userpin=${PIN}`, `--sopin=${SO_PIN}`]));
    mustSucceed('tpm2_ptool addkey', await ptool(['addkey', '--label=bench', '--id=01', `--userpin=${PIN}`, '--algorithm=ecc256']));
  } finally {
    abrmd.kill('SIGTERM');
    await waitExit(abrmd);
    if (Number.isInteger(dbusPid) && dbusPid > 0) {
      try {
        process.kill(dbusPid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
  }
}

export async function runPkcs11Bench(runs = 20): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'tpmvsc-pkcs11-bench-'));
  const stack = await startStack({ readers: 1 });
  try {
    const input = join(work, 'digest.bin');
    await writeFile(input, Buffer.alloc(32, 0x5a)); // -m ECDSA signs a ready hash
    const signature = join(work, 'signature.bin');

    // our card: ECC P-256 in 9A with a certificate (OpenSC lists a PIV key through its certificate)
    mustSucceed('tpmvscmgr create', await stack.cli(['create', '/name', 'Bench', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/PUK', 'DEFAULT', '/generate']));
    const publicKey = join(work, 'public.pem');
    mustSucceed('yubico-piv-tool generate', await stack.run('yubico-piv-tool', ['-r', READER, '-a', 'generate', '-s', '9a', '-A', 'ECCP256', '-o', publicKey]));
    mustSucceed('ykman certificates generate', await stack.run('ykman', ['--reader', READER, 'piv', 'certificates', 'generate', '-s', 'CN=bench', '-P', PIN, '-m', DEFAULT_MANAGEMENT_KEY, '9a', publicKey]));
    const card = await timeProcess(runs, () =>
      stack.run('pkcs11-tool', ['--module', OPENSC_MODULE, '--login', '--pin', PIN, '--sign', '-m', 'ECDSA', '--id', '01', '-i', input, '-o', signature]),
    );
    const openscDetect = await timeProcess(runs, () => stack.run('pkcs11-tool', ['--module', OPENSC_MODULE, '-I']));
    const openscBare = await timeProcess(runs, () =>
      runProgram('pkcs11-tool', ['--module', OPENSC_MODULE, '-I'], { env: { ...process.env, PCSCLITE_CSOCK_NAME: join(work, 'no-pcscd.comm') } }),
      (result) => result.stdout.includes('OpenSC'), // it ends with "No slots." and exit code 1
    );

    // tpm2-pkcs11 on the same swtpm: the daemon lets go of it first (swtpm serves one client)
    await stack.stopDaemon();
    const store = join(work, 'tpm2-pkcs11');
    await runProgram('mkdir', ['-p', store]);
    await provisionTpm2Pkcs11(stack.swtpm.tcti, store, work);
    const tpm2Env = { ...process.env, TPM2_PKCS11_TCTI: stack.swtpm.tcti, TPM2_PKCS11_STORE: store, TSS2_LOG: 'all+NONE' };
    const peer = await timeProcess(runs, () =>
      runProgram('pkcs11-tool', ['--module', TPM2_MODULE, '--login', '--pin', PIN, '--sign', '-m', 'ECDSA', '--id', '3031', '-i', input, '-o', signature], { env: tpm2Env }),
    );

    const row = (name: string, t: Timing): string => `  ${name.padEnd(44)} ${t.medianMs.toFixed(1).padStart(7)} ${t.p90Ms.toFixed(1).padStart(7)}`;
    console.log(`pkcs11-tool --login --sign -m ECDSA (P-256), one process per signature, ${runs} runs each`);
    console.log(`  ${'module'.padEnd(44)} ${'median'.padStart(7)} ${'p90'.padStart(7)}  (ms per process)`);
    console.log(row('OpenSC PIV -> pcscd -> vpcd -> tpmvscd', card));
    console.log(row('tpm2-pkcs11 -> swtpm (TCTI direct)', peer));
    const ratio = card.medianMs / peer.medianMs;
    console.log(`  card / tpm2-pkcs11: ${ratio.toFixed(2)}x the time ${ratio < 1 ? '(faster: goal met)' : '(slower: goal NOT met)'}`);
    console.log('  where OpenSC\'s time goes (pkcs11-tool -I, no login, no signature):');
    console.log(row('  OpenSC, no PC/SC service (start only)', openscBare));
    console.log(row('  OpenSC with our card (readers + detection)', openscDetect));
  } finally {
    await stack.stop();
    await rm(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const runs = Number.parseInt(process.argv[2] ?? '', 10);
  await runPkcs11Bench(Number.isInteger(runs) && runs > 0 ? runs : 20);
}
