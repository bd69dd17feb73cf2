/**
 * libpcsclite called directly (koffi), for what the `pcsclite` binding cannot do: several
 * connections to one reader from one process (the binding keeps one card handle per
 * reader), SCardBeginTransaction / SCardEndTransaction, and SCardReconnect. Each
 * `WinscardApp` is its own SCARDCONTEXT, i.e. what two separate applications would have.
 * Every call runs on koffi's worker threads (`.async`): a transaction waiting for another
 * application's transaction never blocks the event loop.
 *
 * Call PcscdInstance.useInThisProcess() first: libpcsclite reads PCSCLITE_CSOCK_NAME once.
 *
 * pcsc-lite on Linux/x86-64 (winscard.h, pcsclite.h): LONG = long, DWORD = unsigned long,
 * SCARDCONTEXT = SCARDHANDLE = long (all 8 bytes);
 *   SCARD_IO_REQUEST { unsigned long dwProtocol; unsigned long cbPciLength; }   // 16 bytes
 */
import koffi from 'koffi';
import type { PcscConnection } from './pcsc_client.js';

const SCARD_SCOPE_SYSTEM = 2;
const SCARD_SHARE_SHARED = 2;
const SCARD_PROTOCOL_ANY = 1 | 2;
const DISPOSITION = { leave: 0, reset: 1, unpower: 2 } as const;
export type Disposition = keyof typeof DISPOSITION;

/** pcsc-lite return codes the tests look at (pcsclite.h). */
export const SCARD = {
  S_SUCCESS: 0,
  E_SHARING_VIOLATION: 0x8010000b,
  E_NO_SMARTCARD: 0x8010000c,
  E_READER_UNAVAILABLE: 0x80100017,
  W_UNRESPONSIVE_CARD: 0x80100066,
  W_UNPOWERED_CARD: 0x80100067,
  W_RESET_CARD: 0x80100068,
  W_REMOVED_CARD: 0x80100069,
} as const;

/** A failed PC/SC call, with pcsc-lite's code (compare with SCARD.*). */
export class WinscardError extends Error {
  constructor(
    readonly call: string,
    readonly code: number,
  ) {
    super(`${call} failed: 0x${code.toString(16).padStart(8, '0')}`);
  }
}

type Handle = number | bigint;
type AsyncCall = (...args: unknown[]) => void;

interface Library {
  establishContext: AsyncCall;
  releaseContext: AsyncCall;
  connect: AsyncCall;
  reconnect: AsyncCall;
  disconnect: AsyncCall;
  beginTransaction: AsyncCall;
  endTransaction: AsyncCall;
  transmit: AsyncCall;
  status: AsyncCall;
}

let library: Library | undefined;

function load(): Library {
  if (library) return library;
  const lib = koffi.load('libpcsclite.so.1');
  const asyncOf = (signature: string): AsyncCall => lib.func(signature).async as AsyncCall;
  library = {
    establishContext: asyncOf('long SCardEstablishContext(unsigned long scope, void *r1, void *r2, _Out_ long *context)'),
    releaseContext: asyncOf('long SCardReleaseContext(long context)'),
    connect: asyncOf(
      'long SCardConnect(long context, const char *reader, unsigned long share, unsigned long protocols, _Out_ long *card, _Out_ unsigned long *protocol)',
    ),
    reconnect: asyncOf('long SCardReconnect(long card, unsigned long share, unsigned long protocols, unsigned long init, _Out_ unsigned long *protocol)'),
    disconnect: asyncOf('long SCardDisconnect(long card, unsigned long disposition)'),
    beginTransaction: asyncOf('long SCardBeginTransaction(long card)'),
    endTransaction: asyncOf('long SCardEndTransaction(long card, unsigned long disposition)'),
    transmit: asyncOf(
      'long SCardTransmit(long card, const uint8_t *sendPci, const uint8_t *send, unsigned long sendLength, void *recvPci, _Out_ uint8_t *recv, _Inout_ unsigned long *recvLength)',
    ),
    status: asyncOf(
      'long SCardStatus(long card, _Out_ uint8_t *names, _Inout_ unsigned long *namesLength, _Out_ unsigned long *state, _Out_ unsigned long *protocol, _Out_ uint8_t *atr, _Inout_ unsigned long *atrLength)',
    ),
  };
  return library;
}

/**
 * How long one PC/SC call may take. pcsc-lite has no timeout of its own: a card that never
 * answers vpcd blocks the driver, the reader and every call queued behind it for ever, so a
 * test would hang until ava's global timeout without saying where.
 */
export const DEFAULT_CALL_TIMEOUT_MS = 60_000;

/** A PC/SC call that did not return in time (it is still blocked on its worker thread). */
export class WinscardTimeout extends Error {
  constructor(
    readonly call: string,
    readonly timeoutMs: number,
    reader?: string,
  ) {
    super(`${call}${reader === undefined ? '' : ` on "${reader}"`} did not return within ${timeoutMs} ms: pcscd never answered (the card in the reader, or pcscd itself, is stuck)`);
  }
}

/** Where a call goes and how long it may take, for WinscardTimeout's message. */
interface CallBound {
  timeoutMs: number;
  reader?: string;
}

/** Runs one library call on a worker thread; resolves with its LONG result as an unsigned code. */
function call(name: string, bound: CallBound, fn: AsyncCall, ...args: unknown[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new WinscardTimeout(name, bound.timeoutMs, bound.reader)), bound.timeoutMs);
    fn(...args, (error: unknown, result: number | bigint) => {
      clearTimeout(timer);
      if (error) reject(error instanceof Error ? error : new Error(String(error)));
      else resolve(Number(BigInt.asUintN(32, BigInt(result))));
    });
  });
}

async function check(name: string, bound: CallBound, fn: AsyncCall, ...args: unknown[]): Promise<void> {
  const code = await call(name, bound, fn, ...args);
  if (code !== SCARD.S_SUCCESS) throw new WinscardError(name, code);
}

/** SCARD_IO_REQUEST for a protocol: dwProtocol, cbPciLength = 16. */
function ioRequest(protocol: number): Buffer {
  const pci = Buffer.alloc(16);
  pci.writeBigUInt64LE(BigInt(protocol), 0);
  pci.writeBigUInt64LE(16n, 8);
  return pci;
}

export interface WinscardConnection extends PcscConnection {
  /** SCardBeginTransaction: waits while another handle holds the card. */
  beginTransaction(): Promise<void>;
  endTransaction(disposition?: Disposition): Promise<void>;
  /** SCardReconnect in shared mode, with this initialisation ('reset' resets the card). */
  reconnect(initialization: Disposition): Promise<void>;
  /**
   * SCardStatus: the reader state bits (SCARD_STATE.*) and the ATR. Throws WinscardError with
   * W_REMOVED_CARD / W_RESET_CARD when the card left or was reset since this handle last looked.
   */
  status(): Promise<{ state: number; atr: Buffer }>;
}

/** Reader state bits of SCardStatus (pcsclite.h). */
export const SCARD_STATE = { ABSENT: 0x0002, PRESENT: 0x0004, POWERED: 0x0010 } as const;

export interface WinscardApp {
  /** SCardConnect, shared; throws WinscardError (e.g. E_NO_SMARTCARD while the card is out). */
  connect(reader: string): Promise<WinscardConnection>;
  close(): Promise<void>;
}

/**
 * A new PC/SC context: one "application". Every call fails with WinscardTimeout after
 * `callTimeoutMs` (default DEFAULT_CALL_TIMEOUT_MS).
 */
export async function openWinscardApp(options: { callTimeoutMs?: number } = {}): Promise<WinscardApp> {
  const lib = load();
  const contextBound: CallBound = { timeoutMs: options.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS };
  const contextOut: Handle[] = [0];
  await check('SCardEstablishContext', contextBound, lib.establishContext, SCARD_SCOPE_SYSTEM, null, null, contextOut);
  const context = contextOut[0]!;
  return {
    async connect(reader) {
      const bound: CallBound = { ...contextBound, reader };
      const cardOut: Handle[] = [0];
      const protocolOut: number[] = [0];
      await check('SCardConnect', bound, lib.connect, context, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, cardOut, protocolOut);
      const card = cardOut[0]!;
      let protocol = Number(protocolOut[0]);
      return {
        get protocol() {
          return protocol;
        },
        async transmit(apdu, maxResponseLength = 65538) {
          const response = Buffer.alloc(maxResponseLength);
          const length: number[] = [maxResponseLength];
          await check('SCardTransmit', bound, lib.transmit, card, ioRequest(protocol), Buffer.from(apdu), apdu.length, null, response, length);
          return response.subarray(0, Number(length[0]));
        },
        async status() {
          const names = Buffer.alloc(256);
          const atr = Buffer.alloc(33);
          const namesLength = [names.length];
          const state = [0];
          const protocolOut = [0];
          const atrLength = [atr.length];
          await check('SCardStatus', bound, lib.status, card, names, namesLength, state, protocolOut, atr, atrLength);
          return { state: Number(state[0]), atr: atr.subarray(0, Number(atrLength[0])) };
        },
        disconnect: (disposition = 'leave') => check('SCardDisconnect', bound, lib.disconnect, card, DISPOSITION[disposition]),
        beginTransaction: () => check('SCardBeginTransaction', bound, lib.beginTransaction, card),
        endTransaction: (disposition = 'leave') => check('SCardEndTransaction', bound, lib.endTransaction, card, DISPOSITION[disposition]),
        async reconnect(initialization) {
          const out: number[] = [0];
          await check('SCardReconnect', bound, lib.reconnect, card, SCARD_SHARE_SHARED, SCARD_PROTOCOL_ANY, DISPOSITION[initialization], out);
          protocol = Number(out[0]);
        },
      };
    },
    close: () => check('SCardReleaseContext', contextBound, lib.releaseContext, context),
  };
}
