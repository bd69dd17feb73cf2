/**
 * Linux TPM character device (/dev/tpmrm0: the kernel's resource manager). The driver is
 * request/response: write one whole command, then read one whole response. The file is opened
 * O_NONBLOCK: the kernel (drivers/char/tpm/tpm-dev-common.c, since 4.20) then queues the command
 * and returns from write at once, and a read before the response is ready returns 0 bytes (older
 * kernels: write blocks until done). So no libuv thread is parked on the TPM; we poll the read
 * with a short, growing delay until the timeout. A failed transmission in the kernel surfaces
 * as an errno on that read.
 */
import { constants as fsConstants, promises as fsp } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { TpmTransportError } from './errors.js';
import { checkResponseFrame, MAX_COMMAND_BYTES, MAX_RESPONSE_BYTES, type TpmTransport } from './transport.js';

export class DeviceTransport implements TpmTransport {
  readonly hasResourceManager = true;
  readonly defaultTimeoutMs = 30_000;
  readonly description: string;
  connectionCount = 0;

  private file: fsp.FileHandle | undefined;
  private readonly buf = Buffer.allocUnsafe(MAX_RESPONSE_BYTES);
  private closed = false;

  constructor(private readonly path: string) {
    this.description = `device ${path}`;
  }

  async connect(): Promise<void> {
    if (this.closed) throw new TpmTransportError('CLOSED', 'transport closed');
    await this.open();
  }

  private async open(): Promise<fsp.FileHandle> {
    if (this.file) return this.file;
    try {
      this.file = await fsp.open(this.path, fsConstants.O_RDWR | fsConstants.O_NONBLOCK);
    } catch (e) {
      throw new TpmTransportError('OPEN_FAILED', `cannot open ${this.path}: ${(e as Error).message}`, { cause: e });
    }
    this.connectionCount++;
    return this.file;
  }

  private async drop(): Promise<void> {
    const f = this.file;
    this.file = undefined;
    await f?.close().catch(() => undefined);
  }

  async transmit(command: Uint8Array, timeoutMs: number): Promise<Buffer> {
    if (this.closed) throw new TpmTransportError('CLOSED', 'transport closed');
    if (command.length > MAX_COMMAND_BYTES) throw new TpmTransportError('TOO_LARGE', `command of ${command.length} bytes`);
    const deadline = Date.now() + timeoutMs;
    const f = await this.open();
    try {
      const { bytesWritten } = await f.write(command, 0, command.length, null);
      if (bytesWritten !== command.length) throw new TpmTransportError('IO', `short write ${bytesWritten}/${command.length}`);
      let delay = 0.2;
      for (;;) {
        try {
          const { bytesRead } = await f.read(this.buf, 0, this.buf.length, null);
          if (bytesRead > 0) {
            const resp = Buffer.from(this.buf.subarray(0, bytesRead));
            checkResponseFrame(resp);
            return resp;
          }
          // 0 bytes: the response is not ready yet
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EAGAIN') throw e;
        }
        if (Date.now() >= deadline) throw new TpmTransportError('TIMEOUT', `${this.path} did not answer within ${timeoutMs} ms`);
        await sleep(delay);
        delay = Math.min(delay * 2, 5);
      }
    } catch (e) {
      await this.drop();
      if (e instanceof TpmTransportError) throw e;
      throw new TpmTransportError('IO', `${this.path}: ${(e as Error).message}`, { cause: e });
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.drop();
  }
}
