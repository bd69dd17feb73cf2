/**
 * TCP_QUICKACK for Node sockets (Linux only), through libc's setsockopt via koffi.
 *
 * Why: vpcd's driver writes the 2-byte length and the payload of each frame in two
 * send() calls. With Nagle on the driver's side and delayed ACK on ours, every APDU
 * stalls ~40 ms until our kernel's delayed-ACK timer fires. Quick-ACK mode makes our
 * kernel acknowledge the first segment at once, so the driver's second send() goes
 * out immediately. Linux leaves quick-ACK mode on its own (e.g. whenever the socket
 * sends), so callers re-arm it after every write and every read.
 *
 * Node has no API for the option (libc_socket.ts calls libc). Everything here fails
 * soft: when the option cannot be set (no koffi, no libc, no fd) the link still works,
 * only slower, and one diagnostic is published on the `tpmvsc:tcp_quickack` channel.
 */
import { channel } from 'node:diagnostics_channel';
import type { Socket } from 'node:net';

import { IPPROTO_TCP, libcSocket, libcSocketFailure, socketFd } from './libc_socket.js';

/** <netinet/tcp.h> on Linux. */
const TCP_QUICKACK = 12;

/** Published once when quick-ACK cannot be used: `{ reason: string }`. */
export const quickAckChannel = channel('tpmvsc:tcp_quickack');

let reportedFailure = false;
const ON = Buffer.from(new Int32Array([1]).buffer);
const OFF = Buffer.from(new Int32Array([0]).buffer);

function reportOnce(reason: string): void {
  if (reportedFailure) return;
  reportedFailure = true;
  if (quickAckChannel.hasSubscribers) quickAckChannel.publish({ reason });
}

/**
 * Puts the socket in quick-ACK mode (again). Returns false, without throwing, when it
 * could not (the first such failure is published on quickAckChannel).
 */
export function armQuickAck(socket: Socket): boolean {
  return setQuickAck(socket, true);
}

/**
 * Sets TCP_QUICKACK to 1 (quick-ACK mode now) or 0 (let the kernel delay ACKs, the
 * default for interactive traffic). Returns false, without throwing, when it could not.
 */
export function setQuickAck(socket: Socket, enabled: boolean): boolean {
  const functions = libcSocket();
  if (!functions) {
    reportOnce(libcSocketFailure());
    return false;
  }
  const fd = socketFd(socket);
  if (fd === undefined) {
    // A socket that is closing has no fd any more: not worth a diagnostic.
    if (!socket.destroyed) reportOnce('the socket exposes no file descriptor (socket._handle.fd)');
    return false;
  }
  if (functions.setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, enabled ? ON : OFF, 4) !== 0) {
    if (!socket.destroyed) reportOnce(`setsockopt(TCP_QUICKACK) failed on fd ${fd}`);
    return false;
  }
  return true;
}

/**
 * Reads the quick-ACK state back (Linux reports whether the socket is currently in
 * quick-ACK mode). Undefined when it cannot be read. For tests and diagnostics.
 */
export function readQuickAck(socket: Socket): boolean | undefined {
  const functions = libcSocket();
  const fd = socketFd(socket);
  if (!functions || fd === undefined) return undefined;
  const value = Buffer.alloc(4);
  const length = Buffer.from(new Uint32Array([4]).buffer);
  if (functions.getsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, value, length) !== 0) return undefined;
  return value.readInt32LE(0) !== 0;
}
