/**
 * One per TPM connection, shared by every card vault on it:
 * - an exclusive lock, so the vaults' multi-command sequences (load, use, flush) never
 *   interleave and fight over the TPM's few object slots;
 * - a small LRU cache of loaded key objects (swtpm has 3 transient slots, and the SRK
 *   that salts sessions and a persistent parent in use take slots too). Evicted
 *   objects are flushed. When the TPM runs out of object memory the least recently used
 *   entries are flushed and the load retried; when a cached handle has vanished (TPM
 *   restart, new connection epoch) the object is loaded again transparently.
 */
import { RC, TpmError, isAuthFail, type LoadedObject, type Tpm, type TpmEntity } from '../tpm/index.js';

interface CacheEntry {
  object: LoadedObject;
  parentHandle: number;
  /** The connection epoch the object was loaded in: handles of older epochs are gone. */
  epoch: number;
}

/** TPM_RC_OBJECT_HANDLES: no free transient handle. */
const OBJECT_HANDLES = 0x906;

/** Maximum key objects kept loaded between operations, unless set otherwise. */
export const DEFAULT_CACHE_CAPACITY = 2;

const perTpm = new WeakMap<Tpm, LoadedObjects>();

function isVanishedHandle(e: unknown): boolean {
  return e instanceof TpmError && (e.base === RC.HANDLE || e.base === RC.REFERENCE_H0) && (e.location.kind === 'handle' || e.location.kind === 'none');
}

export class LoadedObjects {
  private readonly entries = new Map<string, CacheEntry>();
  private tail: Promise<unknown> = Promise.resolve();

  private constructor(
    private readonly tpm: Tpm,
    public capacity: number,
  ) {}

  static for(tpm: Tpm, capacity?: number): LoadedObjects {
    let shared = perTpm.get(tpm);
    if (!shared) {
      shared = new LoadedObjects(tpm, capacity ?? DEFAULT_CACHE_CAPACITY);
      perTpm.set(tpm, shared);
    } else if (capacity !== undefined) {
      shared.capacity = capacity;
    }
    return shared;
  }

  /** Runs `task` with the TPM to itself (FIFO; a failing task does not block the next). */
  exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.tail.then(task, task);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Number of key objects currently cached (tests). */
  get size(): number {
    return this.entries.size;
  }

  /**
   * Loads `blob` under `parent` (or reuses the cached handle when `cacheKey` is given)
   * and runs `use` on it. Objects loaded without a cache key are flushed afterwards.
   */
  async with<T>(
    parent: TpmEntity,
    blob: { public: Uint8Array; private: Uint8Array },
    cacheKey: string | undefined,
    use: (object: LoadedObject) => Promise<T>,
  ): Promise<T> {
    this.dropIfNewEpoch();
    if (cacheKey === undefined) {
      const object = await this.load(parent, blob);
      try {
        return await use(object);
      } finally {
        await this.flushQuietly(object.handle);
      }
    }
    let entry = this.entries.get(cacheKey);
    if (entry) {
      // Most recently used goes to the end of the Map's insertion order.
      this.entries.delete(cacheKey);
      this.entries.set(cacheKey, entry);
      try {
        return await use(entry.object);
      } catch (e) {
        // A vanished handle, or (HMAC sessions bind the object's name) another object now at
        // that handle: load again once; a real failure repeats on the fresh object.
        if (!isVanishedHandle(e) && !(isAuthFail(e) && !(await this.stillHolds(entry.object)))) throw e;
        this.entries.delete(cacheKey);
      }
    }
    while (this.entries.size >= this.capacity) await this.evictOldest();
    const object = await this.load(parent, blob);
    entry = { object, parentHandle: parent.handle, epoch: this.tpm.epoch };
    this.entries.set(cacheKey, entry);
    return use(object);
  }

  /** Flushes one cached object (key deleted). */
  async forget(cacheKey: string): Promise<void> {
    const entry = this.entries.get(cacheKey);
    if (!entry) return;
    this.entries.delete(cacheKey);
    await this.flushQuietly(entry.object.handle);
  }

  /** Flushes every cached object under a parent (card destroyed or reset). */
  async forgetParent(parentHandle: number): Promise<void> {
    for (const [key, entry] of [...this.entries]) {
      if (entry.parentHandle !== parentHandle) continue;
      this.entries.delete(key);
      await this.flushQuietly(entry.object.handle);
    }
  }

  /**
   * Runs a command that needs free object slots (Load, Create, Import, ObjectChangeAuth: the
   * TPM also pulls a persistent parent into a slot while it works), flushing cached objects
   * from the oldest on while the TPM answers that its object memory is full.
   */
  async withRoom<T>(command: () => Promise<T>): Promise<T> {
    for (;;) {
      try {
        return await command();
      } catch (e) {
        const outOfSlots = e instanceof TpmError && (e.base === RC.OBJECT_MEMORY || e.base === OBJECT_HANDLES);
        if (!outOfSlots || this.entries.size === 0) throw e;
        await this.evictOldest();
      }
    }
  }

  private load(parent: TpmEntity, blob: { public: Uint8Array; private: Uint8Array }): Promise<LoadedObject> {
    return this.withRoom(() => this.tpm.load(parent, blob, { session: 'password' }));
  }

  private async evictOldest(): Promise<void> {
    const oldest = this.entries.keys().next();
    if (oldest.done) return;
    const entry = this.entries.get(oldest.value)!;
    this.entries.delete(oldest.value);
    await this.flushQuietly(entry.object.handle);
  }

  /** Whether the handle still holds this object (same name), e.g. after an auth failure. */
  private async stillHolds(object: LoadedObject): Promise<boolean> {
    try {
      const current = await this.tpm.readPublic(object.handle);
      return Buffer.from(current.name).equals(Buffer.from(object.name));
    } catch {
      return false;
    }
  }

  private dropIfNewEpoch(): void {
    // The connection was re-established: objects loaded before are gone, nothing to flush.
    // (The epoch only moves when a command runs, so entries loaded since keep theirs.)
    for (const [key, entry] of [...this.entries]) {
      if (entry.epoch !== this.tpm.epoch) this.entries.delete(key);
    }
  }

  private async flushQuietly(handle: number): Promise<void> {
    try {
      await this.tpm.flushContext(handle);
    } catch (e) {
      // Already gone (TPM restarted): nothing left to free.
      if (!(e instanceof TpmError)) throw e;
    }
  }
}
