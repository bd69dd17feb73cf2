/**
 * The link between one card and one reader slot of vsmartcard's vpcd driver
 * (https://frankmorgner.github.io/vsmartcard/virtualsmartcard/api.html).
 *
 * pcscd's vpcd driver LISTENS on a TCP port per slot; the card CONNECTS to it. While
 * the card is connected and answering, the reader shows it as present; closing the
 * socket removes it. Messages (both directions) are framed by frame_reader.ts:
 *
 *   vpcd -> card  len=1  00          power off            (no reply)
 *                 len=1  01          power on             (no reply)
 *                 len=1  02          reset                (no reply)
 *                 len=1  04          get ATR              -> reply: ATR bytes
 *                 len>1  C-APDU                           -> reply: R-APDU (data || SW1 SW2)
 *
 * The driver waits for a reply with no timeout, one APDU at a time. It polls with
 * GET ATR about every 400 ms per slot.
 *
 * One-byte APDUs: the driver forwards a client's 1-byte C-APDU as a 1-byte message, which
 * reads as a control byte, and then waits for a reply that a control byte never gets: the
 * reader would hang for good. A real power on or reset is followed at once by GET ATR,
 * a real power off by the next poll; so when a no-reply control byte is followed by
 * silence (oneByteApduTimeoutMs), the driver must be waiting on such an APDU, and the link
 * drops the connection (the client's transmit fails, the card comes back at once). A
 * reply could not be safe: were the guess wrong, every later answer would be off by one.
 *
 * Latency: the driver writes length and payload with two send() calls, so each
 * frame is written here with ONE write, with TCP_NODELAY, and TCP_QUICKACK is re-armed
 * after every read and write (tcp_quickack.ts); without that every APDU takes ~40 ms.
 */
import { channel } from 'node:diagnostics_channel';
import { EventEmitter } from 'node:events';
import net from 'node:net';

import { TpmvscError } from '../common/errors.js';
import type { SmartCard } from '../common/smart_card.js';
import { encodeFrame, FrameReader, MAX_FRAME_PAYLOAD, VpcdFrameError } from './frame_reader.js';
import { armQuickAck } from './tcp_quickack.js';

/** Control bytes, the payload of every 1-byte message from vpcd. */
const enum Control {
  PowerOff = 0x00,
  PowerOn = 0x01,
  Reset = 0x02,
  GetAtr = 0x04,
}

/** ISO 7816-4 "no precise diagnosis": answered when the card misbehaves. */
const SW_NO_PRECISE_DIAGNOSIS = Uint8Array.of(0x6f, 0x00);

/** How the link waits between connection attempts. */
export interface ReconnectBackoff {
  /** First delay after a failure, in ms. Default 50. */
  initialMs: number;
  /** Delays double up to this, in ms; reset after a successful connection. Default 1000. */
  maxMs: number;
}

export interface VpcdLinkOptions {
  /** The card served in this slot. */
  card: SmartCard;
  /** The slot's TCP port (reader_config.ts portOf()). */
  port: number;
  /** Loopback address of pcscd's vpcd driver. Default 127.0.0.1; other hosts are refused. */
  host?: string;
  /** Re-arm TCP_QUICKACK after every read and write. Default true; false only to measure the stall. */
  quickAck?: boolean;
  /** Reconnection delays. Default 50 ms doubling to 1000 ms. */
  backoff?: Partial<ReconnectBackoff>;
  /** How long close() waits for vpcd to acknowledge the disconnection, in ms. Default 1000. */
  closeTimeoutMs?: number;
  /** Silence after a power off/on/reset that means a 1-byte APDU is waiting (see above), in ms. Default 1500. */
  oneByteApduTimeoutMs?: number;
}

/** Why a connection ended. */
export type DisconnectReason = 'peer_closed' | 'socket_error' | 'protocol_error' | 'closed_by_card';

export interface VpcdLinkEvents {
  /** Connected to the driver: the card is (about to be) present in its reader. */
  connected: [];
  /** The connection ended: the card is absent until the next `connected`. */
  disconnected: [reason: DisconnectReason, detail: string];
  /**
   * The driver powered the card on (or reset it) and the link has answered the GET ATR that
   * follows: the driver's power-up call has returned, so pcscd now shows the card present.
   */
  powered: [];
}

/**
 * Diagnostics, one message per event: `{ port, event, detail? }` where event is
 * 'connected' | 'disconnected' | 'protocol_error' | 'card_error' | 'closed'.
 */
export const vpcdLinkChannel = channel('tpmvsc:vpcd_link');

export interface VpcdLinkDiagnostic {
  port: number;
  event: 'connected' | 'disconnected' | 'protocol_error' | 'card_error' | 'closed';
  detail?: string;
}

interface QueuedFrame {
  socket: net.Socket;
  payload: Buffer;
}

function isLoopback(host: string): boolean {
  if (net.isIPv4(host)) return host.startsWith('127.');
  return host === '::1';
}

/**
 * Serves one SmartCard in one vpcd slot: connects, answers frames one at a time in
 * order, reconnects with backoff when pcscd restarts, and leaves the reader on close().
 */
export class VpcdLink extends EventEmitter<VpcdLinkEvents> {
  readonly port: number;
  readonly host: string;
  private readonly card: SmartCard;
  private readonly quickAck: boolean;
  private readonly backoff: ReconnectBackoff;
  private readonly closeTimeoutMs: number;
  private readonly oneByteApduTimeoutMs: number;

  private socket: net.Socket | null = null;
  private reader = new FrameReader();
  private isConnected = false;
  private started = false;
  /** Set by close(): no new connection, no reconnection. */
  private closeRequested = false;
  private closing: Promise<void> | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  /** Armed after a no-reply control byte; any next frame disarms it (see oneByteApduTimeoutMs). */
  private followUpTimer: NodeJS.Timeout | null = null;
  private nextDelayMs: number;

  /** Frames received and not yet handled, across connections: the card sees one at a time. */
  private readonly queue: QueuedFrame[] = [];
  private draining: Promise<void> | null = null;
  /** A power-on or reset was handled and its ATR not read yet (the driver reads it right after). */
  private atrAwaited = false;
  /** Why a connection is being dropped by us, read when its socket closes. */
  private readonly failures = new WeakMap<net.Socket, { reason: DisconnectReason; detail: string }>();

  constructor(options: VpcdLinkOptions) {
    super();
    const host = options.host ?? '127.0.0.1';
    if (!isLoopback(host)) throw new TpmvscError('BAD_REQUEST', `vpcd host must be a loopback address, not ${host}`);
    if (!Number.isInteger(options.port) || options.port < 1 || options.port > 65535) {
      throw new TpmvscError('BAD_REQUEST', `invalid vpcd port ${String(options.port)}`);
    }
    this.host = host;
    this.port = options.port;
    this.card = options.card;
    this.quickAck = options.quickAck ?? true;
    this.backoff = { initialMs: options.backoff?.initialMs ?? 50, maxMs: options.backoff?.maxMs ?? 1000 };
    this.closeTimeoutMs = options.closeTimeoutMs ?? 1000;
    this.oneByteApduTimeoutMs = options.oneByteApduTimeoutMs ?? 1500;
    this.nextDelayMs = this.backoff.initialMs;
  }

  /** True while a connection to the driver is open. */
  get connected(): boolean {
    return this.isConnected;
  }

  /** Starts connecting (and reconnecting until close()). Idempotent. */
  start(): this {
    if (this.started || this.closeRequested) return this;
    this.started = true;
    this.connect();
    return this;
  }

  /**
   * Removes the card from its reader: waits until the frames already received are
   * answered (never cuts an APDU in flight), closes the connection and stops
   * reconnecting. Idempotent; resolves once the socket is gone.
   */
  close(): Promise<void> {
    this.closeRequested = true;
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    while (this.draining) await this.draining;
    const socket = this.socket;
    if (socket && !socket.destroyed) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => socket.destroy(), this.closeTimeoutMs);
        socket.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
        // FIN after the last reply has been flushed: the driver sees the card leave.
        if (this.isConnected) socket.end();
        else socket.destroy();
      });
    }
    this.publish('closed');
  }

  private connect(): void {
    if (this.closeRequested) return;
    const socket = net.connect({ host: this.host, port: this.port });
    socket.setNoDelay(true);
    this.socket = socket;
    this.reader = new FrameReader();

    socket.on('connect', () => {
      this.isConnected = true;
      this.atrAwaited = false;
      this.nextDelayMs = this.backoff.initialMs;
      if (this.quickAck) armQuickAck(socket);
      this.publish('connected');
      this.emit('connected');
    });
    socket.on('data', (chunk: Buffer) => {
      if (this.quickAck) armQuickAck(socket);
      if (this.socket !== socket || this.failures.has(socket)) return;
      let frames: Buffer[];
      try {
        frames = this.reader.push(chunk);
      } catch (error) {
        this.drop(socket, error instanceof VpcdFrameError ? error.message : String(error));
        return;
      }
      for (const payload of frames) this.queue.push({ socket, payload });
      if (frames.length > 0) {
        this.disarmFollowUp();
        this.drain();
      }
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (!this.failures.has(socket)) this.failures.set(socket, { reason: 'socket_error', detail: error.code ?? error.message });
    });
    socket.on('close', () => {
      if (this.socket === socket) this.disarmFollowUp();
      const wasConnected = this.isConnected && this.socket === socket;
      if (this.socket === socket) {
        this.socket = null;
        this.isConnected = false;
      }
      const failure = this.failures.get(socket);
      if (wasConnected) {
        const reason = failure?.reason ?? (this.closeRequested ? 'closed_by_card' : 'peer_closed');
        const detail = failure?.detail ?? '';
        this.publish('disconnected', `${reason}${detail ? `: ${detail}` : ''}`);
        this.emit('disconnected', reason, detail);
      }
      this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    if (this.closeRequested || this.retryTimer) return;
    const delay = this.nextDelayMs;
    this.nextDelayMs = Math.min(this.nextDelayMs * 2, this.backoff.maxMs);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.connect();
    }, delay);
    // A card waiting for pcscd must not keep the process alive on its own.
    this.retryTimer.unref();
  }

  /** Handles queued frames one after another; at most one drain loop runs. */
  private drain(): void {
    if (this.draining) return;
    this.draining = this.drainQueue().finally(() => {
      this.draining = null;
    });
  }

  private async drainQueue(): Promise<void> {
    for (let item = this.queue.shift(); item; item = this.queue.shift()) {
      // Frames of a connection that has gone are dropped: their sender is gone too.
      if (item.socket.destroyed) continue;
      if (item.payload.length === 1) this.handleControl(item.socket, item.payload[0]!);
      else await this.handleApdu(item.socket, item.payload);
    }
  }

  private handleControl(socket: net.Socket, control: number): void {
    try {
      switch (control) {
        case Control.PowerOff:
          this.expectFollowUp(socket);
          this.card.powerOff();
          return;
        case Control.PowerOn:
          this.expectFollowUp(socket);
          this.atrAwaited = true;
          this.card.powerOn();
          return;
        case Control.Reset:
          this.expectFollowUp(socket);
          this.atrAwaited = true;
          this.card.reset();
          return;
        case Control.GetAtr:
          this.reply(socket, this.card.atr);
          if (this.atrAwaited) {
            this.atrAwaited = false;
            this.emit('powered');
          }
          return;
        default: {
          // Unknown control: vpcd might wait for a reply we cannot give; start over.
          this.drop(socket, `unknown control byte 0x${control.toString(16).padStart(2, '0')}`);
          return;
        }
      }
    } catch (error) {
      // A card must not throw here; a power event that failed still happened.
      this.publish('card_error', error instanceof Error ? error.message : String(error));
    }
  }

  private async handleApdu(socket: net.Socket, command: Buffer): Promise<void> {
    let response: Uint8Array;
    try {
      response = await this.card.transmit(command);
    } catch (error) {
      this.publish('card_error', error instanceof Error ? error.message : String(error));
      response = SW_NO_PRECISE_DIAGNOSIS;
    }
    if (response.length < 2 || response.length > MAX_FRAME_PAYLOAD) {
      this.publish('card_error', `card answered ${response.length} bytes`);
      response = SW_NO_PRECISE_DIAGNOSIS;
    }
    this.reply(socket, response);
  }

  /**
   * After a control byte that gets no reply: unless another frame arrives soon, the driver
   * is waiting for the answer to a 1-byte APDU (see the top of this file): start over.
   */
  private expectFollowUp(socket: net.Socket): void {
    // A frame already queued behind this one is the follow-up.
    if (this.queue.some((item) => item.socket === socket)) return;
    this.disarmFollowUp();
    this.followUpTimer = setTimeout(() => {
      this.followUpTimer = null;
      if (socket === this.socket && !socket.destroyed) this.drop(socket, 'a 1-byte APDU (vpcd cannot carry one): connection reset');
    }, this.oneByteApduTimeoutMs);
    this.followUpTimer.unref();
  }

  private disarmFollowUp(): void {
    if (this.followUpTimer) clearTimeout(this.followUpTimer);
    this.followUpTimer = null;
  }

  /** Ends a connection whose peer broke the protocol; the link reconnects. */
  private drop(socket: net.Socket, detail: string): void {
    this.failures.set(socket, { reason: 'protocol_error', detail });
    this.publish('protocol_error', detail);
    socket.destroy();
  }

  private reply(socket: net.Socket, payload: Uint8Array): void {
    if (socket.destroyed || !socket.writable) return;
    socket.write(encodeFrame(payload));
    // Sending took the socket out of quick-ACK mode: re-arm before the next command arrives.
    if (this.quickAck) armQuickAck(socket);
  }

  private publish(event: VpcdLinkDiagnostic['event'], detail?: string): void {
    if (!vpcdLinkChannel.hasSubscribers) return;
    const message: VpcdLinkDiagnostic = detail === undefined ? { port: this.port, event } : { port: this.port, event, detail };
    vpcdLinkChannel.publish(message);
  }
}
