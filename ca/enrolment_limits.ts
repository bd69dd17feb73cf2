/**
 * How much of the CA one client may hold, and how often it may ask.
 *
 * A client is an endorsement key (SHA-256 of its SubjectPublicKeyInfo), counted only once its
 * certificate passed the trust check (chain or allow-list). Not the source address: on loopback
 * every client is 127.0.0.1, and behind a reverse proxy every client is the proxy, so limits per
 * address would let one client throttle all of them (and X-Forwarded-For is whatever the client
 * writes). The EK is the identity the CA certifies, a new trusted one costs a manufacturer-
 * certified TPM, and a request that fails before the EK is trusted leaves no state behind.
 *
 *   rate         each EK has a bucket of `perMinute` challenges, refilled continuously
 *   per-EK cap   at most `pendingPerClient` unanswered challenges per EK
 *   global cap   at most `maxPending` unanswered challenges in all: a new one is refused (503)
 *                when full; a pending challenge is NEVER dropped for another, so a flood can
 *                only fill its own EK's share (and, with many trusted EKs, stall new requests
 *                until the flood's challenges expire, but never undo someone's enrolment)
 *
 * What a flood can still do: whoever has a copy of an EK certificate and its public key (they are
 * not secret) can spend that EK's rate and pending share, delaying that one machine's enrolment
 * by at most the challenge lifetime after the flood stops. It cannot get a certificate (that
 * takes the EK's TPM) nor touch another EK's enrolment.
 */
import { CaRefusal } from './ca_error.js';

export interface EnrolmentLimitSettings {
  /** Challenges per EK per minute (also the burst). Default 10. */
  perMinute: number;
  /** Unanswered challenges per EK. Default 4. */
  pendingPerClient: number;
  /** Unanswered challenges in all. Default 1000. */
  maxPending: number;
}

export const DEFAULT_LIMITS: EnrolmentLimitSettings = { perMinute: 10, pendingPerClient: 4, maxPending: 1000 };

interface Bucket {
  tokens: number;
  at: number;
}

/** Above this many buckets, the full (idle) ones are dropped. */
const MAX_BUCKETS = 100_000;

const seconds = (ms: number): number => Math.max(1, Math.ceil(ms / 1000));

/** How many challenges are pending and when the first of them expires (Infinity when none). */
export interface PendingCount {
  count: number;
  earliestExpiry: number;
}

/** The pending challenges of the client asking, and of everyone. */
export interface PendingChallenges {
  own: PendingCount;
  all: PendingCount;
}

export class EnrolmentLimits {
  private readonly buckets = new Map<string, Bucket>();

  constructor(readonly settings: EnrolmentLimitSettings = DEFAULT_LIMITS) {}

  /**
   * Admits one new challenge for `client`, given the expiry times of the challenges pending now
   * (its own and everyone's); refuses with 429 (this client) or 503 (the CA is full) and a
   * Retry-After. Takes a token only when it admits.
   */
  admit(client: string, now: number, pending: PendingChallenges): void {
    const { perMinute, pendingPerClient, maxPending } = this.settings;
    if (pending.own.count >= pendingPerClient) {
      throw new CaRefusal(429, `this EK has ${pending.own.count} unanswered challenges: answer one or retry later`, seconds(pending.own.earliestExpiry - now));
    }
    if (pending.all.count >= maxPending) {
      throw new CaRefusal(503, `the CA holds ${pending.all.count} unanswered challenges: retry later`, seconds(pending.all.earliestExpiry - now));
    }
    const bucket = this.refilled(client, now);
    if (bucket.tokens < 1) {
      throw new CaRefusal(429, `too many challenges for this EK (${perMinute} a minute): retry later`, seconds(((1 - bucket.tokens) * 60_000) / perMinute));
    }
    bucket.tokens -= 1;
  }

  private refilled(client: string, now: number): Bucket {
    const { perMinute } = this.settings;
    let bucket = this.buckets.get(client);
    if (!bucket) {
      if (this.buckets.size >= MAX_BUCKETS) this.dropFull(now);
      bucket = { tokens: perMinute, at: now };
      this.buckets.set(client, bucket);
    }
    bucket.tokens = Math.min(perMinute, bucket.tokens + ((now - bucket.at) * perMinute) / 60_000);
    bucket.at = now;
    return bucket;
  }

  /** Forgets buckets that refilled completely: they would start full anyway. */
  private dropFull(now: number): void {
    const { perMinute } = this.settings;
    for (const [client, bucket] of this.buckets) if (bucket.tokens + ((now - bucket.at) * perMinute) / 60_000 >= perMinute) this.buckets.delete(client);
  }
}
