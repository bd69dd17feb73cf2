/**
 * A typed, promise-based PC/SC client over the `pcsclite` npm binding (libpcsclite in
 * this process), for tpmvscmgr (admin operations on a card), tests and benchmarks.
 * In tests call PcscdInstance.useInThisProcess() before
 * openPcsc(): libpcsclite reads PCSCLITE_CSOCK_NAME once per process.
 */
import type { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';

type Callback<T> = (error: Error | null | undefined, value: T) => void;

/** The part of the binding's CardReader we use (its own typings use `any`). */
interface NativeReader extends EventEmitter {
  readonly name: string;
  readonly connected: boolean;
  readonly SCARD_SHARE_SHARED: number;
  readonly SCARD_SHARE_EXCLUSIVE: number;
  readonly SCARD_PROTOCOL_T0: number;
  readonly SCARD_PROTOCOL_T1: number;
  readonly SCARD_STATE_PRESENT: number;
  readonly SCARD_LEAVE_CARD: number;
  readonly SCARD_RESET_CARD: number;
  readonly SCARD_UNPOWER_CARD: number;
  connect(options: { share_mode?: number; protocol?: number }, callback: Callback<number>): void;
  disconnect(disposition: number, callback: (error: Error | null | undefined) => void): void;
  transmit(data: Buffer, responseLength: number, protocol: number, callback: Callback<Buffer>): void;
  close(): void;
}

interface NativePcsc extends EventEmitter {
  close(): void;
}

type Disposition = 'leave' | 'reset' | 'unpower';

export interface PcscConnection {
  readonly protocol: number;
  /** Sends one APDU, resolves with the response (data || SW1 SW2). */
  transmit(apdu: Uint8Array, maxResponseLength?: number): Promise<Buffer>;
  disconnect(disposition?: Disposition): Promise<void>;
}

export interface PcscClient {
  /** Reader names seen so far. */
  readerNames(): string[];
  /** Resolves once the reader exists. */
  waitForReader(name: string, timeoutMs?: number): Promise<void>;
  /** Resolves once a card is present (or absent) in the reader; resolves with its ATR when present. */
  waitForCard(name: string, present: boolean, timeoutMs?: number): Promise<Buffer | null>;
  /** SCardConnect (T=1 or T=0), shared unless `exclusive` (no other client in between). */
  connect(name: string, options?: { exclusive?: boolean }): Promise<PcscConnection>;
  close(): void;
}

interface ReaderState {
  reader: NativeReader;
  present: boolean;
  atr: Buffer | null;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function waitUntil(condition: () => boolean, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}

export function openPcsc(): PcscClient {
  const require = createRequire(import.meta.url);
  const pcsclite = require('pcsclite') as () => NativePcsc;
  const pcsc = pcsclite();
  const readers = new Map<string, ReaderState>();
  let lastError: Error | null = null;
  let closed = false;

  pcsc.on('error', (error: Error) => {
    lastError = error;
  });
  pcsc.on('reader', (reader: NativeReader) => {
    const state: ReaderState = { reader, present: false, atr: null };
    readers.set(reader.name, state);
    reader.on('error', (error: Error) => {
      lastError = error;
    });
    reader.on('status', (status: { state: number; atr?: Buffer }) => {
      state.present = (status.state & reader.SCARD_STATE_PRESENT) !== 0;
      state.atr = state.present && status.atr ? Buffer.from(status.atr) : null;
    });
    reader.on('end', () => {
      readers.delete(reader.name);
    });
  });

  const describe = (what: string) => (lastError ? `${what} (last PC/SC error: ${lastError.message})` : what);

  return {
    readerNames: () => [...readers.keys()],
    waitForReader: (name, timeoutMs = 5000) => waitUntil(() => readers.has(name), timeoutMs, describe(`reader "${name}"`)),
    async waitForCard(name, present, timeoutMs = 5000) {
      await waitUntil(() => readers.get(name)?.present === present, timeoutMs, describe(`card ${present ? 'in' : 'out of'} "${name}"`));
      return readers.get(name)?.atr ?? null;
    },
    connect(name, options = {}) {
      const state = readers.get(name);
      if (!state) return Promise.reject(new Error(`no reader "${name}"`));
      const reader = state.reader;
      return new Promise<PcscConnection>((resolve, reject) => {
        const shareMode = options.exclusive ? reader.SCARD_SHARE_EXCLUSIVE : reader.SCARD_SHARE_SHARED;
        reader.connect({ share_mode: shareMode, protocol: reader.SCARD_PROTOCOL_T1 | reader.SCARD_PROTOCOL_T0 }, (error, protocol) => {
          if (error) return reject(error);
          resolve({
            protocol,
            transmit: (apdu, maxResponseLength = 65538) =>
              new Promise<Buffer>((done, fail) => {
                reader.transmit(Buffer.from(apdu), maxResponseLength, protocol, (transmitError, response) =>
                  transmitError ? fail(transmitError) : done(response),
                );
              }),
            disconnect: (disposition = 'leave') =>
              new Promise<void>((done, fail) => {
                const code = { leave: reader.SCARD_LEAVE_CARD, reset: reader.SCARD_RESET_CARD, unpower: reader.SCARD_UNPOWER_CARD }[disposition];
                reader.disconnect(code, (disconnectError) => (disconnectError ? fail(disconnectError) : done()));
              }),
          });
        });
      });
    },
    close() {
      if (closed) return;
      closed = true;
      for (const { reader } of readers.values()) reader.close();
      readers.clear();
      pcsc.close();
    },
  };
}
