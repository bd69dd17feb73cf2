/**
 * The control API between tpmvscmgr (client) and tpmvscd (server), over the Unix
 * socket /run/tpmvsc/control.sock (mode 0660, group tpmvsc).
 *
 * Framing: newline-delimited JSON, one connection per request.
 *
 *   client -> server   {"op": "create", ...CreateRequest}\n
 *   server -> client   {"progress": "Creating the Virtual Smart Card Reader..."}\n   (zero or more)
 *   server -> client   {"ok": true, "result": {...}}\n  or  {"ok": false, "error": {"code", "message"}}\n
 *
 * The server closes the connection after the final line. If the client goes away
 * before the final line of a create, the server rolls the create back.
 *
 * Limits (daemon/control_connection_limits.ts): the request line is at most
 * MAX_REQUEST_LINE_BYTES and must be complete within the daemon's request timeout, counted
 * from connect(). A client therefore gathers everything first (PROMPT secrets included, on a
 * terminal or over /machine SSH) and only then connects and sends its line at once. Once the
 * line is in, no timeout applies: a create may take as long as the TPM needs.
 * Secrets (PIN, PUK, admin key) travel only inside this socket, never in argv or logs.
 */
import type { ErrorCode } from './errors.js';
import type { PinLifetime } from './pin_lifetime.js';

/** The longest request line the daemon reads (a create is well under 2 KiB), newline excluded. */
export const MAX_REQUEST_LINE_BYTES = 16 * 1024;

export type TriState = 'ALLOWED' | 'DISALLOWED' | 'REQUIRED';

/** PIN policy of a card (Windows /pinpolicy). Lengths in bytes of printable ASCII (common/pin_rules.ts). */
export interface PinPolicy {
  /** Minimum PIN length, 4..8, default 8. */
  minLength: number;
  /** Maximum PIN length, minLength..8, default 8 (cards made before the 8-byte limit: up to 127). */
  maxLength: number;
  uppercase: TriState;
  lowercase: TriState;
  digits: TriState;
  specialChars: TriState;
}

export { DEFAULT_PIN_POLICY } from './pin_rules.js';

export interface CreateRequest {
  op: 'create';
  /** Friendly name of the card (/name), 1..64 printable characters. */
  name: string;
  /** 24-byte 3DES admin key, 48 hex characters; never logged. */
  adminKeyHex: string;
  /** True when the admin key was generated randomly and is not known to anyone. */
  adminKeyRandom: boolean;
  /** The PIN, printable ASCII. */
  pin: string;
  /** The PUK, or null for a card without a PUK. */
  puk: string | null;
  pinPolicy: PinPolicy;
  /** /pinlifetime: how long the card keeps the PIN verified; null: the daemon's default (--pin-lifetime). */
  pinLifetime: PinLifetime | null;
  /** /generate: provision the PIV data objects. */
  generate: boolean;
  /** /attestation: an AIK for the card (AIK_AND_CERT needs the daemon's --attestation-ca), or null. */
  attestation: 'AIK_AND_CERT' | 'AIK_ONLY' | null;
}

export interface DestroyRequest {
  op: 'destroy';
  /** ROOT\SMARTCARDREADER\000n */
  instance: string;
}

export interface ListRequest {
  op: 'list';
}

export interface StatusRequest {
  op: 'status';
  /** One card, or every card and the daemon when absent. */
  instance?: string;
}

export type ControlRequest = CreateRequest | DestroyRequest | ListRequest | StatusRequest;

export interface CardSummary {
  instance: string;
  name: string;
  /** PC/SC reader name the card sits in, e.g. "TPM Virtual Smart Card 00 00". */
  reader: string;
  /** Reader slot n (instance ROOT\SMARTCARDREADER\000n). */
  slot: number;
  /** The GUID (hex) of the card's CHUID as it is now (set by /generate, maybe rewritten since), else null. */
  guid: string | null;
  /** PIV serial (GET SERIAL). */
  serial: number;
  hasPuk: boolean;
  createdAt: string;
}

/**
 * A card's link to its vpcd reader slot (daemon/vpcd_link.ts):
 *   present     vpcd asked the card's ATR over this link: the card is in its reader
 *   unserved    vpcd does not serve the link (yet): connected but left in vpcd's accept queue,
 *               or the queue is full; not in the reader
 *   connecting  no TCP connection (pcscd down, port closed): retrying
 *   stopped     the daemon took the card out (destroy, shutdown)
 */
export type ReaderLinkState = 'present' | 'unserved' | 'connecting' | 'stopped';

export interface ReaderLinkStatus {
  state: ReaderLinkState;
  /** When the link entered this state (ISO 8601). */
  since: string;
  /** Why the card is not in its reader, in words; null when present or not known. */
  problem: string | null;
}

export interface CardStatus extends CardSummary {
  /** The card is in its reader: vpcd serves its link (link.state 'present'). */
  connected: boolean;
  link: ReaderLinkStatus;
  pinTriesRemaining: number;
  pinTriesTotal: number;
  pukTriesRemaining: number | null;
  /** The verified-PIN lifetime in force (the card's own, or the daemon's default), and whose it is. */
  pinLifetime: PinLifetime & { source: 'card' | 'daemon default' };
  keys: Array<{ slot: string; algorithm: string; origin: 'generated' | 'imported' }>;
}

export interface DaemonStatus {
  version: string;
  tcti: string;
  readers: number;
  cards: CardStatus[];
}

export interface CreateResult {
  instance: string;
  reader: string;
}

export type ControlResult =
  | { op: 'create'; value: CreateResult }
  | { op: 'destroy'; value: { instance: string } }
  | { op: 'list'; value: CardSummary[] }
  | { op: 'status'; value: DaemonStatus };

export interface ControlErrorBody {
  code: ErrorCode;
  message: string;
}

export type ServerLine =
  | { progress: string }
  | { ok: true; result: unknown }
  | { ok: false; error: ControlErrorBody };

/** Instance IDs as Windows prints them: ROOT\SMARTCARDREADER\0000 .. 0015. */
export function instanceId(slot: number): string {
  return `ROOT\\SMARTCARDREADER\\${slot.toString().padStart(4, '0')}`;
}

/** Parses an instance ID (case-insensitive); undefined when it is not one. */
export function parseInstanceId(text: string): number | undefined {
  const match = /^ROOT\\SMARTCARDREADER\\(\d{4})$/i.exec(text.trim());
  if (!match) return undefined;
  const slot = Number(match[1]);
  return slot < 16 ? slot : undefined;
}

/** Windows wording of create's progress lines. */
export const PROGRESS = {
  initializing: 'Initializing the Virtual Smart Card component...',
  creatingSimulator: 'Creating the Virtual Smart Card Simulator...',
  creatingReader: 'Creating the Virtual Smart Card Reader...',
  waitingForDevice: 'Waiting for TPM Smart Card Device...',
  authenticating: 'Authenticating to the TPM Smart Card...',
  generatingFilesystem: 'Generating filesystem on the TPM Smart Card...',
  created: 'TPM Smart Card created.',
} as const;

/** Where tpmvscd listens and tpmvscmgr connects unless --socket / TPMVSC_SOCKET say otherwise. */
export const DEFAULT_CONTROL_SOCKET = '/run/tpmvsc/control.sock';
