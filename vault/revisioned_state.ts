/**
 * A value that can only be changed through change(), which bumps a revision number. The
 * vault keeps its persisted state in one so that the card application can ask "did the
 * state move?" by comparing numbers (KeyVault.revision) instead of deep-comparing state()
 * after every signature, and so that no mutation can forget to bump the number: readers get
 * a deeply read-only view, and writing through it does not compile.
 */

/** Read-only all the way down (the vault state is plain JSON: objects, strings, numbers). */
export type DeepReadonly<T> = { readonly [K in keyof T]: T[K] extends object ? DeepReadonly<T[K]> : T[K] };

export class RevisionedState<T extends object> {
  private current: T;
  private changes = 0;

  constructor(initial: T) {
    this.current = initial;
  }

  /** The value, to read. Change it with change(). */
  get value(): DeepReadonly<T> {
    return this.current;
  }

  /** Bumped by every change(); equal numbers mean the value did not change in between. */
  get revision(): number {
    return this.changes;
  }

  /** A deep copy the caller may keep and modify. */
  snapshot(): T {
    return structuredClone(this.current);
  }

  /**
   * Mutates the value in place, or replaces it with what `mutate` returns. Synchronous, so a
   * half-done change is never observed; the revision moves even if `mutate` throws part way.
   */
  change(mutate: (draft: T) => T | void): void {
    try {
      const replacement = mutate(this.current);
      if (replacement !== undefined) this.current = replacement;
    } finally {
      this.changes++;
    }
  }
}
