/**
 * TCP_QUICKACK is really set (read back from the kernel) and really matters: through the
 * stock vpcd driver a link without it stalls ~40 ms per APDU, with it it does not.
 */
import net from 'node:net';

import test from 'ava';

import { armQuickAck, readQuickAck, setQuickAck } from '../../daemon/tcp_quickack.js';
import { VpcdLink } from '../../daemon/vpcd_link.js';
import { EchoCard } from '../helpers/echo_card.js';
import { openPcsc } from '../helpers/pcsc_client.js';
import { startPcscd } from '../helpers/pcscd.js';

test('setsockopt(TCP_QUICKACK) reads back through getsockopt', async (t) => {
  const server = net.createServer((socket) => socket.on('data', (data) => socket.write(data)));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  t.teardown(() => {
    client.destroy();
    server.close();
  });
  await new Promise<void>((resolve) => client.once('connect', () => resolve()));
  t.true(setQuickAck(client, false));
  t.is(readQuickAck(client), false, 'delayed-ACK (pingpong) mode');
  t.true(armQuickAck(client));
  t.is(readQuickAck(client), true, 'quick-ACK mode');
});

test('armQuickAck fails soft on a socket without a descriptor', (t) => {
  const socket = new net.Socket();
  t.false(armQuickAck(socket));
  t.is(readQuickAck(socket), undefined);
});

function median(values: number[]): number {
  const sorted = [...values].sort((x, y) => x - y);
  return sorted[Math.floor(sorted.length / 2)]!;
}

test('through the stock driver: no 40 ms stall with quick-ACK, the stall without it', async (t) => {
  const pcscd = await startPcscd({ readers: 2 });
  pcscd.useInThisProcess();
  const fast = new VpcdLink({ card: new EchoCard(), port: pcscd.port(0) }).start();
  const slow = new VpcdLink({ card: new EchoCard(), port: pcscd.port(1), quickAck: false }).start();
  const client = openPcsc();
  t.teardown(async () => {
    client.close();
    await Promise.all([fast.close(), slow.close()]);
    await pcscd.stop();
  });
  const timeApdus = async (slot: number, count: number) => {
    await client.waitForReader(pcscd.readerName(slot));
    await client.waitForCard(pcscd.readerName(slot), true);
    const connection = await client.connect(pcscd.readerName(slot));
    const samples: number[] = [];
    for (let i = 0; i < count + 2; i++) {
      const started = process.hrtime.bigint();
      await connection.transmit(Buffer.from('00cb3fff055c035fc10200', 'hex'));
      if (i >= 2) samples.push(Number(process.hrtime.bigint() - started) / 1e6);
    }
    await connection.disconnect('leave');
    return median(samples);
  };
  const withQuickAck = await timeApdus(0, 40);
  const without = await timeApdus(1, 8);
  t.log(`median with quick-ACK ${withQuickAck.toFixed(3)} ms, without ${without.toFixed(1)} ms`);
  t.true(withQuickAck < 10, `with quick-ACK: ${withQuickAck} ms`);
  t.true(without > 30, `without quick-ACK: ${without} ms (expected the ~40 ms delayed-ACK stall)`);
});
