/**
 * What tpmvscd does about the vpcd guard (vpcd_guard.ts) before it connects any reader, and what
 * `tpmvscd guard-vpcd` does for a daemon that will run as another user:
 *
 *   --allow-unprotected-vpcd   no guard; a warning in the log at every start
 *   run as root                installs the guard itself (root and its own uid 0 let through)
 *   run as another user        needs the record root wrote with guard-vpcd (vpcd_guard_record.ts)
 *
 * Anything else: TpmvscError('VPCD_UNGUARDED'), exit code 12, one line naming the fix; the
 * daemon brings no card up.
 */
import { dirname } from 'node:path';

import { TpmvscError } from '../common/errors.js';
import type { GuardVpcdConfig, PoolConfig, RunConfig } from './config.js';
import { describeRange, installVpcdGuard, readerPortRange, resolveUid, type InstalledGuard, type VpcdPortRange } from './vpcd_guard.js';
import { checkGuardRecord, writeGuardRecord } from './vpcd_guard_record.js';

function poolRange(pool: PoolConfig): VpcdPortRange {
  return readerPortRange(pool.vpcd.port, pool.readers);
}

/** The pool options a guard-vpcd run needs to guard the same ports as this daemon. */
function poolOptions(config: RunConfig): string {
  return `--vpcd ${config.vpcd.host}:${config.vpcd.port} --readers ${config.readers} --socket ${config.socketPath}`;
}

function describeInstalled(range: VpcdPortRange, guard: InstalledGuard): string {
  const uids = guard.uids.map((uid) => (uid === 0 ? 'root' : `uid ${uid}`)).join(' and ');
  const parts = [`vpcd guard: table ${guard.table} lets only ${uids} connect to ${describeRange(range)} (every local address) and only root send from them`];
  if (guard.unprivilegedPortStart !== undefined && range.last >= guard.unprivilegedPortStart) {
    parts.push(`ports from ${guard.unprivilegedPortStart} up can be bound by any user (net.ipv4.ip_unprivileged_port_start): the guard drops what such a listener sends`);
  }
  if (guard.reservedFromEphemeral) parts.push('the ports are now reserved from the ephemeral range (net.ipv4.ip_local_reserved_ports)');
  return parts.join('; ');
}

/**
 * Makes sure the reader ports are guarded before any card connects; returns the line to log.
 * Throws TpmvscError('VPCD_UNGUARDED') naming the fix when it cannot.
 */
export async function protectVpcdPorts(config: RunConfig, uid: number = process.geteuid?.() ?? 0): Promise<string> {
  const range = poolRange(config);
  if (config.allowUnprotectedVpcd) {
    return `WARNING: --allow-unprotected-vpcd: tpmvscd does NOT guard the vpcd reader ${describeRange(range)}. ` +
      'Unless you keep other local users from connecting to them and from listening on them, any of them can take a card\'s place in its reader, read the PIN of the next VERIFY and sign with the card.';
  }
  const escape = 'or start with --allow-unprotected-vpcd if you keep other local users off those ports another way';
  if (uid === 0) {
    try {
      return describeInstalled(range, await installVpcdGuard(range, 0));
    } catch (error) {
      if (!(error instanceof TpmvscError)) throw error;
      throw new TpmvscError('VPCD_UNGUARDED', `${error.detail ?? error.message}: install nftables and run the daemon as root with CAP_NET_ADMIN, ${escape}`, { cause: error });
    }
  }
  try {
    const record = await checkGuardRecord(dirname(config.socketPath), range, uid);
    return `vpcd guard: table ${record.table}, installed by root for ${describeRange(range)}, lets this daemon's uid ${uid} through`;
  } catch (error) {
    if (!(error instanceof TpmvscError)) throw error;
    throw new TpmvscError(
      'VPCD_UNGUARDED',
      `${error.detail ?? error.message}: run "tpmvscd guard-vpcd --daemon-user ${uid} ${poolOptions(config)}" as root before starting the daemon (the systemd unit's ExecStartPre does), or start the daemon as root, ${escape}`,
      { cause: error },
    );
  }
}

/** `tpmvscd guard-vpcd` (root): the guard for the daemon's user, and the record it checks. */
export async function guardForDaemonUser(config: GuardVpcdConfig, uid: number = process.geteuid?.() ?? 0): Promise<string> {
  if (uid !== 0) throw new TpmvscError('VPCD_UNGUARDED', 'guard-vpcd must run as root (it changes nftables rules)');
  const daemonUid = await resolveUid(config.daemonUser);
  const range = poolRange(config);
  const guard = await installVpcdGuard(range, daemonUid);
  const record = await writeGuardRecord(dirname(config.socketPath), range, guard.uids, daemonUid);
  return `${describeInstalled(range, guard)}; record ${record}`;
}
