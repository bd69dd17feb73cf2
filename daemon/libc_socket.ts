/**
 * The few libc socket calls Node has no API for (setsockopt/getsockopt of TCP options, the
 * SIOCINQ/SIOCOUTQ queue sizes), bound through the koffi FFI package on first use, and the
 * descriptor they need, which Node exposes only as the internal `socket._handle.fd`.
 *
 * Linux only. Every caller fails soft: `libcSocket()` answers null (with the reason in
 * `libcSocketFailure()`) when the binding cannot be made.
 */
import { createRequire } from 'node:module';
import type { Socket } from 'node:net';

/** <netinet/in.h> */
export const IPPROTO_TCP = 6;
/** <asm-generic/ioctls.h>: unread bytes in the receive queue (FIONREAD), bytes not yet acknowledged by the peer (TIOCOUTQ). */
export const SIOCINQ = 0x541b;
export const SIOCOUTQ = 0x5411;

export interface LibcSocket {
  setsockopt(fd: number, level: number, name: number, value: Buffer, length: number): number;
  getsockopt(fd: number, level: number, name: number, value: Buffer, length: Buffer): number;
  /** ioctl(fd, request, int *value): the int lands in value[0]. */
  ioctlInt(fd: number, request: number, value: number[]): number;
}

/** Minimal view of koffi's API that this module uses. */
interface KoffiLike {
  load(path: string): { func(declaration: string): (...args: unknown[]) => unknown };
}

/** Node's internal handle of a TCP socket; `fd` is -1 (or absent) until connected. */
interface SocketWithHandle {
  _handle?: { fd?: unknown } | null;
}

let binding: LibcSocket | null | undefined;
let failure = '';

/** The libc binding, made on first use; null when it cannot be (see libcSocketFailure()). */
export function libcSocket(): LibcSocket | null {
  if (binding !== undefined) return binding;
  binding = null;
  if (process.platform !== 'linux') {
    failure = `socket options through libc are Linux-only (platform ${process.platform})`;
    return null;
  }
  try {
    const koffi = createRequire(import.meta.url)('koffi') as KoffiLike;
    const libc = koffi.load('libc.so.6');
    const set = libc.func('int setsockopt(int fd, int level, int name, const void *value, uint32_t length)');
    const get = libc.func('int getsockopt(int fd, int level, int name, void *value, void *length)');
    const ioctl = libc.func('int ioctl(int fd, unsigned long request, ...)');
    binding = {
      setsockopt: set as LibcSocket['setsockopt'],
      getsockopt: get as LibcSocket['getsockopt'],
      ioctlInt: (fd, request, value) => ioctl(fd, request, 'int *', value) as number,
    };
  } catch (error) {
    failure = `cannot bind libc through koffi: ${error instanceof Error ? error.message : String(error)}`;
  }
  return binding;
}

/** Why libcSocket() answered null ('' when it did not). */
export function libcSocketFailure(): string {
  return failure;
}

/** The OS file descriptor of a connected socket, or undefined when Node does not expose it. */
export function socketFd(socket: Socket): number | undefined {
  const fd = (socket as unknown as SocketWithHandle)._handle?.fd;
  return typeof fd === 'number' && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}
