/**
 * swtpm / TPM simulator TCP data-port framing:
 *   request:  u32 TPM_SEND_COMMAND (8) | u8 locality | u32 length | command bytes
 *   response: u32 length | response bytes | u32 acknowledgement (0)
 * The connection is opened lazily and reopened after any failure.
 */
import { Socket } from 'node:net';
import { TpmTransportError } from './errors.js';
import { checkResponseFrame, MAX_COMMAND_BYTES, MAX_RESPONSE_BYTES, type TpmTransport } from './transport.js';

const TPM_SEND_COMMAND = 8;

interface Pending {
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

export class SwtpmTransport implements TpmTransport {
  readonly hasResourceManager = false;
  readonly defaultTimeoutMs = 10_000;
  readonly description: string;
  connectionCount = 0;

  private socket: Socket | undefined;
  private connecting: Promise<Socket> | undefined;
  private chunks: Buffer[] = [];
  private received = 0;
  private pending: Pending | undefined;
  private closed = false;

  constructor(private readonly host: string, private readonly port: number) {
    this.description = `swtpm ${host}:${port}`;
  }

  async connect(timeoutMs: number): Promise<void> {
    if (this.closed) throw new TpmTransportError('CLOSED', 'transport closed');
    await this.open(timeoutMs);
  }

  private open(timeoutMs: number): Promise<Socket> {
    if (this.socket) return Promise.resolve(this.socket);
    if (this.connecting) return this.connecting;
    this.connecting = new Promise<Socket>((resolve, reject) => {
      const s = new Socket();
      s.setNoDelay(true);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new TpmTransportError('TIMEOUT', `connecting to ${this.description} took more than ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(new TpmTransportError('OPEN_FAILED', `cannot connect to ${this.description}: ${err.message}`, { cause: err }));
      });
      s.connect(this.port, this.host, () => {
        clearTimeout(timer);
        s.removeAllListeners('error');
        s.on('error', (err) => this.fail(new TpmTransportError('IO', `${this.description}: ${err.message}`, { cause: err })));
        s.on('close', () => this.fail(new TpmTransportError('CLOSED', `${this.description} closed the connection`)));
        s.on('data', (d: Buffer) => this.onData(d));
        this.socket = s;
        this.connectionCount++;
        resolve(s);
      });
    }).finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /** Drops the connection and rejects the pending request. */
  private fail(err: TpmTransportError): void {
    const s = this.socket;
    this.socket = undefined;
    this.chunks = [];
    this.received = 0;
    s?.removeAllListeners('close');
    s?.destroy();
    const p = this.pending;
    this.pending = undefined;
    if (p) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }

  private onData(d: Buffer): void {
    if (!this.pending) {
      this.fail(new TpmTransportError('MALFORMED', `${this.description} sent ${d.length} unsolicited bytes`));
      return;
    }
    this.chunks.push(d);
    this.received += d.length;
    if (this.received < 4) return;
    const head = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
    if (this.chunks.length !== 1) this.chunks = [head];
    const len = head.readUInt32BE(0);
    if (len > MAX_RESPONSE_BYTES || len < 10) {
      this.fail(new TpmTransportError('MALFORMED', `${this.description} announced a ${len}-byte response`));
      return;
    }
    const total = 4 + len + 4;
    if (this.received < total) return;
    if (this.received > total) {
      this.fail(new TpmTransportError('MALFORMED', `${this.description} sent ${this.received - total} bytes beyond the response`));
      return;
    }
    const ack = head.readUInt32BE(4 + len);
    const resp = Buffer.from(head.subarray(4, 4 + len));
    if (ack !== 0) {
      this.fail(new TpmTransportError('MALFORMED', `${this.description} acknowledgement ${ack}`));
      return;
    }
    try {
      checkResponseFrame(resp);
    } catch (e) {
      this.fail(e as TpmTransportError);
      return;
    }
    this.chunks = [];
    this.received = 0;
    const p = this.pending;
    this.pending = undefined;
    clearTimeout(p.timer);
    p.resolve(resp);
  }

  async transmit(command: Uint8Array, timeoutMs: number): Promise<Buffer> {
    if (this.closed) throw new TpmTransportError('CLOSED', 'transport closed');
    if (this.pending) throw new TpmTransportError('IO', 'overlapping transmit');
    if (command.length > MAX_COMMAND_BYTES) throw new TpmTransportError('TOO_LARGE', `command of ${command.length} bytes`);
    const started = Date.now();
    const socket = await this.open(timeoutMs);
    const frame = Buffer.allocUnsafe(9 + command.length);
    frame.writeUInt32BE(TPM_SEND_COMMAND, 0);
    frame[4] = 0;
    frame.writeUInt32BE(command.length, 5);
    frame.set(command, 9);
    return new Promise<Buffer>((resolve, reject) => {
      const remaining = Math.max(1, timeoutMs - (Date.now() - started));
      const timer = setTimeout(() => {
        this.fail(new TpmTransportError('TIMEOUT', `${this.description} did not answer within ${timeoutMs} ms`));
      }, remaining);
      this.pending = { resolve, reject, timer };
      socket.write(frame);
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    this.fail(new TpmTransportError('CLOSED', 'transport closed'));
  }
}
