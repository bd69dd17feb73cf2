/**
 * Reader registration: the files registerReaders writes. That pcscd really shows the
 * computed reader names is checked against a real pcscd in vpcd_pcscd.test.ts.
 */
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import test from 'ava';

import { TpmvscError } from '../../common/errors.js';
import {
  DEFAULT_FRIENDLY_NAME,
  findStockDriver,
  portOf,
  readerName,
  registerReaders,
  DEFAULT_BASE_PORT,
} from '../../daemon/reader_config.js';

async function tempDir(t: { teardown(fn: () => Promise<void>): void }): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'tpmvsc-readerconf-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

const nameRows: { name: string; slot: number; friendlyName?: string; want: string | 'error' }[] = [
  { name: 'slot 0', slot: 0, want: `${DEFAULT_FRIENDLY_NAME} 0 00 00` },
  { name: 'slot 1 shares block 0', slot: 1, want: `${DEFAULT_FRIENDLY_NAME} 0 00 01` },
  { name: 'slot 9 is block 4', slot: 9, want: `${DEFAULT_FRIENDLY_NAME} 4 00 01` },
  { name: 'custom name', slot: 2, friendlyName: 'Corp VSC', want: 'Corp VSC 1 00 00' },
  { name: 'slot 16 is beyond pcscd', slot: 16, want: 'error' },
  { name: 'negative slot', slot: -1, want: 'error' },
  { name: 'quote in the name', slot: 0, friendlyName: 'a"b', want: 'error' },
  { name: 'empty name', slot: 0, friendlyName: '', want: 'error' },
];

test('readerName with plain naming: the FRIENDLYNAME alone, one block of two readers', (t) => {
  t.is(readerName(0, 'Virtual PCD', 'plain'), 'Virtual PCD 00 00');
  t.is(readerName(1, 'Virtual PCD', 'plain'), 'Virtual PCD 00 01');
  t.throws(() => readerName(2, 'Virtual PCD', 'plain'), { instanceOf: TpmvscError, message: /one block of two readers/ });
});

for (const row of nameRows) {
  test(`readerName: ${row.name}`, (t) => {
    const call = () => readerName(row.slot, row.friendlyName);
    if (row.want === 'error') t.throws(call, { instanceOf: TpmvscError });
    else t.is(call(), row.want);
  });
}

test('portOf: slot n listens on basePort + n', (t) => {
  t.is(portOf(0), DEFAULT_BASE_PORT);
  t.is(portOf(0), 470);
  t.is(portOf(9), DEFAULT_BASE_PORT + 9);
  t.is(portOf(3, 40000), 40003);
  t.throws(() => portOf(15, 65530), { instanceOf: TpmvscError });
});

test('the stock driver is found through dpkg', async (t) => {
  const driver = await findStockDriver();
  t.regex(driver, /\/libifdvpcd\.so$/);
  await t.notThrowsAsync(stat(driver));
});

test('registerReaders writes one block per two readers, each with its own name, port and driver copy', async (t) => {
  const dir = await tempDir(t);
  const confDir = path.join(dir, 'reader.conf.d');
  const driverDir = path.join(dir, 'drivers');
  const result = await registerReaders({ confDir, driverDir, basePort: 41000 });
  t.is(result.readers.length, 10);
  t.deepEqual(result.readers[9], { slot: 9, port: 41009, name: `${DEFAULT_FRIENDLY_NAME} 4 00 01` });

  const config = await readFile(result.configFile, 'utf8');
  t.is((await stat(result.configFile)).mode & 0o777, 0o644);
  const blocks = [...config.matchAll(/FRIENDLYNAME "([^"]+)"\nDEVICENAME\s+\/dev\/null:(\d+)\nLIBPATH\s+(\S+)\nCHANNELID\s+0x([0-9A-F]+)/g)];
  t.is(blocks.length, 5);
  t.deepEqual(blocks.map((block) => Number(block[2])), [41000, 41002, 41004, 41006, 41008]);
  t.deepEqual(blocks.map((block) => parseInt(block[4]!, 16)), [41000, 41002, 41004, 41006, 41008]);
  t.is(new Set(blocks.map((block) => block[1])).size, 5, 'every block has its own friendly name');
  t.is(new Set(blocks.map((block) => block[3])).size, 5, 'every block has its own driver file');
  t.is(blocks[0]![3], await findStockDriver(), 'block 0 uses the stock driver');
  for (const block of blocks.slice(1)) {
    t.is(path.dirname(block[3]!), driverDir);
    const [copy, stock] = await Promise.all([readFile(block[3]!), readFile(blocks[0]![3]!)]);
    t.true(copy.equals(stock));
    t.is((await stat(block[3]!)).mode & 0o777, 0o644);
  }
  t.deepEqual((await readdir(confDir)).sort(), ['tpmvsc'], 'no temp files left behind');
});

test('registerReaders rounds odd counts up, removes stale driver copies and is repeatable', async (t) => {
  const dir = await tempDir(t);
  const options = { confDir: path.join(dir, 'conf'), driverDir: path.join(dir, 'drivers'), basePort: 42000 };
  await registerReaders({ ...options, readers: 16 });
  t.is((await readdir(options.driverDir)).length, 7);
  const result = await registerReaders({ ...options, readers: 3 });
  t.is(result.readers.length, 4);
  t.deepEqual(await readdir(options.driverDir), ['libifdvpcd-tpmvsc-1.so']);
  const again = await registerReaders({ ...options, readers: 3 });
  t.is(await readFile(again.configFile, 'utf8'), await readFile(result.configFile, 'utf8'));
});

test('registerReaders disables the stock vpcd reader that would take port 35963', async (t) => {
  const dir = await tempDir(t);
  const confDir = path.join(dir, 'conf');
  const stock = 'FRIENDLYNAME "Virtual PCD"\nDEVICENAME   /dev/null:0x8C7B\nLIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so\nCHANNELID    0x8C7B\n';
  await registerReaders({ confDir, driverDir: path.join(dir, 'drivers'), readers: 2 });
  await writeFile(path.join(confDir, 'vpcd'), stock);
  const result = await registerReaders({ confDir, driverDir: path.join(dir, 'drivers'), readers: 2 });
  t.is(result.disabledStockConfig, path.join(confDir, 'vpcd'));
  const disabled = await readFile(path.join(confDir, 'vpcd'), 'utf8');
  t.false(/^\s*(FRIENDLYNAME|DEVICENAME|LIBPATH|CHANNELID)/m.test(disabled), disabled);
  t.is((await registerReaders({ confDir, driverDir: path.join(dir, 'drivers'), readers: 2 })).disabledStockConfig, null);
});

const invalid: { name: string; options: Record<string, unknown> }[] = [
  { name: 'too many readers', options: { readers: 17 } },
  { name: 'no reader', options: { readers: 0 } },
  { name: 'ports beyond 65535', options: { basePort: 65530 } },
  { name: 'newline in the name', options: { friendlyName: 'a\nb' } },
  { name: 'missing driver', options: { driverPath: '/nonexistent/libifdvpcd.so' } },
  { name: 'relative dirs', options: { confDir: 'conf' } },
];

for (const row of invalid) {
  test(`registerReaders rejects ${row.name} with a typed error`, async (t) => {
    const dir = await tempDir(t);
    const error = await t.throwsAsync(
      registerReaders({ confDir: path.join(dir, 'c'), driverDir: path.join(dir, 'd'), ...row.options }),
      { instanceOf: TpmvscError },
    );
    t.is(error?.code, 'BAD_REQUEST');
  });
}
