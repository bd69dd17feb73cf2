/**
 * The verified-PIN lifetime through the real stack (swtpm, pcscd + vpcd, tpmvscd), attacked
 * by another local account: uid nobody (setpriv, no groups), connected to the same pcscd as
 * any user can, holding its connection so that pcscd never powers the card off.
 *
 * Two cards, lifetime 3 s: card 0 follows the daemon's default (--pin-lifetime 3), card 1 was
 * created with /pinlifetime 3 ONCE. The owner signs with pkcs11-tool (OpenSC leaves the card as
 * it is when it disconnects); right after, nobody sends GENERAL AUTHENTICATE on 9A without a PIN:
 * - ONCE card: 6982, the owner's signature spent the verification;
 * - the other card: 9000 within the lifetime (a card cannot tell who sends an APDU: the limit
 *   docs/CLIENTS.md states), 6982 once the lifetime is over, with no power event in between
 *   (checked in the APDU trace: the lifetime ended it, not pcscd).
 * The owner's clients keep working on both cards with the lifetime in force: pkcs11-tool,
 * yubico-piv-tool, ykman, and ssh-agent across logins further apart than the lifetime (OpenSC
 * sends the PIN it cached again when the card answers 6982). With a 9C certificate on the card
 * OpenSC caches no PIN (user consent), so ssh-agent fails after the lifetime unless opensc.conf
 * sets pin_cache_ignore_user_consent: measured here, documented in docs/CLIENTS.md.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runProgram, startStack, type CommandResult, type Stack } from '../helpers/stack.js';
import { DEFAULT_PIN, OPENSC_MODULE, createDefaultCard, makeTestCa, mustSucceed, provisionSlot, writeAskpass, type ProvisionedSlot, type TestCa } from '../helpers/card_setup.js';
import { pivTool, ykmanPiv } from '../helpers/piv_tools.js';
import { startSshd, type SshdInstance } from '../helpers/sshd.js';
import { openUnprivilegedPcsc } from '../helpers/unprivileged_pcsc.js';

const LIFETIME_SECONDS = 3;
const PAST_LIFETIME_MS = LIFETIME_SECONDS * 1000 + 1000;
/** GENERAL AUTHENTICATE, P-256 key in 9A, sign a 32-byte hash: no PIN with it. */
const SIGN_9A = `0087119A26 7C24 8200 8120 ${'11'.repeat(32)} 00`.replace(/ /g, '');

interface Card {
  name: string;
  reader: string;
  /** OpenSC's token label: the CN of the 9A certificate. */
  label: string;
  slot: ProvisionedSlot;
  /** The 9A key as an ssh public key file (for IdentitiesOnly). */
  sshPublicKey: string;
}

let stack: Stack;
let dir = '';
let ca: TestCa;
let sshd: SshdInstance;
let trace = '';
let askpass = '';
const cards: Card[] = [];
const agents: ChildProcess[] = [];

test.before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tpmvsc-lifetime-'));
  // The daemon inherits this: every APDU and power event of both cards, secrets masked.
  trace = join(dir, 'apdu-trace.jsonl');
  process.env.TPMVSC_APDU_TRACE = trace;
  stack = await startStack({ readers: 2, daemonArgs: ['--pin-lifetime', String(LIFETIME_SECONDS)] });
  await createDefaultCard(stack, 'Lifetime');
  mustSucceed(
    await stack.cli(['create', '/name', 'Once', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/PUK', 'DEFAULT', '/generate', '/pinlifetime', String(LIFETIME_SECONDS), 'ONCE']),
    'create the ONCE card',
  );
  ca = await makeTestCa(dir);
  for (const [index, name] of ['lifetime', 'once'].entries()) {
    const reader = stack.pcscd.readerName(index);
    const label = `${name} 9a`;
    const slot = await provisionSlot(stack, { reader, slot: '9a', algorithm: 'ECCP256', subject: `/CN=${label}`, ca, dir, prefix: name });
    const sshPublicKey = join(dir, `${name}.ssh.pub`);
    const converted = mustSucceed(await runProgram('ssh-keygen', ['-i', '-m', 'PKCS8', '-f', slot.publicKey]), 'ssh public key');
    await writeFile(sshPublicKey, converted.stdout);
    cards.push({ name, reader, label, slot, sshPublicKey });
  }
  sshd = await startSshd({ setEnv: { TPMVSC_TEST: 'pin-lifetime' } });
  for (const card of cards) await sshd.authorizeKey('root', await readFile(card.sshPublicKey, 'utf8'));
  askpass = await writeAskpass(dir, 'askpass', DEFAULT_PIN);
});

test.after.always(async () => {
  for (const agent of agents) if (agent.exitCode === null) agent.kill('SIGTERM');
  await sshd?.stop();
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const byName = (name: string): Card => cards.find((card) => card.name === name)!;

/** The owner signs a fresh hash with 9A through pkcs11-tool; true when openssl verifies the signature. */
async function ownerSigns(card: Card): Promise<boolean> {
  const hash = join(dir, `${card.name}-hash.bin`);
  const signature = join(dir, `${card.name}-sig.der`);
  await writeFile(hash, createHash('sha256').update(randomBytes(32)).digest());
  mustSucceed(
    await stack.run('pkcs11-tool', ['--module', OPENSC_MODULE, '--token-label', card.label, '-l', '-p', DEFAULT_PIN, '--sign', '--id', '01',
      '-m', 'ECDSA', '--signature-format', 'openssl', '-i', hash, '-o', signature]),
    `pkcs11-tool sign on ${card.name}`,
  );
  const verified = await runProgram('openssl', ['pkeyutl', '-verify', '-pubin', '-inkey', card.slot.publicKey, '-in', hash, '-sigfile', signature]);
  return verified.code === 0;
}

/** Power events of a reader in the APDU trace between two times (Unix ms). */
async function powerEvents(reader: string, from: number, to: number): Promise<string[]> {
  const lines = (await readFile(trace, 'utf8')).split('\n').filter(Boolean);
  return lines
    .map((line) => JSON.parse(line) as { reader: string; event?: string; at: number })
    .filter((entry) => entry.reader === reader && entry.event !== undefined && entry.at >= from && entry.at <= to)
    .map((entry) => entry.event!);
}

test.serial('status shows each card\'s lifetime and whose it is', async (t) => {
  const status = mustSucceed(await stack.cli(['status']), 'status').stdout;
  t.regex(status, /"Lifetime"[\s\S]*?PIN lasts: +3 s after VERIFY \(daemon default\)/);
  t.regex(status, /"Once"[\s\S]*?PIN lasts: +3 s after VERIFY, one private-key operation per VERIFY \(card\)/);
});

test.serial('uid nobody right after the owner\'s pkcs11-tool signature: 6982 on the ONCE card; on the other only once the lifetime is over', async (t) => {
  const nobodyUid = Number((await runProgram('id', ['-u', 'nobody'])).stdout.trim());
  for (const card of [byName('once'), byName('lifetime')]) {
    const attacker = await openUnprivilegedPcsc(stack.pcscd, card.reader);
    try {
      t.is(attacker.uid, nobodyUid, 'the attacker runs as nobody');
      t.is(await attacker.send(SIGN_9A), '6982', `${card.name}: nothing verified before the owner comes`);
      const from = Date.now();
      t.true(await ownerSigns(card), `${card.name}: the owner's signature verifies`);
      const rightAfter = await attacker.send(SIGN_9A);
      if (card.name === 'once') {
        t.is(rightAfter, '6982', 'ONCE: the owner\'s signature spent the verification');
      } else {
        // The limit of a lifetime in seconds: within it, the card cannot tell nobody from the owner.
        t.is(rightAfter, '9000', 'within the lifetime another account still rides on the owner\'s VERIFY');
      }
      await sleep(PAST_LIFETIME_MS);
      t.is(await attacker.send(SIGN_9A), '6982', `${card.name}: after the lifetime`);
      t.deepEqual(await powerEvents(card.reader, from, Date.now()), [], 'the card stayed powered (the attacker held it): the lifetime ended the PIN');
    } finally {
      await attacker.close();
    }
  }
  t.regex(stack.daemonLog(), /applet \{"event":"pin-expired","serial":\d+,"seconds":3\}/, 'each expiry is logged');
});

/** Starts ssh-agent on a socket in dir; the agent gets the PIN from the askpass script at ssh-add -s. */
async function startAgent(name: string, env: NodeJS.ProcessEnv = {}): Promise<NodeJS.ProcessEnv> {
  const socket = join(dir, `${name}.agent`);
  const agentEnv = { SSH_AUTH_SOCK: socket, SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: 'force', DISPLAY: ':0', ...env };
  const agent = spawn('ssh-agent', ['-D', '-a', socket], { env: { ...stack.env, ...agentEnv }, stdio: 'ignore' });
  agents.push(agent);
  for (let i = 0; i < 100 && !existsSync(socket); i++) await sleep(50);
  mustSucceed(await stack.run('ssh-add', ['-s', OPENSC_MODULE], { env: agentEnv }), 'ssh-add -s');
  return agentEnv;
}

/** One ssh login with the card's 9A key, taken from the agent (IdentitiesOnly picks that card). */
function sshLogin(card: Card, agentEnv: NodeJS.ProcessEnv): Promise<CommandResult> {
  return stack.run('ssh', ['-F', '/dev/null', '-p', String(sshd.port), '-o', `UserKnownHostsFile=${sshd.knownHosts}`, '-o', 'StrictHostKeyChecking=yes',
    '-o', 'PreferredAuthentications=publickey', '-o', 'IdentitiesOnly=yes', '-o', `IdentityFile=${card.sshPublicKey}`, '-o', 'BatchMode=yes',
    '-o', 'ConnectTimeout=10', 'root@127.0.0.1', 'echo', 'ok'], { env: agentEnv, timeoutMs: 60_000 });
}

test.serial('the owner\'s clients keep working with the lifetime in force: pkcs11-tool, yubico-piv-tool, ykman, ssh-agent across logins', async (t) => {
  for (const card of cards) {
    t.true(await ownerSigns(card), `${card.name}: pkcs11-tool`);
    const piv = await pivTool(stack, card.reader, ['-a', 'verify-pin', '-P', DEFAULT_PIN, '-a', 'test-signature', '-s', '9a', '-i', card.slot.certificate]);
    t.is(piv.code, 0, `${card.name}: yubico-piv-tool ${piv.stdout}${piv.stderr}`);
    t.regex(piv.stdout + piv.stderr, /Successful ECDSA verification/);
    const csr = join(dir, `${card.name}.csr.pem`);
    const ykman = await ykmanPiv(stack, card.reader, ['certificates', 'request', '-P', DEFAULT_PIN, '-s', `CN=${card.name} request`, '9a', card.slot.publicKey, csr]);
    t.is(ykman.code, 0, `${card.name}: ykman ${ykman.stderr}`);
    t.is((await runProgram('openssl', ['req', '-verify', '-noout', '-in', csr])).code, 0, `${card.name}: the CSR signed on the card verifies`);
  }
  // ssh-agent logs in once (ssh-add -s) and signs at every ssh login: past the lifetime the card
  // answers 6982 and OpenSC sends the PIN it cached again, on both cards.
  const agentEnv = await startAgent('both');
  for (let round = 1; round <= 3; round++) {
    for (const card of cards) {
      const login = await sshLogin(card, agentEnv);
      t.is(login.code, 0, `${card.name}, login ${round}: ${login.stderr}`);
      t.is(login.stdout.trim(), 'ok');
    }
    if (round < 3) await sleep(PAST_LIFETIME_MS);
  }
  const pinChecks = (await readFile(trace, 'utf8')).split('\n').filter((line) => /"command":"00200080/.test(line) && /9000"/.test(line));
  t.true(pinChecks.length >= 6, 'the logins after the lifetime went through a new VERIFY');
});

test.serial('with a 9C certificate OpenSC caches no PIN: ssh-agent fails after the lifetime unless pin_cache_ignore_user_consent', async (t) => {
  const card = byName('lifetime');
  await provisionSlot(stack, { reader: card.reader, slot: '9c', algorithm: 'ECCP256', subject: '/CN=lifetime 9c', ca, dir, prefix: 'lifetime' });
  const plain = await startAgent('plain');
  t.is((await sshLogin(card, plain)).code, 0, 'the first login uses the VERIFY of ssh-add');
  await sleep(PAST_LIFETIME_MS);
  const refused = await sshLogin(card, plain);
  t.not(refused.code, 0, 'no cached PIN to send again');

  const conf = join(dir, 'opensc-ignore-user-consent.conf');
  await writeFile(conf, 'app default {\n  framework pkcs15 {\n    pin_cache_ignore_user_consent = true;\n  }\n}\n');
  const cached = await startAgent('consent', { OPENSC_CONF: conf });
  for (let round = 1; round <= 2; round++) {
    const login = await sshLogin(card, cached);
    t.is(login.code, 0, `login ${round} with pin_cache_ignore_user_consent: ${login.stderr}`);
    if (round < 2) await sleep(PAST_LIFETIME_MS);
  }
});
