/**
 * The /machine value: what ssh accepts as a destination, checked before it reaches ssh.
 *
 *   host                  a name (resolved by ssh, possibly a Host alias of ~/.ssh/config) or an address
 *   user@host             ssh splits at the LAST '@', so a user name may itself contain '@'
 *   ssh://[user@]host[:port]   the URI form (OpenSSH 7.7+); [v6-address] in brackets
 *
 * The text is handed to ssh unchanged, after `--`, so ssh (and ~/.ssh/config) keep the final
 * say. What is refused here is what could change ssh's behaviour instead of naming a machine:
 * a leading '-' (an option), whitespace and control characters (they would split or hide
 * words), an empty host, another URI scheme, a port outside 1..65535.
 */
import { TpmvscError } from '../common/errors.js';

export interface SshDestination {
  /** Exactly what ssh gets as its destination argument. */
  destination: string;
  /** The host part (or Host alias), without user and port. */
  host: string;
  user: string | undefined;
  /** Only from the ssh:// form; otherwise ssh and its config decide. */
  port: number | undefined;
}

/** Longer than any host name (253) plus a generous user name. */
const MAX_DESTINATION_LENGTH = 512;
/** Printable ASCII without space: no word splitting, no hidden characters. */
const VISIBLE_ASCII = /^[\x21-\x7e]+$/;
const URI_SCHEME = /^([a-z][a-z0-9+.-]*):\/\//i;

function refuse(detail: string): TpmvscError {
  return new TpmvscError('USAGE', `/machine ${detail}`);
}

function checkHost(host: string): void {
  if (host.length === 0) throw refuse('needs a host name after the user name');
  if (host.startsWith('-')) throw refuse('host names cannot start with "-"');
}

/** Parses the ssh:// URI form: ssh://[user@]host[:port][/]. */
function parseSshUri(text: string): SshDestination {
  let rest = text.slice('ssh://'.length);
  if (rest.endsWith('/')) rest = rest.slice(0, -1);
  if (rest.includes('/')) throw refuse('ssh:// destinations take no path (ssh://user@host:port)');
  const at = rest.lastIndexOf('@');
  const user = at >= 0 ? rest.slice(0, at) : undefined;
  if (user !== undefined && user.length === 0) throw refuse('has an empty user name before "@"');
  let hostPort = at >= 0 ? rest.slice(at + 1) : rest;
  let host: string;
  let portText: string | undefined;
  if (hostPort.startsWith('[')) {
    // [IPv6]:port
    const close = hostPort.indexOf(']');
    if (close < 0) throw refuse('has an unclosed "[" in its address');
    host = hostPort.slice(1, close);
    hostPort = hostPort.slice(close + 1);
    if (hostPort.length > 0 && !hostPort.startsWith(':')) throw refuse('needs ":port" after "]"');
    portText = hostPort.length > 0 ? hostPort.slice(1) : undefined;
  } else {
    const colon = hostPort.lastIndexOf(':');
    host = colon >= 0 ? hostPort.slice(0, colon) : hostPort;
    portText = colon >= 0 ? hostPort.slice(colon + 1) : undefined;
  }
  checkHost(host);
  let port: number | undefined;
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : NaN;
    if (!(port >= 1 && port <= 65535)) throw refuse('needs a port from 1 to 65535 after ":"');
  }
  return { destination: text, host, user, port };
}

/** Checks a /machine value; throws TpmvscError('USAGE') naming the problem. */
export function parseSshDestination(text: string): SshDestination {
  if (text.length === 0) throw refuse('needs a machine name (host, user@host or ssh://user@host:port)');
  if (text.startsWith('-')) throw refuse('cannot start with "-" (ssh would read it as an option)');
  if (text.length > MAX_DESTINATION_LENGTH) throw refuse(`is longer than ${MAX_DESTINATION_LENGTH} characters`);
  if (!VISIBLE_ASCII.test(text)) throw refuse('must be printable ASCII without spaces (host, user@host or ssh://user@host:port)');
  const scheme = URI_SCHEME.exec(text);
  if (scheme) {
    if (scheme[1]!.toLowerCase() !== 'ssh') throw refuse(`supports only ssh:// URIs, not ${scheme[1]}://`);
    return parseSshUri(`ssh://${text.slice(scheme[0].length)}`);
  }
  const at = text.lastIndexOf('@');
  if (at === 0) throw refuse('has an empty user name before "@"');
  const user = at > 0 ? text.slice(0, at) : undefined;
  const host = at >= 0 ? text.slice(at + 1) : text;
  checkHost(host);
  return { destination: text, host, user, port: undefined };
}
