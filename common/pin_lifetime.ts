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
 *   seconds  the PIN stops being verified this many seconds after the VERIFY that verified it
 *            (null: only power off / reset / logout end it). Counted from the VERIFY, not from
 *            the last use: a signature (the owner's or anyone's) never extends it.
 *   once     each VERIFY allows one private-key operation (PIV's "PIN always" for every key):
 *            a signature right after the owner's needs the PIN again
 *
 * Words (create /pinlifetime, tpmvscd --pin-lifetime with commas): `<seconds>` or `unlimited`,
 * then optionally `once`. docs/CLIENTS.md has the measurements behind the default.
 */
import { TpmvscError } from './errors.js';

export interface PinLifetime {
  /** Seconds after the VERIFY at which the verified state ends, 1..86400; null: no limit. */
  seconds: number | null;
  /** Each VERIFY allows one private-key operation. */
  once: boolean;
}

export const PIN_LIFETIME_MAX_SECONDS = 86_400;

/**
 * The daemon's default: 30 s. pkcs11-tool, ssh -I and ykman sign within 25 ms of their VERIFY,
 * and OpenSC's long-lived users (ssh-agent, browsers) VERIFY again from OpenSC's PIN cache when
 * the card answers 6982; 30 s leaves room for a hardware TPM and a slow network between a
 * VERIFY and its signature (docs/CLIENTS.md).
 */
export const DEFAULT_PIN_LIFETIME: PinLifetime = { seconds: 30, once: false };

/** Parses `<seconds>|unlimited [once]`; `source` names the option in the error (e.g. "/pinlifetime"). */
export function parsePinLifetime(words: readonly string[], source: string): PinLifetime {
  const fix = `${source} takes a number of seconds from 1 to ${PIN_LIFETIME_MAX_SECONDS} or UNLIMITED, then optionally ONCE`;
  const [first, second, ...rest] = words.map((word) => word.toLowerCase());
  if (first === undefined || rest.length > 0 || (second !== undefined && second !== 'once')) {
    throw new TpmvscError('USAGE', fix);
  }
  let seconds: number | null;
  if (first === 'unlimited') seconds = null;
  else if (/^\d{1,5}$/.test(first) && Number(first) >= 1 && Number(first) <= PIN_LIFETIME_MAX_SECONDS) seconds = Number(first);
  else throw new TpmvscError('USAGE', fix);
  return { seconds, once: second === 'once' };
}

/** The words parsePinLifetime reads back (`30`, `30 once`, `unlimited`). */
export function pinLifetimeWords(lifetime: PinLifetime): string[] {
  return [lifetime.seconds === null ? 'unlimited' : String(lifetime.seconds), ...(lifetime.once ? ['once'] : [])];
}

/** For status output and logs: "30 s after VERIFY", "..., one private-key operation per VERIFY", "until power off". */
export function describePinLifetime(lifetime: PinLifetime): string {
  const span = lifetime.seconds === null ? 'until power off' : `${lifetime.seconds} s after VERIFY`;
  return lifetime.once ? `${span}, one private-key operation per VERIFY` : span;
}

/** A valid PinLifetime read back from JSON (card files, control requests). */
export function isPinLifetime(value: unknown): value is PinLifetime {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const { seconds, once } = value as Record<string, unknown>;
  const keys = Object.keys(value);
  const secondsOk =
    seconds === null ||
    (Number.isInteger(seconds) && (seconds as number) >= 1 && (seconds as number) <= PIN_LIFETIME_MAX_SECONDS);
  return keys.length === 2 && secondsOk && typeof once === 'boolean';
}
