/**
 * The link between one card and one reader slot of vsmartcard's vpcd driver
 * (https://frankmorgner.github.io/vsmartcard/virtualsmartcard/api.html).
 *
 * pcscd's vpcd driver LISTENS on a TCP port per slot; the card CONNECTS to it. Messages
 * (both directions) are framed by frame_reader.ts:
 *
 *   vpcd -> card  len=1  00          power off            (no reply)
 *                 len=1  01          power on             (no reply; GET ATR follows at once)
 *                 len=1  02          reset                (no reply; GET ATR follows at once)
 *                 len=1  04          get ATR              -> reply: ATR bytes
 *                 len=1  other       a client's 1-byte APDU -> reply: R-APDU
 *                 len>1  C-APDU                           -> reply: R-APDU (data || SW1 SW2)
 *                 (nothing)          a client's 0-byte APDU -> reply: R-APDU
 *
 * vpcd sends one command and reads one reply, with no timeout; it polls with GET ATR about
 * every 400 ms per slot. A 1-byte APDU 00/01/02 looks like a control byte and an empty APDU
 * sends nothing: vpcd_connection.ts tells them apart from the kernel's socket queues,
 * never by guessing, and bounds what a peer can make the daemon hold.
 *
 * Presence is proven, not assumed: vpcd keeps listening (backlog) while it serves another
 * connection, so a TCP connect may complete in the kernel's accept queue and never be
 * served. The card counts as in its reader only once vpcd has asked its ATR over THIS
 * connection ('present'). A connection vpcd does not serve within servedTimeoutMs, or a
 * connect that takes longer than connectTimeoutMs (on loopback: the accept queue is full,
 * typically with our previous unserved connection), is closed and retried with backoff;
 * the state ('unserved') and the reason are in status() and on the diagnostics channel.
 *
 * Latency: the driver writes length and payload with two send() calls, so each frame is
 * written here with ONE write, with TCP_NODELAY, and TCP_QUICKACK is re-armed after every
 * read and write (tcp_quickack.ts); without that every APDU takes ~40 ms.
 */
import { channel } from 'node:diagnostics_channel';
import { EventEmitter } from 'node:events';
import net from 'node:net';

import type { ReaderLinkState, ReaderLinkStatus } from '../common/control_protocol.js';
import { TpmvscError } from '../common/errors.js';
import type { SmartCard } from '../common/smart_card.js';
import { armQuickAck } from './tcp_quickack.js';
import { VpcdConnection } from './vpcd_connection.js';

/** How the link waits between connection attempts. */
export interface ReconnectBackoff {
  /** First delay after a failure, in ms. Default 50. */
  initialMs: number;
  /** Delays double up to this, in ms; reset once vpcd serves a connection. Default 1000. */
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
  /** How long a TCP connect may take, in ms. Default 2000. */
  connectTimeoutMs?: number;
  /** How long vpcd may take to ask the ATR of a new connection before it is closed, in ms. Default 2000. */
  servedTimeoutMs?: number;
  /** How long close() waits for vpcd to acknowledge the disconnection, in ms. Default 1000. */
  closeTimeoutMs?: number;
  /** Silence after 00/01/02 before the link finds out whether vpcd waits for a reply, in ms. Default 50. */
  controlGraceMs?: number;
  /** Silence with nothing pending after which the link looks for a zero-length APDU, in ms. Default 2000. */
  idleProbeMs?: number;
  /** Without a socket-queue probe: silence after 00/01/02 that ends the connection, in ms. Default 1500. */
  fallbackSilenceMs?: number;
}

/** Why a connection ended. */
export type DisconnectReason = 'peer_closed' | 'socket_error' | 'protocol_error' | 'closed_by_card' | 'not_served' | 'connect_timeout';

export interface VpcdLinkEvents {
  /** A TCP connection to the driver's port is open (not yet proof of anything). */
  connected: [];
  /** The connection ended: the card is absent until vpcd serves a link again (state 'present'). */
  disconnected: [reason: DisconnectReason, detail: string];
  /**
   * The driver powered the card on (or reset it) and the link has answered the GET ATR that
   * follows: the driver's power-up call has returned, so pcscd now shows the card present.
   */
  powered: [];
}

/**
 * Diagnostics, one message per event: `{ port, event, detail? }`. A card whose slot vpcd
 * does not serve reports 'unserved' once, not for every retry, and 'served' when it is.
 */
export const vpcdLinkChannel = channel('tpmvsc:vpcd_link');

export interface VpcdLinkDiagnostic {
  port: number;
  event: 'connected' | 'served' | 'unserved' | 'disconnected' | 'protocol_error' | 'card_error' | 'apdu_answered' | 'closed';
  detail?: string;
}

function isLoopback(host: string): boolean {
  if (net.isIPv4(host)) return host.startsWith('127.');
  return host === '::1';
}

/**
 * Serves one SmartCard in one vpcd slot: connects, proves that vpcd serves the connection,
 * reconnects with backoff when pcscd restarts, and leaves the reader on close().
 */
export class VpcdLink extends EventEmitter<VpcdLinkEvents> {
  readonly port: number;
  readonly host: string;
  private readonly card: SmartCard;
  private readonly quickAck: boolean;
  private readonly backoff: ReconnectBackoff;
  private readonly connectTimeoutMs: number;
  private readonly servedTimeoutMs: number;
  private readonly closeTimeoutMs: number;
  private readonly connectionOptions: ConstructorParameters<typeof VpcdConnection>[2];

  private socket: net.Socket | null = null;
  private connection: VpcdConnection | null = null;
  private started = false;
  /** Set by close(): no new connection, no reconnection. */
  private closeRequested = false;
  private closing: Promise<void> | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private nextDelayMs: number;
  private linkState: ReaderLinkState = 'stopped';
  private stateSince = Date.now();
  private problem: string | null = null;
  /** 'unserved' was reported and no connection has been served since. */
  private unservedReported = false;
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
    this.connectTimeoutMs = options.connectTimeoutMs ?? 2000;
    this.servedTimeoutMs = options.servedTimeoutMs ?? 2000;
    this.closeTimeoutMs = options.closeTimeoutMs ?? 1000;
    this.connectionOptions = {
      quickAck: this.quickAck,
      graceMs: options.controlGraceMs ?? 50,
      idleMs: options.idleProbeMs ?? 2000,
      fallbackSilenceMs: options.fallbackSilenceMs ?? 1500,
    };
    this.nextDelayMs = this.backoff.initialMs;
  }

  /** True while vpcd serves this link: the card is in its reader. */
  get connected(): boolean {
    return this.linkState === 'present';
  }

  /** Where the link stands, since when, and the last reason it is not in the reader. */
  status(): ReaderLinkStatus {
    return { state: this.linkState, since: new Date(this.stateSince).toISOString(), problem: this.problem };
  }

  /** Starts connecting (and reconnecting until close()). Idempotent. */
  start(): this {
    if (this.started || this.closeRequested) return this;
    this.started = true;
    this.connect();
    return this;
  }

  /**
   * Removes the card from its reader: waits until the command with the card is answered
   * (never cuts an APDU in flight), closes the connection and stops reconnecting.
   * Idempotent; resolves once the socket is gone.
   */
  close(): Promise<void> {
    this.closeRequested = true;
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    const connection = this.connection;
    if (connection) await connection.whenIdle();
    const socket = this.socket;
    if (socket && !socket.destroyed) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => socket.destroy(), this.closeTimeoutMs);
        socket.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
        // FIN after the last reply has been flushed: the driver sees the card leave.
        if (this.linkState === 'present') socket.end();
        else socket.destroy();
      });
    }
    this.setState('stopped', null);
    this.publish('closed');
  }

  private setState(state: ReaderLinkState, problem: string | null): void {
    if (state !== this.linkState) this.stateSince = Date.now();
    this.linkState = state;
    this.problem = problem;
  }

  private connect(): void {
    if (this.closeRequested) return;
    const socket = net.connect({ host: this.host, port: this.port });
    socket.setNoDelay(true);
    this.socket = socket;
    this.connection = null;
    if (this.linkState !== 'unserved') this.setState('connecting', this.problem);
    // Refused at once when nobody listens; a full accept queue drops the SYN and would hang.
    const connectTimer = setTimeout(() => this.drop(socket, 'connect_timeout', `no TCP connection within ${this.connectTimeoutMs} ms`), this.connectTimeoutMs);
    let servedTimer: NodeJS.Timeout | null = null;
    let connection: VpcdConnection | null = null;

    socket.on('connect', () => {
      clearTimeout(connectTimer);
      if (this.quickAck) armQuickAck(socket);
      connection = new VpcdConnection(socket, this.card, this.connectionOptions, {
        atrAnswered: (afterPowerUp) => {
          if (this.linkState !== 'present' && this.socket === socket) this.onServed(servedTimer);
          if (afterPowerUp) this.emit('powered');
        },
        violation: (detail) => this.drop(socket, 'protocol_error', detail),
        notice: (event, detail) => this.publish(event, detail),
      });
      this.connection = connection;
      const onData = connection.onData.bind(connection);
      socket.on('data', onData);
      // Not served yet (vpcd takes a new connection at its next poll, within ~400 ms).
      if (this.linkState !== 'unserved') this.setState('unserved', this.explain('not_served', ''));
      const notServed = `vpcd did not ask the card's ATR within ${this.servedTimeoutMs} ms of the TCP connection`;
      servedTimer = setTimeout(() => this.drop(socket, 'not_served', `${notServed} (another connection holds its port, or it is not vpcd)`), this.servedTimeoutMs);
      if (!this.unservedReported) this.publish('connected');
      this.emit('connected');
    });
    socket.on('error', (error: NodeJS.ErrnoException) => {
      if (!this.failures.has(socket)) this.failures.set(socket, { reason: 'socket_error', detail: error.code ?? error.message });
    });
    socket.on('close', () => {
      clearTimeout(connectTimer);
      if (servedTimer) clearTimeout(servedTimer);
      connection?.dispose();
      const ours = this.socket === socket;
      const wasPresent = ours && this.linkState === 'present';
      const failure = this.failures.get(socket);
      if (ours) {
        this.connection = null;
        this.socket = null;
      }
      const reason = failure?.reason ?? (this.closeRequested ? 'closed_by_card' : 'peer_closed');
      const detail = failure?.detail ?? '';
      const unserved = reason === 'not_served' || reason === 'connect_timeout';
      if (ours && !this.closeRequested) this.setState(unserved ? 'unserved' : 'connecting', this.explain(reason, detail));
      if (unserved && !this.unservedReported) {
        this.unservedReported = true;
        this.publish('unserved', detail);
      }
      if (wasPresent) {
        this.publish('disconnected', `${reason}${detail ? `: ${detail}` : ''}`);
        this.emit('disconnected', reason, detail);
      }
      this.scheduleReconnect();
    });
  }

  private onServed(servedTimer: NodeJS.Timeout | null): void {
    if (servedTimer) clearTimeout(servedTimer);
    this.setState('present', null);
    this.nextDelayMs = this.backoff.initialMs;
    this.unservedReported = false;
    this.publish('served');
  }

  /** A reason a person can act on. */
  private explain(reason: DisconnectReason, detail: string): string {
    switch (reason) {
      case 'not_served':
        return 'connected, not served by vpcd';
      case 'connect_timeout':
        // On loopback a listening port answers at once, unless its accept queue is full.
        return `not served by vpcd: port ${this.port} accepts no new connection, another connection holds the reader`;
      case 'socket_error':
        if (detail === 'ECONNREFUSED') return `nobody listens on vpcd port ${this.port} (pcscd down, or not configured for this reader)`;
        return `vpcd port ${this.port}: ${detail}`;
      case 'protocol_error':
        return `the peer broke the vpcd protocol: ${detail}`;
      default:
        return 'vpcd closed the connection (pcscd stopping or restarting)';
    }
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

  /** Ends a connection; the link reconnects. */
  private drop(socket: net.Socket, reason: DisconnectReason, detail: string): void {
    if (socket.destroyed) return;
    this.failures.set(socket, { reason, detail });
    if (reason === 'protocol_error') this.publish('protocol_error', detail);
    socket.destroy();
  }

  private publish(event: VpcdLinkDiagnostic['event'], detail?: string): void {
    if (!vpcdLinkChannel.hasSubscribers) return;
    const message: VpcdLinkDiagnostic = detail === undefined ? { port: this.port, event } : { port: this.port, event, detail };
    vpcdLinkChannel.publish(message);
  }
}
