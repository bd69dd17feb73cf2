import test from 'ava';
import { mkdtemp, readdir, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CardDirectory } from '../../daemon/card_directory.js';
import { writeFileAtomic } from '../../daemon/atomic_file.js';

async function withDirectory(run: (directory: string) => Promise<void>): Promise<void> {
  const directory = await mkdtemp(join(tmpdir(), 'tpmvsc-cards-'));
  try {
    await run(directory);
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}

test('cards are written private (dirs 0700, files 0600) and read back', async (t) => {
  await withDirectory(async (root) => {
    const cards = new CardDirectory(join(root, 'state'));
    await cards.prepare();
    await cards.write({ format: 1, slot: 3, name: 'Corp', createdAt: 'now', applet: { a: 1 } });
    t.deepEqual(await cards.slots(), [3]);
    t.is((await cards.read<{ a: number }>(3)).applet.a, 1);
    t.is((await stat(join(root, 'state'))).mode & 0o777, 0o700);
    t.is((await stat(join(root, 'state', 'cards', '0003'))).mode & 0o777, 0o700);
    t.is((await stat(cards.cardPath(3))).mode & 0o777, 0o600);
  });
});

test('a slot directory without card.json is not a card; a removed card is gone', async (t) => {
  await withDirectory(async (root) => {
    const cards = new CardDirectory(root);
    await cards.prepare();
    await mkdir(join(root, 'cards', '0001'));
    await cards.write({ format: 1, slot: 0, name: 'A', createdAt: 'now', applet: {} });
    t.deepEqual(await cards.slots(), [0]);
    await cards.remove(0);
    t.deepEqual(await cards.slots(), []);
  });
});

test('atomic replacement leaves no temp files and never a partial file', async (t) => {
  await withDirectory(async (root) => {
    const path = join(root, 'x.json');
    await writeFile(path, 'old');
    await writeFileAtomic(path, 'new');
    t.deepEqual(await readdir(root), ['x.json']);
  });
});

test('journals round-trip and clear', async (t) => {
  await withDirectory(async (root) => {
    const cards = new CardDirectory(root);
    await cards.prepare();
    await cards.writeJournal({ operation: 'create', slot: 2, startedAt: 'now' });
    t.is((await cards.journals())[0]?.operation, 'create');
    await cards.clearJournal(2);
    t.deepEqual(await cards.journals(), []);
  });
});
