/**
 * A shell that owns a private mount namespace (`unshare --mount ...`) and talks line by line:
 * commands on its stdin, answers on its stdout. Closing its stdin tells it to tear everything
 * down, which it also does when the test process dies. Used by ./pcscd.ts and
 * ./nspawn_container.ts.
 */
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';

export class NamespaceShell {
  private readonly lines: AsyncIterator<string>;
  private stderrText = '';

  /** `name` prefixes the errors ("pcscd harness", "container shell"). */
  constructor(
    readonly process: ChildProcessWithoutNullStreams,
    private readonly name: string,
  ) {
    this.lines = createInterface({ input: process.stdout })[Symbol.asyncIterator]();
    process.stderr.on('data', (chunk: Buffer) => (this.stderrText += chunk.toString()));
  }

  /** What the shell wrote on stderr so far. */
  get stderr(): string {
    return this.stderrText;
  }

  send(line: string): void {
    this.process.stdin.write(`${line}\n`);
  }

  /** Reads the shell's next line, failing after timeoutMs or when the shell exits. */
  async nextLine(timeoutMs: number): Promise<string> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.name}: no answer within ${timeoutMs} ms ${this.stderrText}`.trim())), timeoutMs);
    });
    try {
      const next = await Promise.race([this.lines.next(), timeout]);
      if (next.done) throw new Error(`${this.name}: the namespace shell exited ${this.stderrText}`.trim());
      return next.value;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes its stdin (its cue to tear down) and waits for it to exit; SIGKILL after killAfterMs. */
  async end(killAfterMs: number): Promise<void> {
    if (this.process.exitCode !== null || this.process.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.process.once('exit', () => resolve()));
    this.process.stdin.end();
    const timer = setTimeout(() => this.process.kill('SIGKILL'), killAfterMs);
    await exited;
    clearTimeout(timer);
  }
}
