import os from 'node:os';

import test from 'ava';

import { findQueues, procNetAddress } from '../../daemon/vpcd_read_probe.js';

test('procNetAddress writes an IPv4 end as /proc/net/tcp does (host-order hex of the network-order word)', (t) => {
  const little = os.endianness() === 'LE';
  t.is(procNetAddress('127.0.0.1', 35963), little ? '0100007F:8C7B' : '7F000001:8C7B');
  t.is(procNetAddress('127.0.0.2', 1), little ? '0200007F:0001' : '7F000002:0001');
});

const HEADER = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode';
const line = (sl: number, local: string, remote: string, st: string, queues: string) =>
  `  ${sl}: ${local} ${remote} ${st} ${queues} 00:00000000 00000000     0        0 12345 1 0000000000000000 20 4 30 10 -1`;
const VPCD = '0100007F:8C7B';
const CARD = '0100007F:A1B2';

const rows: { name: string; table: string[]; want: { tx: number; rx: number } | undefined }[] = [
  { name: "vpcd's end, queues empty", table: [line(0, VPCD, '00000000:0000', '0A', '00000000:00000000'), line(1, VPCD, CARD, '01', '00000000:00000000'), line(2, CARD, VPCD, '01', '00000000:00000000')], want: { tx: 0, rx: 0 } },
  { name: 'one byte unread, three unacknowledged', table: [line(0, VPCD, CARD, '01', '00000003:00000001')], want: { tx: 3, rx: 1 } },
  { name: 'our own end only (reversed)', table: [line(0, CARD, VPCD, '01', '00000000:00000000')], want: undefined },
  { name: 'not established (FIN_WAIT1)', table: [line(0, VPCD, CARD, '04', '00000000:00000000')], want: undefined },
  { name: 'another address with the same ports', table: [line(0, '0500007F:8C7B', CARD, '01', '00000000:00000000')], want: undefined },
  { name: 'the line twice (a table read across a change)', table: [line(0, VPCD, CARD, '01', '00000000:00000000'), line(1, VPCD, CARD, '01', '00000000:00000000')], want: undefined },
  { name: 'no such line', table: [], want: undefined },
];

for (const row of rows) {
  test(`findQueues: ${row.name}`, (t) => {
    t.deepEqual(findQueues([HEADER, ...row.table, ''].join('\n'), VPCD, CARD), row.want);
  });
}
