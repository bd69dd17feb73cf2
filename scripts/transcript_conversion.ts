/**
 * Turns captured APDU traces (daemon/apdu_trace.ts lines, cut per client run) into replay
 * fixtures (format: test/fixtures/transcripts/README.md).
 *
 * - Redacted secrets are put back or replaced by a step that recomputes them: VERIFY data
 *   becomes the known test PIN; the 9B witness/challenge pair becomes a `mutualAuth` step
 *   (its cryptograms depend on the card's random witness).
 * - Expected responses come from the real card. Where they differ from a fresh test card
 *   (the replay's MemoryVault card) the differing bytes are random or card-specific (keys,
 *   signatures, serial, GUID): those runs become `{n}` wildcards, signatures `{*}`. The
 *   status word must always be identical, so a behaviour difference is an error here.
 * - Each fixture is then replayed 20 times on fresh test cards to prove the patterns stable.
 */
import { makeTestCard, matchesPattern, mutualAuthenticate, pinData, DEFAULT_ADMIN_KEY_HEX, type TestCard } from '../test/helpers/applet_harness.js';

export interface CaptureLine {
  reader: string;
  command?: string;
  response?: string;
  event?: 'power-on' | 'power-off' | 'reset';
}

export interface CapturedClientRun {
  name: string;
  client: string;
  description: string;
  after: string[];
  lines: CaptureLine[];
  output: string;
}

export type FixtureStep =
  | { command: string; expect: string; note?: string }
  | { mutualAuth: { key: string; algorithm: string }; note?: string }
  | { power: 'on' | 'off' | 'reset' };

export interface Fixture {
  client: string;
  description: string;
  /** Fixtures (names without .real.json) whose steps are replayed first on the same card. */
  after?: string[];
  steps: FixtureStep[];
}

const GENERAL_AUTHENTICATE = 0x87;
const VERIFY = 0x20;
/** Equal runs shorter than this between two differing runs are random coincidences. */
const MIN_STABLE_RUN = 8;

const insOf = (command: string): number => parseInt(command.slice(2, 4), 16);
const p2Of = (command: string): number => parseInt(command.slice(6, 8), 16);

/**
 * Where the data of a command sits (hex offsets):
 *   short:    CLA INS P1 P2 | Lc | data ...       extended: CLA INS P1 P2 | 00 Lc1 Lc2 | data ...
 */
function dataField(command: string): { start: number; length: number } {
  const b4 = parseInt(command.slice(8, 10), 16);
  if (b4 !== 0) return { start: 10, length: b4 };
  return { start: 14, length: parseInt(command.slice(10, 14), 16) };
}

/** Commands with the secrets put back (or left to a mutualAuth step). */
function restoreSecrets(lines: CaptureLine[], pin: string): (FixtureStep | { command: string; real: string })[] {
  const out: (FixtureStep | { command: string; real: string })[] = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!;
    if (line.event) {
      out.push({ power: line.event === 'power-on' ? 'on' : line.event === 'power-off' ? 'off' : 'reset' });
      continue;
    }
    const command = line.command!;
    if (!command.includes('x')) {
      out.push({ command, real: line.response! });
      continue;
    }
    const ins = insOf(command);
    if (ins === GENERAL_AUTHENTICATE && p2Of(command) === 0x9b) {
      // 00 87 AA 9B 04 [7C 02 80 00] -> witness; then 00 87 AA 9B Lc [7C .. 80 witness 81 challenge]
      const next = lines[i + 1];
      if (dataField(command).length !== 4 || !next?.command || insOf(next.command) !== GENERAL_AUTHENTICATE || p2Of(next.command) !== 0x9b) {
        throw new Error(`unsupported 9B authentication form: ${command}`);
      }
      out.push({ mutualAuth: { key: DEFAULT_ADMIN_KEY_HEX, algorithm: command.slice(4, 6) }, note: 'mutual authentication with the default management key (cryptograms redacted in the capture)' });
      i++;
      continue;
    }
    if (ins === VERIFY && command.slice(6, 8) === '80') {
      const data = pinData(pin);
      const { start, length } = dataField(command);
      if (length !== data.length / 2) throw new Error(`VERIFY length ${length} does not fit the PIN`);
      out.push({ command: command.slice(0, start) + data + command.slice(start + length * 2), real: line.response! });
      continue;
    }
    throw new Error(`no way to restore redacted command ${command}`);
  }
  return out;
}

/** A pattern matching the real response, with the bytes that differ on the test card wildcarded. */
function patternFor(command: string, real: string, test: string): string {
  if (real === test) return real;
  const realSw = real.slice(-4);
  if (realSw !== test.slice(-4)) throw new Error(`status differs for ${command}: real ${real} test ${test}`);
  if (insOf(command) === GENERAL_AUTHENTICATE && p2Of(command) !== 0x9b) {
    // a signature, decryption or ECDH result: random, and DER signatures vary in length
    return `${real.slice(0, 2)}{*}${realSw}`;
  }
  if (real.length !== test.length) throw new Error(`length differs for ${command}: real ${real} test ${test}`);
  const bytes = real.length / 2;
  const differs = Array.from({ length: bytes }, (_, i) => real.slice(2 * i, 2 * i + 2) !== test.slice(2 * i, 2 * i + 2));
  // close short equal gaps between differing bytes
  let lastDiff = -1;
  for (let i = 0; i < bytes; i++) {
    if (!differs[i]) continue;
    if (lastDiff >= 0 && i - lastDiff - 1 < MIN_STABLE_RUN) for (let j = lastDiff + 1; j < i; j++) differs[j] = true;
    lastDiff = i;
  }
  let pattern = '';
  for (let i = 0; i < bytes; ) {
    if (!differs[i]) {
      pattern += real.slice(2 * i, 2 * i + 2);
      i++;
      continue;
    }
    let j = i;
    while (j < bytes && differs[j]) j++;
    pattern += `{${j - i}}`;
    i = j;
  }
  return pattern;
}

async function replaySteps(card: TestCard, steps: FixtureStep[]): Promise<void> {
  for (const step of steps) await runStep(card, step);
}

/** Runs one step; returns the response of a command step. */
async function runStep(card: TestCard, step: FixtureStep): Promise<string | undefined> {
  if ('power' in step) {
    if (step.power === 'on') card.applet.powerOn();
    else if (step.power === 'off') card.applet.powerOff();
    else card.applet.reset();
    return undefined;
  }
  if ('mutualAuth' in step) {
    const { second } = await mutualAuthenticate(card.send, step.mutualAuth.key, step.mutualAuth.algorithm);
    if (!second.endsWith('9000')) throw new Error('mutual authentication failed on the test card');
    return undefined;
  }
  return card.send(step.command);
}

export async function convertCapture(runs: CapturedClientRun[], pin: string): Promise<Map<string, Fixture>> {
  const fixtures = new Map<string, Fixture>();
  for (const run of runs) {
    const before = run.after.map((name) => {
      const fixture = fixtures.get(name);
      if (!fixture) throw new Error(`${run.name}: needs ${name} first`);
      return fixture;
    });
    const card = makeTestCard({ pin });
    for (const fixture of before) await replaySteps(card, fixture.steps);
    const steps: FixtureStep[] = [];
    for (const step of restoreSecrets(run.lines, pin)) {
      if ('real' in step) {
        const test = (await card.send(step.command))!;
        steps.push({ command: step.command, expect: patternFor(step.command, step.real, test) });
      } else {
        await runStep(card, step);
        steps.push(step);
      }
    }
    const fixture: Fixture = { client: run.client, description: `${run.description} (captured from the real client)`, ...(run.after.length ? { after: run.after } : {}), steps };
    // the patterns must hold on any fresh card, not only the one they were made on
    for (let attempt = 0; attempt < 20; attempt++) {
      const fresh = makeTestCard({ pin });
      for (const prior of before) await replaySteps(fresh, prior.steps);
      for (const [index, step] of steps.entries()) {
        const response = await runStep(fresh, step);
        if ('expect' in step && !matchesPattern(response!, step.expect)) {
          throw new Error(`${run.name} step ${index} unstable: ${response} vs ${step.expect}`);
        }
      }
    }
    fixtures.set(run.name, fixture);
  }
  return fixtures;
}
