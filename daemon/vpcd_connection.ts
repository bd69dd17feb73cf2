/**
 * One TCP connection to vpcd, frame by frame: answers what vpcd asks, never a reply vpcd
 * does not wait for, never two replies for one command, and refuses a peer that breaks
 * the protocol. The connection's life (connecting, retrying, closing) is vpcd_link.ts's.
 *
 * What vpcd does (vsmartcard 3.3, src/vpcd/vpcd.c and src/ifd-vpcd/ifd-vpcd.c; pcsc-lite
 * 1.9.9 holds the reader's mutex around each driver call, so calls never interleave):
 *   - a command (vicc_transmit): sends it as one frame, then reads exactly one reply frame,
 *     with no timeout. A command of 0 bytes sends nothing and still reads a reply. A client's
 *     1-byte APDU is sent as a 1-byte frame. Nothing else is sent on the link meanwhile.
 *   - power on: `01` (no reply), then at once GET ATR `04` (reply) in the same driver call;
 *     reset: `02`, then `04` likewise; power off: `00` (no reply).
 *   - presence poll: `04` every ~400 ms while idle (pcscd's event thread, which also sends the
 *     `00` of its automatic power-off and polls again at once).
 *
 * So a 1-byte frame is unambiguous except `00`, `01`, `02`: a control byte (no reply) or a
 * client's 1-byte APDU (vpcd blocks until it gets a reply), and a zero-length command is
 * invisible. A wrong guess either way is fatal: a reply vpcd does not wait for is read later
 * as the answer to its next command (every answer after it off by one), a reply withheld
 * leaves vpcd, the reader and every client of it blocked for ever. Time cannot tell them
 * apart (pcscd may be stopped or starved between `01` and its `04`). The link decides from
 * the kernel's socket queues instead:
 *
 *   1. `00`/`01`/`02` take effect on the card at once (every authentication is lost, as for
 *      a reset, which any PC/SC client may ask for anyway) and get no reply.
 *   2. Any frame that follows proves it was a control byte: vpcd sent something more, so it
 *      was not waiting. Normally `04` follows within a millisecond.
 *   3. After `graceMs` of silence the link writes ONE byte, `00`: the high byte of the
 *      length of the next reply, whatever it turns out to be (an ATR or a status word, both
 *      shorter than 256 bytes). It is harmless either way: vpcd reads it as the start of the
 *      reply it waits for, or it stays in vpcd's socket until vpcd's next command, whose
 *      reply then goes out without its first byte.
 *   4. vpcd_read_probe.ts then watches for the instant at which vpcd has read that byte and
 *      has sent nothing more: only a vpcd blocked waiting for a reply reads without sending
 *      first. Then the byte was a 1-byte APDU: the card answers it (6700, wrong length) and
 *      the reply is completed. If a frame arrives first, step 2 applies.
 *   5. A zero-length command shows only as silence: no poll for `idleMs` while nothing is
 *      pending. The link writes the `00` and probes the same way; proven, the card answers
 *      the empty command (6700).
 *
 * Both checks rest on vpcd's code, not on timing: no stop, delay or load of pcscd at any
 * moment can make the link answer a command vpcd did not send or withhold one it did.
 * Residual: while a `00` is written ahead (pcscd silent since a control byte), a command of
 * 4 bytes or more from vpcd, which pcsc-lite does not send before the GET ATR of a power-up,
 * is answered 6F00 without reaching the card (its reply might not fit behind the `00`).
 * Without the probe (no koffi, no /proc/net/tcp, not IPv4) the link falls back to ending the
 * connection after `fallbackSilenceMs` of silence after `00`/`01`/`02` (the card leaves the
 * reader and comes back; never a wrong answer).
 *
 * Bounds: vpcd sends one command and waits, so at most one command is ever with the card.
 * A byte that arrives while a reply is owed, or after a GET ATR before its reply went out,
 * a zero-length frame, or more than MAX_CONTROL_RUN control bytes in a row is a protocol
 * violation: the connection is dropped, never queued. Memory is one socket chunk plus at
 * most one frame (64 KiB) whatever the peer sends.
 */
import type net from 'node:net';

import type { SmartCard } from '../common/smart_card.js';
import { encodeFrame, FrameReader, MAX_FRAME_PAYLOAD, VpcdFrameError } from './frame_reader.js';
import { armQuickAck } from './tcp_quickack.js';
import { probeAvailable, probeDriverReading } from './vpcd_read_probe.js';

/** Control bytes, the payload of 1-byte messages from vpcd. */
const enum Control {
  PowerOff = 0x00,
  PowerOn = 0x01,
  Reset = 0x02,
  GetAtr = 0x04,
}

/** ISO 7816-4 "no precise diagnosis": answered when the card misbehaves or cannot be asked. */
const SW_NO_PRECISE_DIAGNOSIS = Uint8Array.of(0x6f, 0x00);

/** Consecutive no-reply control bytes vpcd can send (`00 01` of an unpowering reconnect, then `04`), with room. */
export const MAX_CONTROL_RUN = 4;

/** Probe intervals after the `00` went out: quick at first (vpcd acknowledges within ~40 ms), then every 500 ms. */
const PROBE_DELAYS_MS = [1, 2, 5, 10, 20, 40, 80, 160, 320, 500];

export interface VpcdConnectionOptions {
  /** Re-arm TCP_QUICKACK after every read and write (tcp_quickack.ts). */
  quickAck: boolean;
  /** Silence after `00`/`01`/`02` before the reply's first byte is written and probed (step 3). */
  graceMs: number;
  /** Silence with nothing pending after which a zero-length command is probed for (step 5). */
  idleMs: number;
  /** Without a usable probe: silence after `00`/`01`/`02` that ends the connection. */
  fallbackSilenceMs: number;
}

export interface VpcdConnectionHooks {
  /** A GET ATR was answered; `afterPowerUp`: the first since a power-on or reset. */
  atrAnswered(afterPowerUp: boolean): void;
  /** The peer broke the protocol: end the connection. */
  violation(detail: string): void;
  /** Something worth a log line (a 1-byte or empty APDU answered, a card failure). */
  notice(event: 'card_error' | 'apdu_answered', detail: string): void;
}

/** Why the link wrote the first byte of a reply ahead: a control byte that may be an APDU, or silence. */
type Doubt = { kind: 'control'; byte: number } | { kind: 'silence' };

export class VpcdConnection {
  /** Bytes read from and written to the socket (vpcd_read_probe.ts compares them). */
  bytesIn = 0;
  bytesOut = 0;
  private readonly reader = new FrameReader();
  /** A command is with the card; vpcd waits for its reply and must send nothing. */
  private replyOwed = false;
  /** The `00` high length byte of the next reply is already on the wire. */
  private prefixWritten = false;
  private doubt: Doubt | null = null;
  private controlRun = 0;
  /** A power-on or reset was received; its GET ATR has not been answered yet. */
  private atrAwaited = false;
  /** Frames received and replies sent: the idle check looks for a period without either. */
  private activity = 0;
  private served = false;
  private closed = false;
  private doubtTimer: NodeJS.Timeout | null = null;
  private readonly idleTimer: NodeJS.Timeout;
  private activityAtLastIdleCheck = -1;
  /** When an idle check last saw activity change (performance.now()). */
  private lastActiveAt = performance.now();
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly socket: net.Socket,
    private readonly card: SmartCard,
    private readonly options: VpcdConnectionOptions,
    private readonly hooks: VpcdConnectionHooks,
  ) {
    // A frame counter checked by an interval costs the APDU path nothing (no timer per frame).
    this.idleTimer = setInterval(() => this.checkIdle(), options.idleMs / 4);
    this.idleTimer.unref();
  }

  /** Every chunk read from the socket. */
  onData(chunk: Buffer): void {
    if (this.closed) return;
    if (this.options.quickAck) armQuickAck(this.socket);
    this.bytesIn += chunk.length;
    if (this.replyOwed) return this.violate('vpcd sent more while a command was with the card');
    this.reader.push(chunk);
    for (;;) {
      let frame: Buffer | undefined;
      try {
        frame = this.reader.next();
      } catch (error) {
        return this.violate(error instanceof VpcdFrameError ? error.message : String(error));
      }
      if (!frame) break;
      const expectsReply = this.handleFrame(frame);
      if (this.closed) return;
      // vpcd reads the reply before it sends anything else: bytes that came with the command did not wait for it.
      if (expectsReply && this.reader.buffered > 0) {
        return this.violate('vpcd sent a command before reading the reply to the previous one');
      }
    }
    if (this.doubt?.kind === 'control' && !this.doubtTimer) this.armDoubt();
  }

  /** Resolves once no command is with the card (close() waits for the reply in flight). */
  whenIdle(): Promise<void> {
    if (!this.replyOwed) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** The socket is gone: stop every timer. */
  dispose(): void {
    this.closed = true;
    clearInterval(this.idleTimer);
    this.clearDoubt();
  }

  /** Handles one frame; true when it is a command (vpcd now waits for a reply). */
  private handleFrame(frame: Buffer): boolean {
    this.activity++;
    // Whatever came before this frame did not leave vpcd waiting (step 2).
    if (this.doubt) this.clearDoubt();
    if (frame.length === 1) {
      const byte = frame[0]!;
      if (byte === Control.GetAtr) {
        this.controlRun = 0;
        this.reply(this.card.atr);
        this.served = true;
        const afterPowerUp = this.atrAwaited;
        this.atrAwaited = false;
        this.hooks.atrAnswered(afterPowerUp);
        return true;
      }
      if (byte === Control.PowerOff || byte === Control.PowerOn || byte === Control.Reset) {
        if (++this.controlRun > MAX_CONTROL_RUN) {
          this.violate(`${this.controlRun} control bytes in a row`);
        } else {
          this.powerEvent(byte);
          this.doubt = { kind: 'control', byte };
        }
        return false;
      }
      // Any other single byte can only be a client's 1-byte APDU: vpcd waits for its answer.
    }
    this.controlRun = 0;
    this.transmit(frame);
    return true;
  }

  private powerEvent(control: Control.PowerOff | Control.PowerOn | Control.Reset): void {
    try {
      if (control === Control.PowerOff) this.card.powerOff();
      else if (control === Control.PowerOn) this.card.powerOn();
      else this.card.reset();
    } catch (error) {
      // A card must not throw here; the power event happened all the same.
      this.hooks.notice('card_error', error instanceof Error ? error.message : String(error));
    }
    if (control !== Control.PowerOff) this.atrAwaited = true;
  }

  /** Hands a command to the card; its reply goes out when the card answers. */
  private transmit(command: Uint8Array): void {
    if (this.prefixWritten && command.length >= 4) {
      // A reply's first byte already went out as 00: a full APDU's answer may not fit behind it.
      this.hooks.notice('card_error', 'a command arrived while a reply was begun ahead: answered 6F00, not run');
      this.reply(SW_NO_PRECISE_DIAGNOSIS);
      return;
    }
    this.replyOwed = true;
    this.card.transmit(command).then(
      (response) => this.answer(response),
      (error: unknown) => {
        this.hooks.notice('card_error', error instanceof Error ? error.message : String(error));
        this.answer(SW_NO_PRECISE_DIAGNOSIS);
      },
    );
  }

  private answer(response: Uint8Array): void {
    this.replyOwed = false;
    if (!this.closed) {
      const limit = this.prefixWritten ? 0xff : MAX_FRAME_PAYLOAD;
      if (response.length < 2 || response.length > limit) {
        this.hooks.notice('card_error', `card answered ${response.length} bytes`);
        response = SW_NO_PRECISE_DIAGNOSIS;
      }
      this.reply(response);
    }
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const wake of waiters) wake();
  }

  private reply(payload: Uint8Array): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    let frame = encodeFrame(payload);
    if (this.prefixWritten) {
      // Callers keep such replies under 256 bytes: the high length byte is the 00 already sent.
      frame = frame.subarray(1);
      this.prefixWritten = false;
    }
    this.socket.write(frame);
    this.bytesOut += frame.length;
    this.activity++;
    // Sending took the socket out of quick-ACK mode: re-arm before the next command arrives.
    if (this.options.quickAck) armQuickAck(this.socket);
  }

  /** Step 3: after graceMs of silence, write the reply's first byte and probe. */
  private armDoubt(): void {
    this.doubtTimer = setTimeout(() => {
      this.doubtTimer = null;
      if (!this.closed && this.doubt && !this.replyOwed) this.resolveDoubt(this.doubt, this.options.graceMs);
    }, this.options.graceMs);
    this.doubtTimer.unref();
  }

  /** Writes the reply's first byte ahead and probes; without a probe, ends the connection instead (see the top). */
  private resolveDoubt(doubt: Doubt, silentMs: number): void {
    if (!probeAvailable(this.socket)) return this.fallBack(doubt, silentMs);
    this.writePrefix();
    void this.probe(doubt, 0, silentMs);
  }

  private fallBack(doubt: Doubt, silentMs: number): void {
    this.doubtTimer = setTimeout(
      () => {
        this.doubtTimer = null;
        if (this.doubt !== doubt || this.closed) return;
        this.violate(`vpcd silent for ${this.options.fallbackSilenceMs} ms and no way to tell whether it waits for a reply: connection reset`);
      },
      Math.max(0, this.options.fallbackSilenceMs - silentMs),
    );
    this.doubtTimer.unref();
  }

  private writePrefix(): void {
    if (this.prefixWritten || this.socket.destroyed || !this.socket.writable) return;
    this.socket.write(Buffer.of(0));
    this.bytesOut += 1;
    this.prefixWritten = true;
    if (this.options.quickAck) armQuickAck(this.socket);
  }

  /** Step 4: probes until vpcd is proven to be reading, or a frame clears the doubt. */
  private async probe(doubt: Doubt, attempt: number, silentMs: number): Promise<void> {
    if (this.closed || this.doubt !== doubt) return;
    const result = await probeDriverReading(this.socket, this);
    if (this.closed || this.doubt !== doubt) return;
    if (result === 'reading') {
      this.doubt = null;
      this.controlRun = 0;
      const command = doubt.kind === 'control' ? Uint8Array.of(doubt.byte) : new Uint8Array(0);
      const what = doubt.kind === 'control' ? `a 1-byte APDU ${doubt.byte.toString(16).padStart(2, '0')}` : 'a zero-length APDU';
      this.hooks.notice('apdu_answered', `${what} (vpcd waits for its answer)`);
      this.transmit(command);
      return;
    }
    if (result === 'unavailable') return this.fallBack(doubt, silentMs);
    const delay = PROBE_DELAYS_MS[Math.min(attempt, PROBE_DELAYS_MS.length - 1)]!;
    this.doubtTimer = setTimeout(() => {
      this.doubtTimer = null;
      void this.probe(doubt, attempt + 1, silentMs + delay);
    }, delay);
    this.doubtTimer.unref();
  }

  /** Step 5: no frame or reply for idleMs (seen within a quarter of it) while nothing is pending. */
  private checkIdle(): void {
    const now = performance.now();
    if (this.activity !== this.activityAtLastIdleCheck || this.replyOwed) {
      this.activityAtLastIdleCheck = this.activity;
      this.lastActiveAt = now;
      return;
    }
    if (now - this.lastActiveAt < this.options.idleMs || this.closed || !this.served || this.doubt) return;
    this.doubt = { kind: 'silence' };
    this.resolveDoubt(this.doubt, this.options.idleMs);
  }

  private clearDoubt(): void {
    this.doubt = null;
    if (this.doubtTimer) clearTimeout(this.doubtTimer);
    this.doubtTimer = null;
  }

  private violate(detail: string): void {
    if (this.closed) return;
    this.dispose();
    this.hooks.violation(detail);
  }
}
