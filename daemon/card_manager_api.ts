/**
 * What the control server needs of the daemon's card logic. The lead's card manager implements
 * it; the control server only validates requests, checks the caller and dispatches here.
 *
 * Errors: throw TpmvscError (common/errors.ts) with a code and a detail that is safe to show;
 * anything else reaches the client as INTERNAL with a generic message.
 */
import type { CardSummary, CreateRequest, CreateResult, DaemonStatus } from '../common/control_protocol.js';

export interface CardManagerApi {
  /**
   * Creates a card. `progress` takes PROGRESS lines (control_protocol.ts), streamed to the client.
   * `signal` aborts when the client goes away: roll the card back and reject.
   * The request has been validated (name, hex admin key, PIN/PUK against the policy).
   */
  create(request: CreateRequest, progress: (line: string) => void, signal: AbortSignal): Promise<CreateResult>;
  /** Destroys a card; NOT_FOUND when no card has that (canonical) instance ID. */
  destroy(instance: string): Promise<void>;
  list(): Promise<CardSummary[]>;
  /** The daemon and every card, or only the card with that instance ID (NOT_FOUND if none). */
  status(instance?: string): Promise<DaemonStatus>;
}
