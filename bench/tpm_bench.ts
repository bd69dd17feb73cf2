/**
 * TPM client benchmark: ops/s of the library against swtpm next to the raw round-trip floor of the
 * same transport (a pre-marshalled GetRandom over a bare socket, no library code), and the client's
 * own overhead per command (wall-clock difference and CPU time of this process per operation).
 *
 *   npx tsx bench/tpm_bench.ts          (or via bench/index.ts: runTpmBench())
 */
import { createHash } from 'node:crypto';
import { Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import { startSwtpm } from '../test/helpers/swtpm.js';
import {
  Tpm, TPM_ALG, TPM_ECC, eccKeyTemplate, openTransport, rsaKeyTemplate, sealedDataTemplate, type TpmTransport,
} from '../tpm/index.js';

/** Wraps a transport to add up the wall time spent waiting for the TPM. */
class TimingTransport implements TpmTransport {
  waitedNs = 0n;
  constructor(private readonly inner: TpmTransport) {}
  get hasResourceManager(): boolean { return this.inner.hasResourceManager; }
  get description(): string { return this.inner.description; }
  get defaultTimeoutMs(): number { return this.inner.defaultTimeoutMs; }
  get connectionCount(): number { return this.inner.connectionCount; }
  connect(timeoutMs: number): Promise<void> { return this.inner.connect(timeoutMs); }
  close(): Promise<void> { return this.inner.close(); }
  async transmit(command: Uint8Array, timeoutMs: number): Promise<Buffer> {
    const t0 = process.hrtime.bigint();
    try {
      return await this.inner.transmit(command, timeoutMs);
    } finally {
      this.waitedNs += process.hrtime.bigint() - t0;
    }
  }
}

interface Result {
  name: string;
  opsPerSec: number;
  msPerOp: number;
  cpuMsPerOp: number;
  /** Wall time per op outside the transport (marshalling, sessions, crypto, queueing). */
  clientMsPerOp: number | undefined;
}

async function measure(name: string, seconds: number, op: () => Promise<unknown>, timing?: TimingTransport): Promise<Result> {
  for (let i = 0; i < 20; i++) await op(); // warm-up (self-tests, JIT)
  if (timing) timing.waitedNs = 0n;
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  let n = 0;
  const until = t0 + BigInt(Math.round(seconds * 1e9));
  while (process.hrtime.bigint() < until) {
    await op();
    n++;
  }
  const ns = Number(process.hrtime.bigint() - t0);
  const cpu = process.cpuUsage(cpu0);
  const clientMsPerOp = timing ? (ns - Number(timing.waitedNs)) / 1e6 / n : undefined;
  return { name, opsPerSec: (n * 1e9) / ns, msPerOp: ns / 1e6 / n, cpuMsPerOp: (cpu.user + cpu.system) / 1000 / n, clientMsPerOp };
}

/** A bare-socket client for the raw floor: one frame out, wait for the whole frame back. */
async function rawClient(port: number): Promise<{ roundTrip(frame: Buffer): Promise<void>; close(): void }> {
  const s = new Socket();
  s.setNoDelay(true);
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.connect(port, '127.0.0.1', () => resolve());
  });
  let want = 0;
  let got = 0;
  let done: (() => void) | undefined;
  s.on('data', (d: Buffer) => {
    if (got === 0 && d.length >= 4) want = d.readUInt32BE(0) + 8;
    got += d.length;
    if (want && got >= want && done) {
      const f = done;
      done = undefined;
      f();
    }
  });
  return {
    roundTrip(frame: Buffer): Promise<void> {
      got = 0;
      want = 0;
      return new Promise<void>((resolve) => {
        done = resolve;
        s.write(frame);
      });
    },
    close: () => s.destroy(),
  };
}

export async function runTpmBench(seconds = 2): Promise<void> {
  const sw = await startSwtpm();
  try {
    // raw floor: GetRandom(32), pre-marshalled with simulator framing
    const cmd = Buffer.from('80010000000c0000017b0020', 'hex');
    const frame = Buffer.concat([Buffer.from([0, 0, 0, 8, 0, 0, 0, 0, cmd.length]), cmd]);
    const raw = await rawClient(sw.port);
    const rawResult = await measure('GetRandom(32) raw socket floor', seconds, () => raw.roundTrip(frame));
    raw.close();

    const timing = new TimingTransport(openTransport(sw.tcti));
    const tpm = await Tpm.open({ transport: timing });
    try {
      const pin = createHash('sha256').update('123456').digest();
      const srk = await tpm.storageRoot();
      const results: Result[] = [rawResult];
      results.push(await measure('GetRandom(32) library', seconds, () => tpm.getRandom(32), timing));

      const ecc = await tpm.load(srk, await tpm.create(srk, eccKeyTemplate(TPM_ECC.NIST_P256), { userAuth: pin }));
      const digest = createHash('sha256').update('bench').digest();
      results.push(await measure('Sign ECDSA P-256 (salted HMAC + CFB)', seconds, () => tpm.sign(ecc, digest, { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { auth: pin }), timing));
      await tpm.flushContext(ecc.handle);

      const rsa = await tpm.load(srk, await tpm.create(srk, rsaKeyTemplate(2048), { userAuth: pin }));
      results.push(await measure('Sign RSA-2048 PKCS#1 (salted HMAC + CFB)', seconds, () => tpm.sign(rsa, digest, { scheme: TPM_ALG.RSASSA, hash: TPM_ALG.SHA256 }, { auth: pin }), timing));
      await tpm.flushContext(rsa.handle);

      const sealed = await tpm.load(srk, await tpm.create(srk, sealedDataTemplate(), { userAuth: pin, data: Buffer.alloc(32, 7) }));
      results.push(await measure('Unseal (salted HMAC + CFB)', seconds, () => tpm.unseal(sealed, { auth: pin }), timing));
      await tpm.flushContext(sealed.handle);

      const lines = results.map((r) =>
        `  ${r.name.padEnd(42)} ${r.opsPerSec.toFixed(0).padStart(7)} ops/s  ${r.msPerOp.toFixed(3)} ms/op` +
        `  client overhead ${r.clientMsPerOp === undefined ? '  -  ' : r.clientMsPerOp.toFixed(3)} ms/op  process CPU ${r.cpuMsPerOp.toFixed(3)} ms/op`);
      const lib = results[1]!;
      console.log(`TPM client benchmark (${sw.tcti}, ${seconds} s per row)`);
      console.log(lines.join('\n'));
      console.log(`  GetRandom library - raw floor: ${(lib.msPerOp - rawResult.msPerOp).toFixed(3)} ms/op wall`);
      console.log('  client overhead = wall time outside the transport (marshalling, sessions, HMAC, CFB, queue); goal < 0.1 ms');
    } finally {
      await tpm.close();
    }
  } finally {
    await sw.stop();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await runTpmBench();
}
