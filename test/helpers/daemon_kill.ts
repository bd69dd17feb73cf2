/**
 * kill -9 of tpmvscd while a command is in flight, for the crash-consistency tests: send an
 * APDU, wait `delayMs`, SIGKILL the daemon, collect whatever the client got (an answer if
 * the command finished first, a PC/SC error otherwise), start the daemon again and
 * reconnect. Delays are picked from how long the command takes when nothing interrupts it
 * (`timedSend`), so kills land inside the TPM work and around the save.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Stack } from './stack.js';
import { connectPivCard, type CardAnswer, type PivCard } from './piv_card.js';
import { WinscardTimeout, type WinscardApp, type WinscardConnection } from './winscard.js';

export type KillOutcome = { kind: 'answer'; answer: CardAnswer } | { kind: 'error'; message: string };

/** A card connection that survives daemon restarts: `card` is replaced by every reconnect. */
export class ReconnectingCard {
  private constructor(
    private readonly app: WinscardApp,
    private readonly reader: string,
    public card: PivCard,
    private connection: WinscardConnection,
  ) {}

  static async open(app: WinscardApp, reader: string): Promise<ReconnectingCard> {
    const { card, connection } = await connectPivCard(app, reader);
    return new ReconnectingCard(app, reader, card, connection);
  }

  async reconnect(): Promise<void> {
    await this.connection.disconnect('leave').catch(() => undefined);
    ({ card: this.card, connection: this.connection } = await connectPivCard(this.app, this.reader));
  }

  async close(): Promise<void> {
    await this.connection.disconnect('reset').catch(() => undefined);
  }
}

/** Sends one APDU and returns its answer with the time it took. */
export async function timedSend(card: PivCard, apdu: Buffer): Promise<{ answer: CardAnswer; ms: number }> {
  const start = performance.now();
  const answer = await card.send(apdu);
  return { answer, ms: performance.now() - start };
}

/** The daemon's last log lines, for a failure message. */
function logTail(stack: Stack, lines = 25): string {
  return stack.daemonLog().trimEnd().split('\n').slice(-lines).join('\n');
}

/** Runs one step of a kill round; a failure names the step and shows the daemon's last log lines. */
async function step<T>(stack: Stack, what: string, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    throw new Error(`${what}: ${(error as Error).message}\n--- tpmvscd's last log lines:\n${logTail(stack)}`, { cause: error });
  }
}

/**
 * Sends `apdu`, kills the daemon `delayMs` later, restarts it and reconnects. A PC/SC error is
 * the command's outcome (the card left mid-command); a call that never returns is not: it fails
 * the round (WinscardTimeout), as does a restart or reconnection that does not come back.
 */
export async function sendThenKill(stack: Stack, target: ReconnectingCard, apdu: Buffer, delayMs: number): Promise<KillOutcome> {
  const sent = target.card.send(apdu).then(
    (answer): KillOutcome => ({ kind: 'answer', answer }),
    (error: Error): KillOutcome => {
      if (error instanceof WinscardTimeout) throw error;
      return { kind: 'error', message: error.message };
    },
  );
  // Awaited below; marked handled now so a failure during the kill is not reported as unhandled.
  sent.catch(() => undefined);
  await sleep(delayMs);
  await stack.killDaemon();
  const outcome = await step(stack, `the command in flight when tpmvscd was killed ${delayMs} ms after it was sent`, () => sent);
  await step(stack, 'tpmvscd started again after kill -9', () => stack.startDaemon());
  await step(stack, 'the client connected again after the restart', () => target.reconnect());
  return outcome;
}

/** `count` kill delays spread over 0..(1.3 × the command's duration), the last ones past its end. */
export function killDelays(durationMs: number, count: number): number[] {
  return Array.from({ length: count }, (_, index) => Math.round((index * 1.3 * durationMs) / Math.max(1, count - 1)));
}

export function describe(outcome: KillOutcome): string {
  return outcome.kind === 'answer' ? `answered ${outcome.answer.sw}` : `no answer (${outcome.message})`;
}
