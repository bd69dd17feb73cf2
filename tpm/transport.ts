/**
 * The byte pipe to a TPM: one complete command in, one complete response out. The Tpm class
 * serialises calls (one command in flight) and handles retries; transports handle framing,
 * timeouts and reconnection.
 */
import { TpmTransportError } from './errors.js';
import { parseTcti, type TctiConfig } from './tcti.js';
import { DeviceTransport } from './transport_device.js';
import { SwtpmTransport } from './transport_swtpm.js';

/** Largest response accepted (TPM responses are a few KiB; anything bigger is garbage). */
export const MAX_RESPONSE_BYTES = 64 * 1024;
/** Largest command sent. */
export const MAX_COMMAND_BYTES = 64 * 1024;

export interface TpmTransport {
  /** True for /dev/tpmrm*: handles are per connection and flushed on close. */
  readonly hasResourceManager: boolean;
  /** For messages, e.g. 'swtpm 127.0.0.1:2321'. */
  readonly description: string;
  /** Default per-command timeout for this kind of transport (ms). */
  readonly defaultTimeoutMs: number;
  /**
   * Incremented each time a new connection is opened. A change means every transient handle and
   * session of the old connection is gone (or, on swtpm, orphaned).
   */
  readonly connectionCount: number;
  /** Opens the connection if it is not open (no-op when open). */
  connect(timeoutMs: number): Promise<void>;
  /**
   * Sends one command and resolves with the complete response (header size field checked).
   * Rejects with TpmTransportError; after TIMEOUT/MALFORMED/IO the connection is closed and the
   * next call reconnects. Callers must not overlap calls.
   */
  transmit(command: Uint8Array, timeoutMs: number): Promise<Buffer>;
  close(): Promise<void>;
}

/** Checks a complete TPM response: header `tag u16 | size u32 | rc u32`, size equal to the byte count. */
export function checkResponseFrame(resp: Buffer): void {
  if (resp.length < 10) throw new TpmTransportError('MALFORMED', `response of ${resp.length} bytes is shorter than a header`);
  const declared = resp.readUInt32BE(2);
  if (declared !== resp.length) throw new TpmTransportError('MALFORMED', `response header declares ${declared} bytes, got ${resp.length}`);
  const tag = resp.readUInt16BE(0);
  if (tag !== 0x8001 && tag !== 0x8002 && tag !== 0x00c4) throw new TpmTransportError('MALFORMED', `bad response tag 0x${tag.toString(16)}`);
}

export function openTransport(tcti: string | TctiConfig | undefined): TpmTransport {
  const config = typeof tcti === 'object' ? tcti : parseTcti(tcti);
  return config.kind === 'device' ? new DeviceTransport(config.path) : new SwtpmTransport(config.host, config.port);
}
