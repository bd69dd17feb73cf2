/**
 * Persistent state of one card goes through this interface. The daemon implements it
 * with atomic files (daemon/card_files.ts); tests may keep it in memory.
 *
 * `save` resolves only when the state is durable: the card application calls it
 * before it answers 9000 to any command that changed state, so a crash at any moment
 * leaves the card as it was before or after the command.
 */
export interface CardStore<State> {
  save(state: State): Promise<void>;
}
