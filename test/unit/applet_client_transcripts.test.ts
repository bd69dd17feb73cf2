/**
 * Replays the client transcripts in test/fixtures/transcripts/*.json against a fresh
 * card each (format in that folder's README.md).
 */
import test, { type ExecutionContext } from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { makeTestCard, matchesPattern, mutualAuthenticate, type TestCardOptions } from '../helpers/applet_harness.js';

type Step =
  | { command: string; expect: string; note?: string }
  | { mutualAuth: { key: string; algorithm: string }; note?: string }
  | { power: 'on' | 'off' | 'reset' };

interface Transcript {
  client: string;
  description: string;
  card?: { pin?: string; puk?: string | null; generate?: boolean };
  /** Other transcripts (file names without .real.json) replayed first on the same card. */
  after?: string[];
  steps: Step[];
}

type TestCard = ReturnType<typeof makeTestCard>;

const folder = fileURLToPath(new URL('../fixtures/transcripts/', import.meta.url));
const files = readdirSync(folder).filter((name) => name.endsWith('.json')).sort();
const load = (file: string): Transcript => JSON.parse(readFileSync(folder + file, 'utf8')) as Transcript;

test('there are client transcripts to replay', (t) => {
  t.true(files.length >= 5);
  // real captures (scripts/capture_transcripts.ts) of OpenSC, yubico-piv-tool and ykman
  const real = files.filter((name) => name.endsWith('.real.json'));
  for (const client of ['opensc-0.23-', 'yubico-piv-tool-2.2-', 'ykman-4.0.9-']) t.true(real.some((name) => name.startsWith(client)), client);
});

/** Replays the steps; `label` prefixes failure messages. */
async function replay(t: ExecutionContext, card: TestCard, steps: Step[], label: string): Promise<void> {
  for (const [index, step] of steps.entries()) {
    if ('power' in step) {
      if (step.power === 'on') card.applet.powerOn();
      else if (step.power === 'off') card.applet.powerOff();
      else card.applet.reset();
      continue;
    }
    if ('mutualAuth' in step) {
      const { second } = await mutualAuthenticate(card.send, step.mutualAuth.key, step.mutualAuth.algorithm);
      t.regex(second, /9000$/, `${label} step ${index}: mutual authentication`);
      continue;
    }
    const response = await card.send(step.command.replace(/\s+/g, ''));
    t.true(matchesPattern(response, step.expect), `${label} step ${index} (${step.note ?? step.command}): got ${response}, expected ${step.expect}`);
  }
}

for (const file of files) {
  const transcript = load(file);
  test(`transcript ${file}: ${transcript.client}`, async (t) => {
    const card = makeTestCard(transcript.card as TestCardOptions | undefined);
    for (const prior of transcript.after ?? []) await replay(t, card, load(`${prior}.real.json`).steps, prior);
    await replay(t, card, transcript.steps, file);
  });
}
