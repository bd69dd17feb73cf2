/**
 * APDU round-trip latency through the stock pcscd + vpcd driver, as a PC/SC client sees it.
 *
 *   npx tsx bench/vpcd_bench.ts [count]
 *
 * Three cards, each in its own reader of one private pcscd (test/helpers/pcscd.ts), measured
 * in the same run with the same client (the `pcsclite` binding, connection kept open):
 *   (a) VpcdLink serving a card that answers from memory: what tpmvscd does;
 *   (b) a minimal baseline card written the simplest way (raw socket, one write per frame,
 *       TCP_QUICKACK re-armed after each read and write): the floor;
 *   (c) VpcdLink with quick-ACK disabled: the ~40 ms delayed-ACK stall (see tcp_quickack.ts);
 *   (d) the product's card: the PIV applet (TPM vault on a private swtpm) answering GET DATA
 *       of its CHUID from memory, served by VpcdLink.
 * Goal: (a) and (d) within 1.5x of (b).
 */
import net from 'node:net';
import { pathToFileURL } from 'node:url';

import type { SmartCard } from '../common/smart_card.js';
import { armQuickAck } from '../daemon/tcp_quickack.js';
import { VpcdLink } from '../daemon/vpcd_link.js';
import { EchoCard } from '../test/helpers/echo_card.js';
import { openPcsc, type PcscClient } from '../test/helpers/pcsc_client.js';
import { startPcscd } from '../test/helpers/pcscd.js';
import { startSwtpm } from '../test/helpers/swtpm.js';
import { Tpm } from '../tpm/index.js';
import { TpmVault } from '../vault/tpm_vault.js';
import { PivApplet } from '../applet/piv_applet.js';
import { provisionCard } from '../applet/provision.js';
import { DEFAULT_PIN_POLICY } from '../common/control_protocol.js';

/** A GET DATA-like short APDU (CHUID): 00 CB 3F FF 05 5C 03 5F C1 02 00. */
const GET_DATA = Buffer.from('00CB3FFF055C035FC10200', 'hex');

/**
 * The baseline card: the least code that speaks vpcd correctly and fast. Answers every
 * frame synchronously from `card.answer`. Returns a function that disconnects it.
 */
function startBaselineCard(port: number, card: EchoCard): () => void {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.setNoDelay(true);
  let buffered = Buffer.alloc(0);
  socket.on('error', () => undefined);
  socket.on('data', (chunk: Buffer) => {
    armQuickAck(socket);
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
      const payload = buffered.subarray(2, 2 + buffered.readUInt16BE(0));
      buffered = buffered.subarray(2 + payload.length);
      let reply: Uint8Array | null = null;
      if (payload.length === 1) {
        if (payload[0] === 0x04) reply = card.atr;
      } else {
        reply = card.answer(payload);
      }
      if (reply) {
        const frame = Buffer.alloc(2 + reply.length);
        frame.writeUInt16BE(reply.length, 0);
        frame.set(reply, 2);
        socket.write(frame);
        armQuickAck(socket);
      }
    }
  });
  return () => socket.destroy();
}

export interface LatencyResult {
  label: string;
  count: number;
  medianMs: number;
  p99Ms: number;
  perSecond: number;
}

function percentile(sorted: readonly number[], fraction: number): number {
  const index = Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1);
  return sorted[Math.max(0, index)]!;
}

/** Sends `count` APDUs over one kept connection after `warmup` unmeasured ones. */
async function measure(client: PcscClient, reader: string, label: string, count: number, warmup: number): Promise<LatencyResult> {
  await client.waitForCard(reader, true, 5000);
  const connection = await client.connect(reader);
  try {
    for (let i = 0; i < warmup; i++) await connection.transmit(GET_DATA);
    const samples: number[] = [];
    const started = process.hrtime.bigint();
    for (let i = 0; i < count; i++) {
      const before = process.hrtime.bigint();
      const response = await connection.transmit(GET_DATA);
      samples.push(Number(process.hrtime.bigint() - before) / 1e6);
      if (response.length < 2 || response[response.length - 2] !== 0x90) {
        throw new Error(`${label}: unexpected response ${response.toString('hex')}`);
      }
    }
    const totalMs = Number(process.hrtime.bigint() - started) / 1e6;
    samples.sort((x, y) => x - y);
    return { label, count, medianMs: percentile(samples, 0.5), p99Ms: percentile(samples, 0.99), perSecond: (count / totalMs) * 1000 };
  } finally {
    await connection.disconnect('leave');
  }
}

export interface VpcdBenchOptions {
  /** APDUs measured for (a) and (b). Default 2000. */
  count?: number;
  /** APDUs measured for (c), which takes ~40 ms each. Default 100. */
  stalledCount?: number;
  /** Print the table. Default true. */
  print?: boolean;
}

export interface VpcdBenchResult {
  link: LatencyResult;
  baseline: LatencyResult;
  noQuickAck: LatencyResult;
  applet: LatencyResult;
  /** link median / baseline median. */
  ratio: number;
  /** applet median / baseline median. */
  appletRatio: number;
}

/** A /generate PIV card on a TPM vault, state kept in memory (GET DATA never writes). */
async function productCard(tcti: string): Promise<{ card: PivApplet; close: () => Promise<void> }> {
  const tpm = await Tpm.open({ tcti });
  const vault = await TpmVault.create(tpm, {
    pin: new TextEncoder().encode('12345678'),
    puk: undefined,
    managementKey: { algorithm: 'tdes', key: new Uint8Array(Buffer.from('010203040506070801020304050607080102030405060708', 'hex')) },
  });
  const state = provisionCard({ name: 'bench', pinPolicy: DEFAULT_PIN_POLICY, hasPuk: false, generate: true, vaultState: vault.state() });
  const card = new PivApplet({ state, vault, store: { save: async () => undefined } });
  return {
    card,
    close: async () => {
      await vault.destroy();
      await tpm.close();
    },
  };
}

/** Runs the three measurements; the harness and every card are torn down afterwards. */
export async function measureVpcdLatency(options: VpcdBenchOptions = {}): Promise<VpcdBenchResult> {
  const count = options.count ?? 2000;
  const stalledCount = options.stalledCount ?? 100;
  const pcscd = await startPcscd({ readers: 4, friendlyName: 'tpmvsc bench' });
  pcscd.useInThisProcess();
  const cards: SmartCard[] = [new EchoCard(), new EchoCard(), new EchoCard()];
  const link = new VpcdLink({ card: cards[0]!, port: pcscd.port(0) }).start();
  const stopBaseline = startBaselineCard(pcscd.port(1), cards[1] as EchoCard);
  const slowLink = new VpcdLink({ card: cards[2]!, port: pcscd.port(2), quickAck: false }).start();
  const swtpm = await startSwtpm();
  const product = await productCard(swtpm.tcti);
  const productLink = new VpcdLink({ card: product.card, port: pcscd.port(3) }).start();
  const client = openPcsc();
  try {
    for (let slot = 0; slot < 4; slot++) await client.waitForReader(pcscd.readerName(slot), 5000);
    const warmup = Math.min(200, count);
    // Interleave (b) and (a) twice so drift on a busy machine hits both alike; keep the better run.
    const best = (x: LatencyResult, y: LatencyResult) => (x.medianMs <= y.medianMs ? x : y);
    let baseline = await measure(client, pcscd.readerName(1), '(b) baseline card', count, warmup);
    let linked = await measure(client, pcscd.readerName(0), '(a) VpcdLink', count, warmup);
    baseline = best(baseline, await measure(client, pcscd.readerName(1), '(b) baseline card', count, warmup));
    linked = best(linked, await measure(client, pcscd.readerName(0), '(a) VpcdLink', count, warmup));
    let applet = await measure(client, pcscd.readerName(3), '(d) PIV applet, GET DATA', count, warmup);
    baseline = best(baseline, await measure(client, pcscd.readerName(1), '(b) baseline card', count, warmup));
    applet = best(applet, await measure(client, pcscd.readerName(3), '(d) PIV applet, GET DATA', count, warmup));
    const noQuickAck = await measure(client, pcscd.readerName(2), '(c) VpcdLink, no quick-ACK', stalledCount, 3);
    const result = {
      link: linked,
      baseline,
      noQuickAck,
      applet,
      ratio: linked.medianMs / baseline.medianMs,
      appletRatio: applet.medianMs / baseline.medianMs,
    };
    if (options.print ?? true) printTable(result);
    return result;
  } finally {
    client.close();
    stopBaseline();
    await Promise.all([link.close(), slowLink.close(), productLink.close()]);
    await product.close();
    await swtpm.stop();
    await pcscd.stop();
  }
}

function printTable(result: VpcdBenchResult): void {
  const rows = [result.link, result.applet, result.baseline, result.noQuickAck];
  const line = (cells: string[]) => `${cells[0]!.padEnd(30)}${cells.slice(1).map((cell) => cell.padStart(12)).join('')}`;
  const lines = [
    'vpcd APDU round trip (stock pcscd + vpcd driver, pcsclite client, short GET DATA)',
    line(['card', 'APDUs', 'median ms', 'p99 ms', 'APDU/s', 'x (b)']),
    ...rows.map((row) =>
      line([
        row.label,
        String(row.count),
        row.medianMs.toFixed(3),
        row.p99Ms.toFixed(3),
        row.perSecond.toFixed(0),
        (row.medianMs / result.baseline.medianMs).toFixed(2),
      ]),
    ),
    `(a)/(b) = ${result.ratio.toFixed(2)}  goal <= 1.50: ${result.ratio <= 1.5 ? 'met' : 'NOT met'}`,
    `(d)/(b) = ${result.appletRatio.toFixed(2)}  goal <= 1.50: ${result.appletRatio <= 1.5 ? 'met' : 'NOT met'}`,
    `quick-ACK effective: ${result.noQuickAck.medianMs > 10 * result.link.medianMs ? 'yes' : 'NO'} ` +
      `((c) is ${(result.noQuickAck.medianMs / result.link.medianMs).toFixed(0)}x (a))`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

/** Prints the latency table (bench entry point). */
export async function runVpcdBench(options: VpcdBenchOptions = {}): Promise<void> {
  await measureVpcdLatency(options);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const count = Number(process.argv[2]) || undefined;
  runVpcdBench(count ? { count } : {}).catch((error: unknown) => {
    process.stderr.write(`${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exitCode = 1;
  });
}
