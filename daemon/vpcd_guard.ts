/**
 * The vpcd port guard: an nftables table that keeps every local account but root (pcscd) and
 * the daemon off the reader ports of one pool (issue #12; README "Who can reach a card").
 *
 * vpcd, inside pcscd, listens on 0.0.0.0 on every reader port and takes whoever connects as the
 * card; a second connect waits in the backlog for the first to drop. Without the guard any local
 * user could be the card (and read the PIN of the next VERIFY), or listen on a port pcscd left
 * free and be vpcd to the daemon. The table, one per port range so that several daemons (the
 * tests run many) never touch each other's rules, named after the range:
 *
 *   table inet tpmvsc_vpcd_<first>_<last> {
 *     chain output {
 *       type filter hook output priority filter; policy accept;
 *       tcp dport <first>-<last> fib daddr type local meta skuid != { 0, <daemon uid> } reject with tcp reset
 *       tcp sport <first>-<last> fib daddr type local meta skuid != 0 drop
 *     }
 *   }
 *
 * - Rule 1: a connect to a reader port, on ANY local address (127.0.0.0/8, ::1, the machine's
 *   own addresses: vpcd listens on all of them), from a socket not owned by root or the daemon's
 *   uid is refused at once (ECONNREFUSED): it never reaches vpcd's backlog.
 * - Rule 2: nothing leaves a reader port towards a local address unless root owns the socket.
 *   Ports >= net.ipv4.ip_unprivileged_port_start (1024 by default, often 0 in containers) can be
 *   bound by anyone while pcscd is down: such a listener's SYN-ACK is dropped, so the daemon's
 *   connect never completes and not one frame reaches it. Applied to every range, so the guard
 *   does not depend on that sysctl, which root may change at any time.
 * - Packets without a full socket (the kernel's own RSTs, TIME_WAIT) have no owner: the rules do
 *   not match them, and they carry nothing.
 *
 * Applied in one `nft -f` transaction (create, delete, create: atomic and idempotent), and left
 * in place when the daemon exits, so the ports stay closed while it restarts.
 *
 * Rule 2 would also drop an unprivileged client whose kernel-picked source port happens to fall
 * in the range (only for ranges inside net.ipv4.ip_local_port_range, e.g. vpcd's own 35963): the
 * range is then added to net.ipv4.ip_local_reserved_ports, which the kernel never picks from.
 */
import { execFile, spawn } from 'node:child_process';
import { access, constants, readFile, readlink, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';

import { TpmvscError } from '../common/errors.js';
import { readersInWholeBlocks } from './reader_config.js';

/** The reader ports of a pool: every port of every block of two, first..last inclusive. */
export interface VpcdPortRange {
  first: number;
  last: number;
}

/** What installVpcdGuard did, for the log. */
export interface InstalledGuard {
  /** `inet tpmvsc_vpcd_<first>_<last>`. */
  table: string;
  /** Socket owners let through: root and the daemon's uid. */
  uids: number[];
  /** net.ipv4.ip_unprivileged_port_start: ports from there up can be bound by anyone (rule 2 covers them). */
  unprivilegedPortStart: number | undefined;
  /** The range was inside the ephemeral range and is now in ip_local_reserved_ports. */
  reservedFromEphemeral: boolean;
}

const SYSCTL = '/proc/sys/net/ipv4';

/** vpcd listens on both ports of every block: pools of an odd size still open the last block's second port. */
export function readerPortRange(basePort: number, readers: number): VpcdPortRange {
  return { first: basePort, last: Math.min(65535, basePort + readersInWholeBlocks(readers) - 1) };
}

export function describeRange(range: VpcdPortRange): string {
  return range.first === range.last ? `port ${range.first}` : `ports ${range.first}-${range.last}`;
}

/** The table of one range (family and name, as nft commands take them). */
export function guardTableName(range: VpcdPortRange): string {
  return `inet tpmvsc_vpcd_${range.first}_${range.last}`;
}

function checkRange(range: VpcdPortRange): void {
  if (!Number.isInteger(range.first) || !Number.isInteger(range.last) || range.first < 1 || range.last > 65535 || range.first > range.last) {
    throw new TpmvscError('BAD_REQUEST', `invalid vpcd port range ${String(range.first)}-${String(range.last)}`);
  }
}

/** The nft script that (re)creates the range's table in one transaction. */
export function guardRuleset(range: VpcdPortRange, uids: readonly number[]): string {
  checkRange(range);
  const allowed = [...new Set([0, ...uids])].sort((a, b) => a - b);
  for (const uid of allowed) {
    if (!Number.isInteger(uid) || uid < 0 || uid > 0xfffffffe) throw new TpmvscError('BAD_REQUEST', `invalid uid ${String(uid)}`);
  }
  const table = guardTableName(range);
  const ports = range.first === range.last ? String(range.first) : `${range.first}-${range.last}`;
  return [
    // Creating the table first makes the delete succeed when it did not exist yet.
    `table ${table}`,
    `delete table ${table}`,
    `table ${table} {`,
    '  chain output {',
    '    type filter hook output priority filter; policy accept;',
    `    tcp dport ${ports} fib daddr type local meta skuid != { ${allowed.join(', ')} } reject with tcp reset`,
    `    tcp sport ${ports} fib daddr type local meta skuid != 0 drop`,
    '  }',
    '}',
    '',
  ].join('\n');
}

/** nft is in /usr/sbin, which an unprivileged PATH may lack. */
async function findNft(): Promise<string> {
  for (const candidate of ['/usr/sbin/nft', '/sbin/nft']) {
    try {
      await access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  throw new TpmvscError('VPCD_UNGUARDED', 'nft is not installed (apt-get install nftables)');
}

function runNft(nft: string, args: readonly string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(nft, args, { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      if (code === 0) resolve();
      else reject(new Error(stderr.trim().split('\n')[0] || `nft exited with ${String(code)}`));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

async function readSysctl(name: string): Promise<string | undefined> {
  try {
    return (await readFile(`${SYSCTL}/${name}`, 'utf8')).trim();
  } catch {
    return undefined;
  }
}

/** Keeps the kernel from handing out a reader port as an unprivileged client's source port (see top). */
async function reserveFromEphemeral(range: VpcdPortRange): Promise<boolean> {
  const [low, high] = (await readSysctl('ip_local_port_range'))?.split(/\s+/).map(Number) ?? [];
  if (low === undefined || high === undefined || range.last < low || range.first > high) return false;
  const reserved = (await readSysctl('ip_local_reserved_ports')) ?? '';
  const entry = `${range.first}-${range.last}`;
  // The kernel keeps a bitmap: writing the old list plus ours again is idempotent.
  await writeFile(`${SYSCTL}/ip_local_reserved_ports`, reserved ? `${reserved},${entry}` : entry);
  return true;
}

/**
 * Installs (or replaces) the guard of `range`, letting root and `daemonUid` connect. Needs
 * CAP_NET_ADMIN in this network namespace. Throws TpmvscError('VPCD_UNGUARDED') with nft's reason.
 */
export async function installVpcdGuard(range: VpcdPortRange, daemonUid: number): Promise<InstalledGuard> {
  const uids = [...new Set([0, daemonUid])];
  const ruleset = guardRuleset(range, uids);
  const nft = await findNft();
  try {
    await runNft(nft, ['-f', '-'], ruleset);
  } catch (error) {
    throw new TpmvscError('VPCD_UNGUARDED', `nft could not install the table ${guardTableName(range)}: ${(error as Error).message}`, { cause: error });
  }
  let reservedFromEphemeral = false;
  try {
    reservedFromEphemeral = await reserveFromEphemeral(range);
  } catch (error) {
    throw new TpmvscError('VPCD_UNGUARDED', `cannot reserve ${describeRange(range)} in net.ipv4.ip_local_reserved_ports: ${(error as Error).message}`, { cause: error });
  }
  const start = Number(await readSysctl('ip_unprivileged_port_start'));
  return { table: guardTableName(range), uids, unprivilegedPortStart: Number.isInteger(start) ? start : undefined, reservedFromEphemeral };
}

/** Removes the guard of `range` (tests, and an admin moving the pool); absent is fine. */
export async function removeVpcdGuard(range: VpcdPortRange): Promise<void> {
  const nft = await findNft();
  // "destroy" would do this in one word but needs nftables >= 1.0.8; Debian 12 has 1.0.6.
  await runNft(nft, ['-f', '-'], `table ${guardTableName(range)}\ndelete table ${guardTableName(range)}\n`);
}

/** This process's network namespace, e.g. "net:[4026531840]": the rules live in one namespace. */
export function networkNamespaceId(): Promise<string> {
  return readlink('/proc/self/ns/net');
}

/** This boot's id: a record from an earlier boot names rules that are gone. */
export async function bootId(): Promise<string> {
  return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
}

/**
 * When the kernel booted, in seconds since the epoch (/proc/stat "btime"). Unlike boot_id it
 * reads the same in every mount namespace: systemd-nspawn puts a container's own boot_id over
 * /proc/sys/kernel/random/boot_id, and a unit with ProtectKernelTunables= (tpmvscd's) sees the
 * host's again beneath it, so its root ExecStartPre and the daemon read different ids.
 */
export async function kernelBootTime(): Promise<number> {
  const line = /^btime (\d+)$/m.exec(await readFile('/proc/stat', 'utf8'));
  if (!line) throw new Error('/proc/stat has no btime line');
  return Number(line[1]);
}

/** The uid of a user name (or a uid given as digits), through NSS like every other tool. */
export async function resolveUid(user: string): Promise<number> {
  if (/^\d+$/.test(user)) return Number(user);
  try {
    const { stdout } = await promisify(execFile)('id', ['-u', '--', user], { timeout: 10_000 });
    return Number(stdout.trim());
  } catch {
    throw new TpmvscError('USAGE', `no user ${user.slice(0, 40)} on this machine`);
  }
}
