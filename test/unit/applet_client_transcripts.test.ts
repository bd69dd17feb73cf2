/**
 * Replays the client transcripts in test/fixtures/transcripts/*.json against a fresh
 * card each (format in that folder's README.md).
 */
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { makeTestCard, matchesPattern, mutualAuthenticate, type TestCardOptions } from '../helpers/applet_harness.js';

type Step =
  | { command: string; expect: string; note?: string }
  | { mutualAuth: { key: string; algorithm: string }; note?: string };

interface Transcript {
  client: string;
  description: string;
  card?: { pin?: string; puk?: string | null; generate?: boolean };
  steps: Step[];
}

const folder = fileURLToPath(new URL('../fixtures/transcripts/', import.meta.url));
const files = readdirSync(folder).filter((name) => name.endsWith('.json')).sort();

test('there are client transcripts to replay', (t) => {
  t.true(files.length >= 5);
});

for (const file of files) {
  const transcript = JSON.parse(readFileSync(folder + file, 'utf8')) as Transcript;
  test(`transcript ${file}: ${transcript.client}`, async (t) => {
    const card = makeTestCard(transcript.card as TestCardOptions | undefined);
    for (const [index, step] of transcript.steps.entries()) {
      if ('mutualAuth' in step) {
        const { second } = await mutualAuthenticate(card.send, step.mutualAuth.key, step.mutualAuth.algorithm);
        t.regex(second, /9000$/, `step ${index}: mutual authentication`);
        continue;
      }
      const response = await card.send(step.command.replace(/\s+/g, ''));
      t.true(matchesPattern(response, step.expect), `step ${index} (${step.note ?? step.command}): got ${response}, expected ${step.expect}`);
    }
  });
}
