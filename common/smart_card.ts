/**
 * What a reader sees of a card: an ATR, power events and APDU exchange.
 *
 * The daemon's vpcd link drives this interface and knows nothing of what the
 * bytes mean; the PIV applet implements it and knows nothing of sockets.
 */
export interface SmartCard {
  /** Answer To Reset, sent to the reader on every GET ATR. */
  readonly atr: Uint8Array;
  /** The reader powered the card on (cold reset). */
  powerOn(): void;
  /** The reader powered the card off: every authentication state is lost. */
  powerOff(): void;
  /** Warm reset: every authentication state is lost. */
  reset(): void;
  /**
   * Handles one command APDU and resolves with the response APDU (data || SW1 SW2).
   * Never rejects: every failure is a status word. The caller sends one command at a
   * time and waits for its response.
   */
  transmit(command: Uint8Array): Promise<Uint8Array>;
}
