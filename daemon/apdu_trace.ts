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
 * Writing is best effort: a failing trace file never disturbs the card.
 */
import { appendFile } from 'node:fs/promises';

/** Environment variable naming the trace file. */
export const APDU_TRACE_VARIABLE = 'TPMVSC_APDU_TRACE';

const SECRET_INSTRUCTIONS = new Set([0x20, 0x24, 0x2c, 0xff, 0xfe]);
const GENERAL_AUTHENTICATE = 0x87;
const MANAGEMENT_KEY_REFERENCE = 0x9b;

const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

function carriesSecret(command: Uint8Array): boolean {
  const ins = command[1]!;
  return SECRET_INSTRUCTIONS.has(ins) || (ins === GENERAL_AUTHENTICATE && command[3] === MANAGEMENT_KEY_REFERENCE);
}

/**
 * The command as hex with the data field of secret-bearing commands replaced by `xx`s.
 *
 *   short:    CLA INS P1 P2 | Lc (1, 01..FF) | data | [Le (1)]
 *   extended: CLA INS P1 P2 | 00 Lc1 Lc2     | data | [Le1 Le2]
 *
 * If the lengths do not add up, everything after the header is redacted.
 */
export function redactCommand(command: Uint8Array): string {
  if (command.length <= 5 || !carriesSecret(command)) return hex(command);
  const header = hex(command.subarray(0, 4));
  const mask = (count: number): string => 'xx'.repeat(count);
  const b4 = command[4]!;
  if (b4 !== 0) {
    const rest = command.length - 5 - b4;
    if (rest === 0 || rest === 1) return header + hex(command.subarray(4, 5)) + mask(b4) + hex(command.subarray(5 + b4));
  } else if (command.length >= 7) {
    const lc = (command[5]! << 8) | command[6]!;
    const rest = command.length - 7 - lc;
    if (lc > 0 && (rest === 0 || rest === 2)) return header + hex(command.subarray(4, 7)) + mask(lc) + hex(command.subarray(7 + lc));
  }
  return header + mask(command.length - 4);
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
  // Readers whose last response was a secret answer still to be fetched with GET RESPONSE.
  const secretChains = new Set<string>();
  const redactResponse = (readerName: string, command: Uint8Array, response: Uint8Array): string => {
    const ins = command[1];
    const continues = ins === GET_RESPONSE && secretChains.has(readerName);
    const secret = ins === GENERAL_AUTHENTICATE || continues;
    const more = response.length >= 2 && response[response.length - 2] === MORE_DATA;
    if (secret && more) secretChains.add(readerName);
    else secretChains.delete(readerName);
    if (!secret) return hex(response);
    return maskResponse(response, continues ? 0 : 1);
  };
  return {
    record: (readerName, command, response, timing, note) =>
      append({
        reader: readerName, command: redactCommand(command), response: redactResponse(readerName, command, response),
        at: unixMs(timing.at), took: milliseconds(timing.took), ...(note === undefined ? {} : { note }),
      }),
    event: (readerName, event) => void append({ reader: readerName, event, at: unixMs(performance.now()) }),
  };
}
