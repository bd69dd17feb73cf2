/**
 * The guard record: how a daemon without CAP_NET_ADMIN (systemd's User=tpmvsc) learns that root
 * installed the vpcd guard (vpcd_guard.ts) for exactly its ports and its uid. It cannot list
 * nftables rules itself, so root (`tpmvscd guard-vpcd`, the unit's ExecStartPre=+) writes a record
 * right after `nft` succeeded, beside the control socket (/run/tpmvsc):
 *
 *   <dir>/vpcd-guard-<first>-<last>.json   owner root, mode 0644
 *   {"format":1,"table":"inet tpmvsc_vpcd_470_479","ports":[470,479],"uids":[0,998],
 *    "networkNamespace":"net:[4026531840]","bootId":"...","bootTime":1796300000}
 *
 * Only root can make a file owned by root, so the daemon's user cannot forge one, and nobody
 * else can write in a directory that only root or the daemon may write to (checked). The record
 * holds for this boot and this network namespace only: rules die with either. What it cannot
 * tell: whether root deleted the table since (`nft flush ruleset`); the docs say so.
 */
import { constants } from 'node:fs';
import { lstat, open } from 'node:fs/promises';
import { join } from 'node:path';

import { TpmvscError } from '../common/errors.js';
import { writeFileAtomic } from './atomic_file.js';
import { bootId, describeRange, guardTableName, kernelBootTime, networkNamespaceId, type VpcdPortRange } from './vpcd_guard.js';

export interface VpcdGuardRecord {
  format: 1;
  table: string;
  ports: [number, number];
  uids: number[];
  networkNamespace: string;
  bootId: string;
  /** The kernel's boot time (kernelBootTime), for readers that see another boot_id (containers). */
  bootTime: number;
}

/**
 * How far apart two readings of the boot time may be: btime moves when the clock is stepped
 * (NTP), and a reboot takes longer than this.
 */
const BOOT_TIME_TOLERANCE_SECONDS = 2;

const MAX_RECORD_BYTES = 4096;

export function guardRecordPath(directory: string, range: VpcdPortRange): string {
  return join(directory, `vpcd-guard-${range.first}-${range.last}.json`);
}

function unguarded(detail: string): TpmvscError {
  return new TpmvscError('VPCD_UNGUARDED', detail);
}

/** Root or the daemon's user owns the directory, and no one else may write in it. */
async function checkDirectory(directory: string, daemonUid: number): Promise<void> {
  let stats;
  try {
    stats = await lstat(directory);
  } catch {
    throw unguarded(`${directory} does not exist (the daemon's runtime directory, e.g. install -d -o tpmvsc -g tpmvsc -m 0750 ${directory})`);
  }
  if (!stats.isDirectory()) throw unguarded(`${directory} is not a directory`);
  if (stats.uid !== 0 && stats.uid !== daemonUid) throw unguarded(`${directory} belongs to uid ${stats.uid}, neither root nor the daemon's user`);
  if ((stats.mode & 0o022) !== 0) throw unguarded(`${directory} can be written by group or others (chmod go-w ${directory})`);
}

/** Root, after installing the rules: writes the record atomically (never through a link). */
export async function writeGuardRecord(directory: string, range: VpcdPortRange, uids: readonly number[], daemonUid: number): Promise<string> {
  await checkDirectory(directory, daemonUid);
  const record: VpcdGuardRecord = {
    format: 1,
    table: guardTableName(range),
    ports: [range.first, range.last],
    uids: [...uids],
    networkNamespace: await networkNamespaceId(),
    bootId: await bootId(),
    bootTime: await kernelBootTime(),
  };
  const path = guardRecordPath(directory, range);
  // Created anew (O_EXCL) and renamed into place: the daemon's user owns the directory and must
  // not steer root's write through a link.
  await writeFileAtomic(path, `${JSON.stringify(record)}\n`, 0o644);
  return path;
}

/**
 * The daemon's user, at start: the record for exactly `range`, from root, this boot and this
 * network namespace, letting `uid` through. Throws TpmvscError('VPCD_UNGUARDED') saying what is wrong.
 */
export async function checkGuardRecord(directory: string, range: VpcdPortRange, uid: number): Promise<VpcdGuardRecord> {
  await checkDirectory(directory, uid);
  const path = guardRecordPath(directory, range);
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw unguarded(code === 'ENOENT' ? `no guard record ${path}` : `${path} cannot be opened (${code ?? 'error'})`);
  }
  let text: string;
  try {
    // Checked on the open descriptor: the file read is the file checked.
    const stats = await handle.stat();
    if (!stats.isFile() || stats.uid !== 0) throw unguarded(`${path} was not written by root`);
    if ((stats.mode & 0o022) !== 0) throw unguarded(`${path} can be written by group or others`);
    if (stats.size > MAX_RECORD_BYTES) throw unguarded(`${path} is not a guard record`);
    text = await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
  let record: VpcdGuardRecord;
  try {
    record = JSON.parse(text) as VpcdGuardRecord;
  } catch {
    throw unguarded(`${path} is not a guard record`);
  }
  const ports = Array.isArray(record.ports) ? record.ports : [];
  if (record.format !== 1 || record.table !== guardTableName(range) || ports[0] !== range.first || ports[1] !== range.last) {
    throw unguarded(`${path} does not guard ${describeRange(range)}`);
  }
  if (!Array.isArray(record.uids) || !record.uids.includes(uid)) throw unguarded(`${path} does not let uid ${uid} through (guard-vpcd --daemon-user names another user)`);
  if (!(await sameBoot(record))) throw unguarded(`${path} is from an earlier boot`);
  if (record.networkNamespace !== (await networkNamespaceId())) throw unguarded(`${path} was written in another network namespace`);
  return record;
}

/** The same boot id, or (a container's service, which sees the host's id) the same kernel boot time. */
async function sameBoot(record: VpcdGuardRecord): Promise<boolean> {
  if (record.bootId === (await bootId())) return true;
  return typeof record.bootTime === 'number' && Math.abs(record.bootTime - (await kernelBootTime())) <= BOOT_TIME_TOLERANCE_SECONDS;
}
