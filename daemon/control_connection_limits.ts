/**
 * How many control connections tpmvscd keeps open, so that no caller, authorized or not, can use
 * up the daemon's file descriptors with idle connections:
 *
 *   - per uid: at most `maxConnectionsPerUser` at once (root included);
 *   - in all: at most `maxConnections` for every uid but root together. Root is counted only
 *     against its own per-uid limit, so members of the admin group, even all of them together,
 *     never lock root out of managing cards.
 *
 * A connection over a limit is answered TOO_MANY_CONNECTIONS and closed at once (the server
 * keeps a few such refusals open for a moment so the client reads the answer, see
 * control_server.ts). The daemon's control fds are thus bounded by
 * maxConnections + maxConnectionsPerUser + the refusals it lingers on.
 */

export interface ControlLimits {
  /** Open connections of every uid but root together, default 64. */
  maxConnections: number;
  /** Open connections of one uid, default 16 (tpmvscmgr uses one per command). */
  maxConnectionsPerUser: number;
  /** Time from connect() to a complete request line, default 10 s (clients send it at once). */
  requestTimeoutMs: number;
}

export const DEFAULT_CONTROL_LIMITS: ControlLimits = {
  maxConnections: 64,
  maxConnectionsPerUser: 16,
  requestTimeoutMs: 10_000,
};

/** Which limit refused a connection. */
export type LimitScope = 'user' | 'all';

export type Admission =
  | { admitted: true; /** Call once, when the connection closes. */ release: () => void }
  | {
      admitted: false;
      scope: LimitScope;
      limit: number;
      /** The first refusal since this limit was last under its maximum (log it once, not per connection). */
      firstRefusal: boolean;
    };

const ROOT_UID = 0;

export class ConnectionLimiter {
  private readonly perUser = new Map<number, number>();
  private others = 0;
  /** Limits that refused a connection and have not gone back under their maximum yet. */
  private readonly saturated = new Set<string>();

  constructor(private readonly limits: Pick<ControlLimits, 'maxConnections' | 'maxConnectionsPerUser'>) {}

  /** Counts a new connection of `uid`, or says which limit it would go over. */
  admit(uid: number): Admission {
    const open = this.perUser.get(uid) ?? 0;
    if (open >= this.limits.maxConnectionsPerUser) return this.refuse('user', uid, this.limits.maxConnectionsPerUser);
    if (uid !== ROOT_UID && this.others >= this.limits.maxConnections) return this.refuse('all', uid, this.limits.maxConnections);
    this.perUser.set(uid, open + 1);
    if (uid !== ROOT_UID) this.others += 1;
    let released = false;
    return {
      admitted: true,
      release: () => {
        if (released) return;
        released = true;
        this.release(uid);
      },
    };
  }

  /** Open connections of one uid (for tests and status). */
  openConnections(uid: number): number {
    return this.perUser.get(uid) ?? 0;
  }

  private refuse(scope: LimitScope, uid: number, limit: number): Admission {
    const key = scope === 'user' ? `user:${uid}` : 'all';
    const firstRefusal = !this.saturated.has(key);
    this.saturated.add(key);
    return { admitted: false, scope, limit, firstRefusal };
  }

  private release(uid: number): void {
    const open = (this.perUser.get(uid) ?? 1) - 1;
    if (open === 0) this.perUser.delete(uid);
    else this.perUser.set(uid, open);
    if (uid !== ROOT_UID) this.others -= 1;
    if (open < this.limits.maxConnectionsPerUser) this.saturated.delete(`user:${uid}`);
    if (this.others < this.limits.maxConnections) this.saturated.delete('all');
  }
}
