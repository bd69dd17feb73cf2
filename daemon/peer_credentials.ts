/**
 * Who is on the other end of a Unix socket: SO_PEERCRED (credentials the kernel recorded at
 * connect()) and the peer's supplementary groups, to let only root and the admin group in.
 *
 *   struct ucred {        // <sys/socket.h>, 12 bytes, host byte order
 *     pid_t pid;          // offset 0, int32
 *     uid_t uid;          // offset 4, uint32
 *     gid_t gid;          // offset 8, uint32
 *   };
 *
 * Node has no API for getsockopt: libc is called through koffi on the socket's file descriptor,
 * which Node exposes only as the internal `socket._handle.fd`.
 */
import { readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import koffi, { type TypeObject } from 'koffi';

export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const UCRED_BYTES = 12;

interface Libc {
  getsockopt: (fd: number, level: number, optname: number, optval: Buffer, optlen: number[]) => number;
  getgrnam: (name: string) => unknown;
  groupStruct: TypeObject;
}

let libc: Libc | undefined;

/** Loads libc once, on first use. */
function loadLibc(): Libc {
  if (libc) return libc;
  const library = koffi.load('libc.so.6');
  const groupStruct = koffi.struct('tpmvsc_group', {
    gr_name: 'char *',
    gr_passwd: 'char *',
    gr_gid: 'uint32_t',
    gr_mem: 'void *',
  });
  libc = {
    getsockopt: library.func('int getsockopt(int fd, int level, int optname, _Out_ uint8_t *optval, _Inout_ uint32_t *optlen)'),
    getgrnam: library.func('void *getgrnam(const char *name)'),
    groupStruct,
  };
  return libc;
}

/** The file descriptor of a connected net.Socket (internal handle; undefined if Node changes it). */
export function socketFd(socket: Socket): number | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } })._handle;
  return typeof handle?.fd === 'number' && handle.fd >= 0 ? handle.fd : undefined;
}

/** SO_PEERCRED of a Unix socket connection; throws when it cannot be read (then refuse the peer). */
export function peerCredentials(socket: Socket): PeerCredentials {
  const fd = socketFd(socket);
  if (fd === undefined) throw new Error('the socket has no file descriptor');
  const ucred = Buffer.alloc(UCRED_BYTES);
  const length = [UCRED_BYTES];
  if (loadLibc().getsockopt(fd, SOL_SOCKET, SO_PEERCRED, ucred, length) !== 0 || length[0] !== UCRED_BYTES) {
    throw new Error('getsockopt(SO_PEERCRED) failed');
  }
  return { pid: ucred.readInt32LE(0), uid: ucred.readUInt32LE(4), gid: ucred.readUInt32LE(8) };
}

/**
 * The gid of a group by name (getgrnam: /etc/group or NSS), or undefined when it does not exist.
 * May block on NSS: call it once at start-up, not per request.
 */
export function groupId(name: string): number | undefined {
  const lib = loadLibc();
  const pointer = lib.getgrnam(name);
  if (pointer === null || pointer === undefined) return undefined;
  const group = koffi.decode(pointer, lib.groupStruct) as { gr_gid: number };
  return group.gr_gid;
}

/**
 *   /proc/<pid>/status
 *   Uid:  <real> <effective> <saved> <fs>
 *   Groups:  <gid> <gid> ...
 */
export async function processGroups(pid: number): Promise<{ uids: number[]; groups: number[] }> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): number[] => {
    const match = new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status);
    return match ? match[1]!.trim().split(/\s+/).filter(Boolean).map(Number) : [];
  };
  return { uids: field('Uid'), groups: field('Groups') };
}

/**
 * May this peer manage cards? Root, the daemon's own user, and members (primary or supplementary)
 * of the admin group. The pid's uid is re-checked against SO_PEERCRED so a recycled pid does not
 * lend its groups to someone else.
 */
export async function isAdministrator(peer: PeerCredentials, adminGid: number | undefined, daemonUid: number): Promise<boolean> {
  if (peer.uid === 0 || peer.uid === daemonUid) return true;
  if (adminGid === undefined) return false;
  if (peer.gid === adminGid) return true;
  try {
    const { uids, groups } = await processGroups(peer.pid);
    return uids.includes(peer.uid) && groups.includes(adminGid);
  } catch {
    return false;
  }
}
