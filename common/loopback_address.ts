/**
 * HOST:PORT restricted to loopback (127.0.0.0/8, localhost as 127.0.0.1, [::1]): what the
 * daemon's vpcd readers and the attestation CA listen on or connect to. Anything else is
 * refused, so nothing of ours is reachable from the network by a typo.
 */
import { TpmvscError } from './errors.js';

export interface LoopbackAddress {
  host: string;
  port: number;
}

/**
 * Parses `text` (named `source` in errors, e.g. "--vpcd"); `minPort` 0 allows "any free port".
 * `why` ends the refusal of a non-loopback host, e.g. "vpcd must not be reachable from the network".
 */
export function parseLoopbackAddress(text: string, source: string, options: { minPort?: 0 | 1; example: string; why: string }): LoopbackAddress {
  const minPort = options.minPort ?? 1;
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text.trim());
  if (!match) throw new TpmvscError('USAGE', `${source} must be HOST:PORT, e.g. ${options.example}`);
  const rawHost = (match[1] ?? match[2]!).toLowerCase();
  const port = Number(match[3]);
  if (port < minPort || port > 65535) throw new TpmvscError('USAGE', `${source} port must be ${minPort}..65535`);
  const ipv4Loopback = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(rawHost);
  let host: string;
  if (rawHost === 'localhost') host = '127.0.0.1';
  else if (rawHost === '::1') host = '::1';
  else if (ipv4Loopback && ipv4Loopback.slice(1).every((octet) => Number(octet) <= 255)) host = rawHost;
  else throw new TpmvscError('USAGE', `${source} must be a loopback address (127.0.0.1, localhost or [::1]): ${options.why}`);
  return { host, port };
}
