/** A request the CA refuses: the HTTP status and a message for the client (never a secret). */
export class CaRefusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'CaRefusal';
  }
}
