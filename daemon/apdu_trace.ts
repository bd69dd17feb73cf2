/**
 * Opt-in APDU recorder, a debugging aid: with TPMVSC_APDU_TRACE=<file> in the daemon's
 * environment every command and response of every hosted card is appended to <file> as
 * one JSON line `{"reader": ..., "command": hex, "response": hex, "at": ms, "took": ms}` (plus
 * `"note": "RESET refused: ..."` when the card reported why it refused the command), and every
 * power event as `{"reader": ..., "event": "power-on" | "power-off" | "reset", "at": ms}` (a reset
 * drops the PIN and 9B authentication, so a replay must see it too). `at` is when the command
 * arrived (Unix time in ms, with µs: performance.timeOrigin + performance.now()), `took` the time the card spent on it: gaps
 * between lines show where a client waits. It is how the real client transcripts in
 * test/fixtures/transcripts/*.real.json were captured.
 *
 * Secrets never reach the file: the data field of the commands that carry a PIN, PUK,
 * management key, private key or a 9B authentication cryptogram is written as `xx` per
 * byte (length kept, so the framing stays readable):
 *
 *   INS 20 VERIFY, 24 CHANGE REFERENCE DATA, 2C RESET RETRY COUNTER,
 *   FF SET MANAGEMENT KEY, FE IMPORT KEY, 87 GENERAL AUTHENTICATE with P2 = 9B
 *
 * Chained parts (CLA bit 0x10) are judged by their own INS, so every part is redacted.
 * Responses to GENERAL AUTHENTICATE (decrypted blocks, ECDH shared secrets, the 9B witness)
 * keep their first byte (the 7C template tag) and status word, the rest becomes `xx`; so do
 * the GET RESPONSE parts that continue such an answer (61xx chains).
 *
 * PIN-protected data objects (applet/sealed_objects.ts: 5FC109, where ykman keeps a
 * PIN-protected management key, and the biometric objects) are masked the same way:
 * PUT DATA (DB) keeps its tag list `5C L tag` and loses the rest of its data, and every
 * further part of a chained PUT DATA that began so loses all of it; the answer to GET DATA
 * (CB) of such an object keeps its first byte (53) and status word, and so do its GET
 * RESPONSE parts. A PUT DATA whose tag cannot be read is masked whole.
 * Writing is best effort: a failing trace file never disturbs the card.
 */
import { appendFile } from 'node:fs/promises';
import { isPinProtected } from '../applet/sealed_objects.js';

/** Environment variable naming the trace file. */
export const APDU_TRACE_VARIABLE = 'TPMVSC_APDU_TRACE';

const SECRET_INSTRUCTIONS = new Set([0x20, 0x24, 0x2c, 0xff, 0xfe]);
const GENERAL_AUTHENTICATE = 0x87;
const MANAGEMENT_KEY_REFERENCE = 0x9b;
const GET_DATA = 0xcb;
const PUT_DATA = 0xdb;
const CLA_CHAIN = 0x10;
const TAG_LIST = 0x5c;

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

/**
 * Where the data field of a command is:
 *
 *   short:    CLA INS P1 P2 | Lc (1, 01..FF) | data | [Le (1)]
 *   extended: CLA INS P1 P2 | 00 Lc1 Lc2     | data | [Le1 Le2]
 *
 * Undefined without a data field, and when the lengths do not add up.
 */
function dataField(command: Uint8Array): { start: number; length: number } | undefined {
  if (command.length <= 5) return undefined;
  const b4 = command[4]!;
  if (b4 !== 0) {
    const rest = command.length - 5 - b4;
    return rest === 0 || rest === 1 ? { start: 5, length: b4 } : undefined;
  }
  if (command.length < 7) return undefined;
  const lc = (command[5]! << 8) | command[6]!;
  const rest = command.length - 7 - lc;
  return lc > 0 && (rest === 0 || rest === 2) ? { start: 7, length: lc } : undefined;
}

/** The object tag and the length of the tag list `5C L tag` (L 1..3) at the start of a data field. */
function tagList(data: Uint8Array): { tag: number; length: number } | undefined {
  const size = data[1] ?? 0;
  if (data[0] !== TAG_LIST || size < 1 || size > 3 || data.length < 2 + size) return undefined;
  return { tag: data.subarray(2, 2 + size).reduce((tag, byte) => (tag << 8) | byte, 0), length: 2 + size };
}

/**
 * How many bytes of the data field may show: all of it (Infinity), the first n, or none.
 * Chain continuations are judged by the trace (they carry no tag list of their own).
 */
function visibleData(command: Uint8Array, data: Uint8Array): number {
  const ins = command[1]!;
  if (SECRET_INSTRUCTIONS.has(ins) || (ins === GENERAL_AUTHENTICATE && command[3] === MANAGEMENT_KEY_REFERENCE)) return 0;
  if (ins !== PUT_DATA) return Infinity;
  const list = tagList(data);
  if (!list) return 0;
  return isPinProtected(list.tag) ? list.length : Infinity;
}

/** The command as hex with its data field masked after `visible` bytes (the whole rest when its lengths do not add up). */
function maskCommand(command: Uint8Array, visible: number): string {
  if (visible === Infinity) return hex(command);
  const field = dataField(command);
  if (!field) return hex(command.subarray(0, 4)) + 'xx'.repeat(command.length - 4);
  const shown = Math.min(visible, field.length);
  const end = field.start + field.length;
  return hex(command.subarray(0, field.start + shown)) + 'xx'.repeat(field.length - shown) + hex(command.subarray(end));
}

/**
 * The command as hex with the secret part of its data field replaced by `xx`s: all of it for
 * the secret-bearing instructions, all but the tag list for PUT DATA of a PIN-protected object.
 * If the lengths do not add up, everything after the header is redacted.
 */
export function redactCommand(command: Uint8Array): string {
  return maskCommand(command, commandVisibility(command));
}

/** visibleData of a whole command: Infinity when nothing is secret (also without a data field). */
function commandVisibility(command: Uint8Array): number {
  if (command.length <= 5) return Infinity;
  const field = dataField(command);
  const data = field ? command.subarray(field.start, field.start + field.length) : new Uint8Array(0);
  return visibleData(command, data);
}

/** True for a GET DATA asking for a PIN-protected object: its answer is secret. */
function readsProtectedObject(command: Uint8Array): boolean {
  if (command[1] !== GET_DATA) return false;
  const field = dataField(command);
  const list = field && tagList(command.subarray(field.start, field.start + field.length));
  return list !== undefined && isPinProtected(list.tag);
}

const GET_RESPONSE = 0xc0;
const MORE_DATA = 0x61;

/** The response as hex, its data field masked after `keep` bytes (the status word stays). */
function maskResponse(response: Uint8Array, keep: number): string {
  if (response.length <= 2) return hex(response);
  const dataLength = response.length - 2;
  const kept = Math.min(keep, dataLength);
  return hex(response.subarray(0, kept)) + 'xx'.repeat(dataLength - kept) + hex(response.subarray(dataLength));
}

export type CardPowerEvent = 'power-on' | 'power-off' | 'reset';

/** When a command arrived (performance.now()) and how long the card took to answer it, in ms. */
export interface ExchangeTiming {
  at: number;
  took: number;
}

const milliseconds = (value: number): number => Math.round(value * 1000) / 1000;
/** performance.now() as Unix time in ms, so trace lines line up with other programs' logs. */
const unixMs = (now: number): number => milliseconds(performance.timeOrigin + now);

export interface ApduTrace {
  /**
   * Appends one exchange; resolves once it is written (or the write failed). `note`: why the
   * card refused it, when the card reported an audited refusal (e.g. RESET without the
   * management key), written as the line's "note".
   */
  record(readerName: string, command: Uint8Array, response: Uint8Array, timing: ExchangeTiming, note?: string): Promise<void>;
  /** Appends a power event (written in order with the exchanges, never awaited by the card). */
  event(readerName: string, event: CardPowerEvent): void;
}

/** The trace configured by the environment, or undefined when tracing is off. */
export function apduTraceFromEnvironment(environment: NodeJS.ProcessEnv = process.env): ApduTrace | undefined {
  const file = environment[APDU_TRACE_VARIABLE];
  if (!file) return undefined;
  let warned = false;
  // One chain of appends keeps the lines in the order the card saw them.
  let written: Promise<void> = Promise.resolve();
  const append = (entry: object): Promise<void> => {
    const line = JSON.stringify(entry) + '\n';
    written = written.then(() =>
      appendFile(file, line, { mode: 0o600 }).catch((error: Error) => {
        if (!warned) {
          warned = true;
          console.error(`tpmvscd: APDU trace to ${file} failed: ${error.message}`);
        }
      }),
    );
    return written;
  };
  // Readers in the middle of a chained PUT DATA, and whether its data is secret (its first part named
  // a PIN-protected object or no readable tag): the later parts carry no tag list of their own.
  const putChains = new Map<string, boolean>();
  const redactedCommand = (readerName: string, command: Uint8Array): string => {
    const continued = command[1] === PUT_DATA ? putChains.get(readerName) : undefined;
    // Secret is decided by the rule, not by whether this part happened to show masked bytes: a
    // first part holding the tag list alone masks nothing, and its later parts carry the value.
    const visible = continued === undefined ? commandVisibility(command) : continued ? 0 : Infinity;
    const text = maskCommand(command, visible);
    if (command[1] === PUT_DATA && command.length > 4 && (command[0]! & CLA_CHAIN) !== 0) {
      putChains.set(readerName, visible !== Infinity);
    } else {
      putChains.delete(readerName);
    }
    return text;
  };
  // Readers whose last response was a secret answer still to be fetched with GET RESPONSE.
  const secretChains = new Set<string>();
  const redactResponse = (readerName: string, command: Uint8Array, response: Uint8Array): string => {
    const ins = command[1];
    const continues = ins === GET_RESPONSE && secretChains.has(readerName);
    const secret = ins === GENERAL_AUTHENTICATE || readsProtectedObject(command) || continues;
    const more = response.length >= 2 && response[response.length - 2] === MORE_DATA;
    if (secret && more) secretChains.add(readerName);
    else secretChains.delete(readerName);
    if (!secret) return hex(response);
    return maskResponse(response, continues ? 0 : 1);
  };
  return {
    record: (readerName, command, response, timing, note) =>
      append({
        reader: readerName, command: redactedCommand(readerName, command), response: redactResponse(readerName, command, response),
        at: unixMs(timing.at), took: milliseconds(timing.took), ...(note === undefined ? {} : { note }),
      }),
    event: (readerName, event) => {
      // A power event ends every chain (the card drops them too).
      putChains.delete(readerName);
      secretChains.delete(readerName);
      void append({ reader: readerName, event, at: unixMs(performance.now()) });
    },
  };
}
