/** A request the CA refuses: the HTTP status and a message for the client (never a secret). */
export class CaRefusal extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** Seconds after which the same request may succeed (HTTP Retry-After), for 429 and 503. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
    this.name = 'CaRefusal';
  }
}
