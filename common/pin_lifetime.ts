/**
 * How long a card keeps the PIN verified (the "verified-PIN lifetime"), shared by tpmvscmgr
 * (create /pinlifetime), tpmvscd (--pin-lifetime, the default of cards created without it) and
 * the card application, which enforces it.
 *
 * Every local account can reach every card (pcscd's socket is open to all users), and a card
 * cannot tell one PC/SC client from another: whatever the owner's VERIFY unlocked, anyone can
 * use until the card forgets it. A real card forgets at power off, but a client that holds the
 * card (ssh-agent, a browser) keeps it powered for ever. So the card also forgets:
 *
 *   idle     the PIN stops being verified this many seconds after the VERIFY or the last
 *            private-key operation it allowed (null: only power off / reset / logout end it)
 *   once     each VERIFY allows one private-key operation (PIV's "PIN always" for every key):
 *            a signature right after the owner's needs the PIN again
 *
 * Words (create /pinlifetime, tpmvscd --pin-lifetime with commas): `<seconds>` or `unlimited`,
 * then optionally `once`. docs/CLIENTS.md has the measurements behind the default.
 */
import { TpmvscError } from './errors.js';

export interface PinLifetime {
  /** Seconds of no PIN use after which the verified state ends, 1..86400; null: no limit. */
  idleSeconds: number | null;
  /** Each VERIFY allows one private-key operation. */
  once: boolean;
}

export const PIN_LIFETIME_MAX_SECONDS = 86_400;

/**
 * The daemon's default: 30 s idle. Every single-run client measured (pkcs11-tool, ssh -I,
 * yubico-piv-tool, ykman) signs within 25 ms of its VERIFY, and OpenSC's long-lived users
 * (ssh-agent, browsers) re-VERIFY from OpenSC's PIN cache when the card answers 6982; 30 s
 * leaves room for a hardware TPM and a slow network between a VERIFY and its signature.
 */
export const DEFAULT_PIN_LIFETIME: PinLifetime = { idleSeconds: 30, once: false };

/** What real cards do: verified until power off, reset or logout. */
export const UNLIMITED_PIN_LIFETIME: PinLifetime = { idleSeconds: null, once: false };

/** Parses `<seconds>|unlimited [once]`; `source` names the option in the error (e.g. "/pinlifetime"). */
export function parsePinLifetime(words: readonly string[], source: string): PinLifetime {
  const fix = `${source} takes a number of seconds from 1 to ${PIN_LIFETIME_MAX_SECONDS} or UNLIMITED, then optionally ONCE`;
  const [first, second, ...rest] = words.map((word) => word.toLowerCase());
  if (first === undefined || rest.length > 0 || (second !== undefined && second !== 'once')) {
    throw new TpmvscError('USAGE', fix);
  }
  let idleSeconds: number | null;
  if (first === 'unlimited') idleSeconds = null;
  else if (/^\d{1,5}$/.test(first) && Number(first) >= 1 && Number(first) <= PIN_LIFETIME_MAX_SECONDS) idleSeconds = Number(first);
  else throw new TpmvscError('USAGE', fix);
  return { idleSeconds, once: second === 'once' };
}

/** The words parsePinLifetime reads back (`30`, `30 once`, `unlimited`). */
export function pinLifetimeWords(lifetime: PinLifetime): string[] {
  return [lifetime.idleSeconds === null ? 'unlimited' : String(lifetime.idleSeconds), ...(lifetime.once ? ['once'] : [])];
}

/** For status output and logs: "30 s idle", "30 s idle, one private-key operation per VERIFY", "until power off". */
export function describePinLifetime(lifetime: PinLifetime): string {
  const idle = lifetime.idleSeconds === null ? 'until power off' : `${lifetime.idleSeconds} s idle`;
  return lifetime.once ? `${idle}, one private-key operation per VERIFY` : idle;
}

/** A valid PinLifetime read back from JSON (card files, control requests). */
export function isPinLifetime(value: unknown): value is PinLifetime {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const { idleSeconds, once } = value as Record<string, unknown>;
  const keys = Object.keys(value);
  const idleOk =
    idleSeconds === null ||
    (Number.isInteger(idleSeconds) && (idleSeconds as number) >= 1 && (idleSeconds as number) <= PIN_LIFETIME_MAX_SECONDS);
  return keys.length === 2 && idleOk && typeof once === 'boolean';
}
