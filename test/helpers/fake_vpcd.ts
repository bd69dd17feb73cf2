/**
 * A fake vpcd driver on loopback that reads its socket the way vpcd does (fake_vpcd.py, run
 * with /usr/bin/python3): recv(MSG_WAITALL) of exactly one reply frame, and only while it
 * waits for the reply to a command it sent. Bytes a card writes ahead of a command stay in
 * the kernel's receive queue, as they would in pcscd's, so the card's socket-queue probe
 * (daemon/vpcd_read_probe.ts) sees what it would see with the real driver. (A Node socket
 * cannot play this part: paused, it still reads into its own buffer.)
 *
 *   const vpcd = await FakeVpcd.start();
 *   const link = new VpcdLink({ card, port: vpcd.port }).start();
 *   const driver = await vpcd.connection(0);
 *   await driver.command('04');            // GET ATR -> the ATR, as hex
 *   driver.control('01');                   // power on: no reply read
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { encodeFrame } from '../../daemon/frame_reader.js';

const SCRIPT = fileURLToPath(new URL(import.meta.url.endsWith('.js') ? '../../../test/helpers/fake_vpcd.py' : './fake_vpcd.py', import.meta.url));
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const hexOf = (bytes: string | Uint8Array) => (typeof bytes === 'string' ? bytes : Buffer.from(bytes).toString('hex'));

/** One accepted connection, as the driver's side of it. */
export class DriverConnection {
  ended = false;

  constructor(
    private readonly vpcd: FakeVpcd,
    readonly index: number,
  ) {}

  /** Writes raw bytes (a frame, several, or garbage). */
  write(bytes: string | Uint8Array): Promise<void> {
    return this.vpcd.request(`send ${this.index} ${hexOf(bytes)}`).then(() => undefined);
  }

  /** Sends one frame that gets no reply (00 power off, 01 power on, 02 reset). */
  control(payloadHex: string): Promise<void> {
    return this.write(encodeFrame(Buffer.from(payloadHex, 'hex')));
  }

  /** Sends one command frame and reads its reply: the reply's payload as hex, or null if the card left. */
  async command(payload: string | Uint8Array, timeoutMs?: number): Promise<string | null> {
    await this.write(encodeFrame(Buffer.from(hexOf(payload), 'hex')));
    return this.readReply(timeoutMs);
  }

  /** Reads one reply frame, as vpcd's recv(MSG_WAITALL) does; null when the card closed the connection. */
  async readReply(timeoutMs = 3000): Promise<string | null> {
    const answer = await this.vpcd.request(`reply ${this.index} ${timeoutMs}`);
    if (answer === 'timeout') throw new Error(`no reply from the card within ${timeoutMs} ms`);
    if (answer === 'eof') {
      this.ended = true;
      return null;
    }
    return answer.slice('reply '.length);
  }

  /** Bytes the card wrote that the driver has not read (without reading them): a reply nobody asked for. */
  async extraBytes(): Promise<string> {
    return (await this.vpcd.request(`pending ${this.index}`)).slice('pending '.length).trim();
  }

  /** Reads and drops everything until the card closes the connection. */
  async waitEnded(timeoutMs = 3000): Promise<void> {
    if ((await this.vpcd.request(`eof ${this.index} ${timeoutMs}`)) !== 'eof') throw new Error('the card did not close the connection');
    this.ended = true;
  }

  /** Closes the driver's end (pcscd went away). */
  async close(): Promise<void> {
    await this.vpcd.request(`close ${this.index}`);
  }
}

/** A listening fake driver; connection(n) is the n-th card connection. */
export class FakeVpcd {
  readonly accepted: DriverConnection[] = [];
  private nextId = 0;
  private readonly waiting = new Map<string, (answer: string) => void>();

  private constructor(
    private readonly child: ChildProcessByStdio<Writable, Readable, null>,
    readonly port: number,
    lines: AsyncIterableIterator<string>,
  ) {
    void (async () => {
      for await (const line of lines) {
        const accepted = /^accepted (\d+)$/.exec(line);
        if (accepted) {
          this.accepted.push(new DriverConnection(this, Number(accepted[1])));
          continue;
        }
        const space = line.indexOf(' ');
        const id = line.slice(0, space);
        this.waiting.get(id)?.(line.slice(space + 1));
        this.waiting.delete(id);
      }
    })();
  }

  /** Listens on 127.0.0.1:port (0: any free port). */
  static async start(port = 0): Promise<FakeVpcd> {
    const child = spawn('/usr/bin/python3', [SCRIPT, String(port)], { stdio: ['pipe', 'pipe', 'inherit'] });
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    const first = await lines.next();
    const match = /^port (\d+)$/.exec(first.value ?? '');
    if (!match) {
      child.kill();
      throw new Error(`fake vpcd did not start: ${first.value ?? 'no output'}`);
    }
    return new FakeVpcd(child, Number(match[1]), lines);
  }

  /** Sends one command line to the driver and resolves with its answer (without the id). */
  request(command: string): Promise<string> {
    const id = String(this.nextId++);
    return new Promise((resolve) => {
      this.waiting.set(id, resolve);
      this.child.stdin.write(`${id} ${command}\n`);
    });
  }

  async connection(index: number, timeoutMs = 3000): Promise<DriverConnection> {
    const deadline = Date.now() + timeoutMs;
    while (this.accepted.length <= index) {
      if (Date.now() > deadline) throw new Error(`connection #${index} never came`);
      await sleep(5);
    }
    return this.accepted[index]!;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.kill();
    await exited;
  }
}
