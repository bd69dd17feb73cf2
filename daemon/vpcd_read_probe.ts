/**
 * Is vpcd waiting for our reply right now? Proven from the kernel's socket queues, never
 * guessed from time (vpcd_link.ts says why the link needs to know).
 *
 * vpcd reads from its socket only inside vicc_transmit, after it has sent that command
 * (or, for a zero-length command, sending nothing), and reads exactly one reply frame. So
 * if, at one instant, vpcd has read every byte we wrote and has written nothing we have
 * not read, it is blocked in a read for the reply to the last command we received (or to
 * a zero-length one). The probe establishes that instant, in this order:
 *
 *   1. our counters (bytes read, bytes written) and Node's write buffer (empty);
 *   2. SIOCOUTQ on our socket = 0: vpcd's kernel has acknowledged every byte we wrote, so
 *      all of it is in vpcd's receive queue or already read;
 *   3. vpcd's end of this connection, from /proc/net/tcp (same 4-tuple, reversed):
 *        rx_queue = 0  vpcd has read all of it,
 *        tx_queue = 0  our kernel has acknowledged everything vpcd wrote;
 *   4. SIOCINQ on our socket = 0, and the counters of step 1 unchanged: nothing vpcd wrote
 *      before step 3 is still unread or arrived since step 1 without us seeing it.
 *
 *   /proc/net/tcp, one line per socket (kernel net/ipv4/tcp_ipv4.c, get_tcp4_sock):
 *     sl  local_address rem_address   st tx_queue rx_queue ...
 *     0: 0100007F:8C7B 0100007F:A1B2 01 00000000:00000000 ...
 *   addresses are the __be32 printed as a host-order %08X, ports %04X; st 01 = ESTABLISHED;
 *   for an established socket tx_queue = write_seq - snd_una, rx_queue = rcv_nxt - copied_seq.
 *
 * Anything else (a missing or doubled line, a busy queue, a byte moved during the probe)
 * answers 'not_proven': the caller asks again later. IPv4 only (vpcd listens on IPv4).
 * /proc/net/tcp is read asynchronously: it lists every TCP socket of the network namespace.
 */
import { accessSync, constants } from 'node:fs';
import { readFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';

import { libcSocket, SIOCINQ, SIOCOUTQ, socketFd } from './libc_socket.js';

export type ProbeResult = 'reading' | 'not_proven' | 'unavailable';

/** Bytes that went through the connection, counted by its owner as Node hands them over. */
export interface ByteCounters {
  readonly bytesIn: number;
  readonly bytesOut: number;
}

/** One field of /proc/net/tcp for an IPv4 address and port, e.g. 127.0.0.1:35963 -> 0100007F:8C7B. */
export function procNetAddress(address: string, port: number): string {
  const octets = Buffer.from(address.split('.').map(Number));
  const word = os.endianness() === 'LE' ? octets.readUInt32LE(0) : octets.readUInt32BE(0);
  const hex = (value: number, digits: number) => value.toString(16).toUpperCase().padStart(digits, '0');
  return `${hex(word, 8)}:${hex(port, 4)}`;
}

/** tx_queue and rx_queue of the one established socket with these ends, or undefined. */
export function findQueues(table: string, local: string, remote: string): { tx: number; rx: number } | undefined {
  let found: { tx: number; rx: number } | undefined;
  let count = 0;
  for (const line of table.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields[1] !== local || fields[2] !== remote || fields[3] !== '01') continue;
    const [tx, rx] = (fields[4] ?? '').split(':').map((value) => parseInt(value, 16));
    if (!Number.isInteger(tx) || !Number.isInteger(rx)) return undefined;
    found = { tx: tx!, rx: rx! };
    count++;
  }
  return count === 1 ? found : undefined;
}

let procNetTcpReadable: boolean | undefined;

/** Whether probeDriverReading can ever answer 'reading' for this socket (checked before a reply is begun ahead). */
export function probeAvailable(socket: net.Socket): boolean {
  if (procNetTcpReadable === undefined) {
    try {
      accessSync('/proc/net/tcp', constants.R_OK);
      procNetTcpReadable = true;
    } catch {
      procNetTcpReadable = false;
    }
  }
  return procNetTcpReadable && libcSocket() !== null && net.isIPv4(socket.localAddress ?? '') && net.isIPv4(socket.remoteAddress ?? '');
}

/**
 * 'reading' only when proven (see above); 'unavailable' when this system cannot tell
 * (no libc binding, no /proc/net/tcp, not IPv4): the caller must not wait for a proof then.
 */
export async function probeDriverReading(socket: net.Socket, counters: ByteCounters): Promise<ProbeResult> {
  const libc = libcSocket();
  const fd = socketFd(socket);
  const { localAddress, localPort, remoteAddress, remotePort } = socket;
  if (!libc || !localAddress || !localPort || !remoteAddress || !remotePort || !net.isIPv4(localAddress) || !net.isIPv4(remoteAddress)) {
    return socket.destroyed || fd === undefined ? 'not_proven' : 'unavailable';
  }
  if (fd === undefined) return 'not_proven';
  const bytesIn = counters.bytesIn;
  const bytesOut = counters.bytesOut;
  const queued = [0];
  if (socket.writableLength !== 0 || libc.ioctlInt(fd, SIOCOUTQ, queued) !== 0 || queued[0] !== 0) return 'not_proven';
  let table: string;
  try {
    table = await readFile('/proc/net/tcp', 'utf8');
  } catch {
    return 'unavailable';
  }
  // vpcd's end: its local end is our remote end and the other way round.
  const peer = findQueues(table, procNetAddress(remoteAddress, remotePort), procNetAddress(localAddress, localPort));
  if (!peer || peer.rx !== 0 || peer.tx !== 0) return 'not_proven';
  // The socket may have closed while the table was read (and its descriptor been reused).
  if (socket.destroyed || socketFd(socket) !== fd) return 'not_proven';
  if (libc.ioctlInt(fd, SIOCINQ, queued) !== 0 || queued[0] !== 0) return 'not_proven';
  if (counters.bytesIn !== bytesIn || counters.bytesOut !== bytesOut || socket.writableLength !== 0) return 'not_proven';
  return 'reading';
}
