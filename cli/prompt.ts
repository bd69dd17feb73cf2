/**
 * Reads the secrets that /AdminKey PROMPT, /PIN PROMPT and /PUK PROMPT ask for.
 *
 * On a terminal: the terminal is put in raw mode (no echo), the prompt goes to stderr, and every
 * secret is asked twice; a mismatch is an error. Not on a terminal (automation): each secret is
 * one line of stdin, read in the order the caller asks (admin key, PIN, PUK), without confirmation.
 * The values are never written anywhere.
 */
import type { Readable, Writable } from 'node:stream';
import { TpmvscError } from '../common/errors.js';

/** Thrown when the user presses Ctrl-C at a prompt. */
export class PromptInterrupted extends Error {
  constructor() {
    super('interrupted');
    this.name = 'PromptInterrupted';
  }
}

export interface SecretReader {
  /** Asks for one secret; `label` is what is asked for ("PIN"), never the value. */
  read(label: string): Promise<string>;
  /** Restores the terminal and stops reading stdin. */
  close(): void;
}

/** A terminal input stream: what raw-mode reading needs of process.stdin. */
export interface TerminalInput extends Readable {
  isTTY?: boolean;
  setRawMode?(mode: boolean): unknown;
}

const MAX_SECRET_LENGTH = 1024;

/** One line per read from a non-terminal stream; keeps what it read past a newline for the next read. */
class LineSecretReader implements SecretReader {
  private buffered = '';
  private ended = false;
  private readonly chunks: AsyncIterator<Buffer | string>;

  constructor(private readonly input: Readable) {
    this.chunks = input[Symbol.asyncIterator]();
  }

  async read(label: string): Promise<string> {
    for (;;) {
      const newline = this.buffered.indexOf('\n');
      if (newline >= 0) {
        const line = this.buffered.slice(0, newline).replace(/\r$/, '');
        this.buffered = this.buffered.slice(newline + 1);
        return line;
      }
      if (this.buffered.length > MAX_SECRET_LENGTH) {
        throw new TpmvscError('USAGE', `the ${label} line on stdin is longer than ${MAX_SECRET_LENGTH} characters`);
      }
      if (this.ended) {
        if (this.buffered.length > 0) {
          const line = this.buffered;
          this.buffered = '';
          return line;
        }
        throw new TpmvscError('USAGE', `stdin ended before the ${label} was read (PROMPT reads one line per secret: admin key, PIN, PUK)`);
      }
      const next = await this.chunks.next();
      if (next.done) this.ended = true;
      else this.buffered += typeof next.value === 'string' ? next.value : next.value.toString('utf8');
    }
  }

  close(): void {
    this.input.destroy();
  }
}

/** Raw-mode terminal reading without echo; asks twice. */
class TerminalSecretReader implements SecretReader {
  constructor(
    private readonly input: TerminalInput,
    private readonly output: Writable,
  ) {}

  async read(label: string): Promise<string> {
    const first = await this.readOnce(`Enter ${label}: `);
    const second = await this.readOnce(`Confirm ${label}: `);
    if (first !== second) throw new TpmvscError('USAGE', `the two ${label} entries do not match; run the command again`);
    return first;
  }

  private readOnce(prompt: string): Promise<string> {
    const { input, output } = this;
    output.write(prompt);
    input.setRawMode?.(true);
    input.resume();
    return new Promise<string>((resolve, reject) => {
      let typed = '';
      const finish = (error: Error | undefined): void => {
        input.off('data', onData);
        input.setRawMode?.(false);
        input.pause();
        output.write('\n');
        if (error) reject(error);
        else resolve(typed);
      };
      const onData = (chunk: Buffer | string): void => {
        const text = typeof chunk === 'string' ? chunk : chunk.toString('utf8');
        for (const char of text) {
          if (char === '\r' || char === '\n') return finish(undefined);
          if (char === '\x03') return finish(new PromptInterrupted());
          if (char === '\x04' && typed.length === 0) {
            return finish(new TpmvscError('USAGE', 'no input at the prompt (end of input)'));
          }
          if (char === '\x7f' || char === '\b') typed = typed.slice(0, -1);
          else if (char === '\x15') typed = '';
          else if (char >= ' ' && typed.length < MAX_SECRET_LENGTH) typed += char;
        }
      };
      input.on('data', onData);
    });
  }

  close(): void {
    this.input.setRawMode?.(false);
    this.input.pause();
  }
}

/** A reader for process.stdin (or a test stream): terminal mode when the input is a TTY. */
export function createSecretReader(input: TerminalInput, output: Writable): SecretReader {
  if (input.isTTY === true && typeof input.setRawMode === 'function') return new TerminalSecretReader(input, output);
  return new LineSecretReader(input);
}
