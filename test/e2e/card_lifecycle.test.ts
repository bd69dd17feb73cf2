/**
 * The product as an admin meets it: tpmvscmgr creates cards that real PC/SC tools see,
 * destroy removes them for good, and restarts of the daemon, pcscd or the TPM lose
 * nothing. Real swtpm, real pcscd + vpcd, real opensc-tool and yubico-piv-tool.
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startStack, type Stack } from '../helpers/stack.js';
import { vaultTpmObjects } from '../helpers/vault_tpm_objects.js';

const CREATE = ['create', '/name', 'Corp', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/PUK', 'DEFAULT', '/generate'];

/** opensc-tool -l lines "N  Yes|No  ...  name". */
async function readerTable(stack: Stack): Promise<Map<string, boolean>> {
  const { stdout } = await stack.run('opensc-tool', ['-l']);
  const table = new Map<string, boolean>();
  for (const line of stdout.split('\n')) {
    const match = /^\d+\s+(Yes|No)\s+(?:\S+\s+)?(TPM Virtual Smart Card.*)$/.exec(line.trim());
    if (match) table.set(match[2]!.trim(), match[1] === 'Yes');
  }
  return table;
}

async function waitFor(condition: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < timeoutMs) {
    if (await condition()) return Date.now() - start;
    await sleep(100);
  }
  throw new Error(`condition not met within ${timeoutMs} ms`);
}

/** GET METADATA of slot 9A (algorithm, policies, origin, public key) as opensc-tool prints it. */
async function slotMetadata(stack: Stack): Promise<string> {
  const { stdout } = await stack.run('opensc-tool', ['-r', '0', '-s', '00A4040005A000000308', '-s', '00F7009A00']);
  return stdout.split('Sending: 00 F7')[1] ?? '';
}

test('create, use, destroy and re-create cards through the real stack', async (t) => {
  const stack = await startStack({ readers: 4 });
  t.teardown(() => stack.stop());

  const first = await stack.cli(CREATE);
  t.is(first.code, 0, first.stderr);
  t.is(first.stdout.trim().split('\n').at(-1), 'ROOT\\SMARTCARDREADER\\0000');
  t.true(first.stderr.includes('TPM Smart Card created.'), 'Windows progress wording on stderr');
  const second = await stack.cli([...CREATE.slice(0, 2), 'Other', ...CREATE.slice(3)]);
  t.is(second.stdout.trim().split('\n').at(-1), 'ROOT\\SMARTCARDREADER\\0001');

  // opensc-tool names each card in its own reader.
  for (const reader of ['0', '1']) {
    const { stdout } = await stack.run('opensc-tool', ['-r', reader, '-n']);
    t.is(stdout.trim(), 'Personal Identity Verification Card', `reader ${reader}`);
  }
  const status = await stack.run('yubico-piv-tool', ['-r', 'TPM Virtual Smart Card 0 00 00', '-a', 'status']);
  t.is(status.code, 0, status.stderr);
  t.regex(status.stdout, /PIN tries left:\s+5/);
  const serials = new Set<string>();
  for (const reader of ['TPM Virtual Smart Card 0 00 00', 'TPM Virtual Smart Card 0 00 01']) {
    const { stdout } = await stack.run('yubico-piv-tool', ['-r', reader, '-a', 'status']);
    serials.add(/Serial Number:\s+(\d+)/.exec(stdout)?.[1] ?? '');
  }
  t.is(serials.size, 2, 'each card has its own serial');

  // destroy 0000: its reader empties, its files go, 0001 keeps working.
  const destroyed = await stack.cli(['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0000']);
  t.is(destroyed.code, 0, destroyed.stderr);
  const readers = await readerTable(stack);
  t.false(readers.get('TPM Virtual Smart Card 0 00 00'), 'reader 0 is empty');
  t.true(readers.get('TPM Virtual Smart Card 0 00 01'), 'reader 1 still has its card');
  t.false(existsSync(join(stack.stateDir, 'cards', '0000')), 'the card directory is gone');
  t.is((await stack.run('opensc-tool', ['-r', '1', '-n'])).stdout.trim(), 'Personal Identity Verification Card');

  // The destroyed card's TPM objects are gone; one card's remain.
  await stack.stopDaemon();
  t.is((await vaultTpmObjects(stack)).length, 2, 'one persistent parent and one NV index: the remaining card only');
  await stack.startDaemon();

  // Unknown instance: clear error, documented exit code, nothing changed.
  const unknown = await stack.cli(['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0003']);
  t.is(unknown.code, 7);
  t.is(unknown.stderr.trim().split('\n').length, 1);

  // The next create takes the lowest free slot again.
  const third = await stack.cli(CREATE);
  t.is(third.stdout.trim().split('\n').at(-1), 'ROOT\\SMARTCARDREADER\\0000');
});

test('restarts of the daemon, pcscd and the TPM lose no card, key or retry counter', async (t) => {
  const stack = await startStack({ readers: 2 });
  t.teardown(() => stack.stop());
  const reader = 'TPM Virtual Smart Card 0 00 00';
  t.is((await stack.cli(CREATE)).code, 0);

  const generated = await stack.run('yubico-piv-tool', ['-r', reader, '-a', 'generate', '-s', '9a', '-A', 'ECCP256']);
  t.is(generated.code, 0, generated.stderr);
  const wrong = await stack.run('yubico-piv-tool', ['-r', reader, '-a', 'verify-pin', '-P', '87654321']);
  t.not(wrong.code, 0);

  const metadataBefore = await slotMetadata(stack);
  t.true(metadataBefore.includes('SW1=0x90, SW2=0x00'), `GET METADATA of 9A answers: ${metadataBefore}`);
  const check = async (what: string): Promise<void> => {
    const { stdout, code, stderr } = await stack.run('yubico-piv-tool', ['-r', reader, '-a', 'status']);
    t.is(code, 0, `${what}: ${stderr}`);
    t.regex(stdout, /PIN tries left:\s+4/, `${what}: the counter survived`);
    t.is(await slotMetadata(stack), metadataBefore, `${what}: the same key is in slot 9A`);
  };
  await check('before');

  await stack.stopDaemon();
  await stack.startDaemon();
  await waitFor(async () => (await readerTable(stack)).get(reader) === true, 5000);
  await check('daemon restart');

  await stack.pcscd.restart();
  const back = await waitFor(async () => (await readerTable(stack)).get(reader) === true, 5000);
  t.true(back <= 2500, `card back ${back} ms after pcscd restart`);
  await check('pcscd restart');

  await stack.swtpm.restart();
  await check('swtpm restart');
});

test('a kill -9 of the daemon during create or destroy leaves no half card', async (t) => {
  const stack = await startStack({ readers: 2 });
  t.teardown(() => stack.stop());
  for (const delayMs of [50, 150, 300, 600]) {
    const creating = stack.cli(CREATE);
    await sleep(delayMs);
    await stack.killDaemon();
    await creating;
    await stack.startDaemon();
    const { stdout } = await stack.cli(['list', '--json']);
    const { cards } = JSON.parse(stdout) as { cards: Array<{ instance: string }> };
    if (cards.length === 1) {
      // The create completed: the card must be whole and usable.
      const status = await stack.run('yubico-piv-tool', ['-r', 'TPM Virtual Smart Card 0 00 00', '-a', 'status']);
      t.is(status.code, 0, `card after kill at ${delayMs} ms works`);
      const destroying = stack.cli(['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0000']);
      await sleep(delayMs / 5);
      await stack.killDaemon();
      await destroying;
      await stack.startDaemon();
      const after = (JSON.parse((await stack.cli(['list', '--json'])).stdout) as { cards: unknown[] }).cards;
      if (after.length === 1) {
        t.is((await stack.cli(['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0000'])).code, 0);
      }
    } else {
      t.is(cards.length, 0, `kill at ${delayMs} ms: no card or a whole card`);
    }
    await stack.stopDaemon();
    t.deepEqual(await vaultTpmObjects(stack), [], `kill at ${delayMs} ms: no TPM debris after the next start`);
    await stack.startDaemon();
  }
});
