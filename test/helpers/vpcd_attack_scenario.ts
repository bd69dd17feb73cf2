/**
 * The attacks of issue #12, run for real against the whole product, for
 * test/e2e/vpcd_guard_attacks.test.ts, which starts this file INSIDE a private network
 * namespace (`unshare --net`, loopback up, one extra interface address): the daemon's nftables
 * guard lives and dies with that namespace. Everything else is the ordinary test stack: swtpm,
 * pcscd (its own mount namespace), tpmvscd as root, tpmvscmgr.
 *
 *   node --import tsx test/helpers/vpcd_attack_scenario.ts guarded|unguarded
 *
 * The attacker is test/helpers/vpcd_attacker.py run as nobody (setpriv), on every local address;
 * the card owner is test/helpers/piv_owner.py (pyscard) logging in and signing. Each step prints
 * one line `REPORT {"step": ..., ...}`; the test asserts on them.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes, verify } from 'node:crypto';
import { readFile, readlink } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { guardTableName, readerPortRange } from '../../daemon/vpcd_guard.js';
import { AS_NOBODY, EXTRA_ADDRESS } from './netns.js';
import { REPO, runProgram, startStack, type Stack } from './stack.js';

const ATTACKER = join(REPO, 'test/helpers/vpcd_attacker.py');
const OWNER = join(REPO, 'test/helpers/piv_owner.py');
const PYTHON = '/usr/bin/python3';
const PIN = '12345678';
/** Every kind of local address vpcd listens on: loopback, other 127/8 addresses, "any", the extra interface's. */
export const ADDRESSES = ['127.0.0.1', '127.0.0.2', '127.77.1.9', '0.0.0.0', EXTRA_ADDRESS];

export interface AttackReport {
  mode: string;
  attempts?: Record<string, Record<string, number>>;
  connected?: string[];
  frames?: number;
  verify?: Array<{ peer: string; data: string }>;
  bound?: Record<string, string>;
  accepted?: Array<{ spec: string; peer: string }>;
  received?: Array<{ peer: string; sent: string; answer: string }>;
  answer?: string;
  error?: string;
  ms?: number;
}

export interface OwnerReport {
  waitedMs?: number;
  /** SCardConnects it took: more than one when the card left its reader after a connect. */
  connects?: number;
  verify?: string;
  sign?: string;
  signature?: string;
  /** The signature verifies with the public key GENERATE returned. */
  signatureValid?: boolean;
  failure?: string;
}

function report(step: string, data: Record<string, unknown>): void {
  process.stdout.write(`REPORT ${JSON.stringify({ step, ...data })}\n`);
}

/** An environment with nothing of ours in it: the attacker gets no hint. */
const ATTACKER_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/nonexistent', LANG: 'C.UTF-8' };

/** A running attacker: connect or listen until stop(). */
class Attacker {
  private output = '';
  private readonly exited: Promise<void>;

  private constructor(private readonly child: ReturnType<typeof spawn>) {
    child.stdout!.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (this.output += chunk.toString()));
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
  }

  /** Starts the attacker and waits until it is armed (it says "started"). */
  static async start(args: string[]): Promise<Attacker> {
    const attacker = new Attacker(spawn(AS_NOBODY[0]!, [...AS_NOBODY.slice(1), PYTHON, ATTACKER, ...args], { env: ATTACKER_ENV, stdio: ['pipe', 'pipe', 'pipe'] }));
    await attacker.armed();
    return attacker;
  }

  private async armed(): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (!this.output.startsWith('started') && Date.now() < deadline && this.child.exitCode === null) await sleep(20);
  }

  async stop(): Promise<AttackReport> {
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
    const line = this.output.trim().split('\n').at(-1) ?? '';
    try {
      return JSON.parse(line) as AttackReport;
    } catch {
      return { mode: 'broken', error: this.output.slice(-2000) };
    }
  }
}

/** A 1-byte APDU through pcscd, sent by nobody from pcscd's own mount namespace (where its socket is /run/pcscd). */
async function knock(stack: Stack, reader: string): Promise<AttackReport> {
  const result = await runProgram('nsenter', [`--mount=/proc/${stack.pcscd.namespacePid}/ns/mnt`, '--', ...AS_NOBODY, PYTHON, ATTACKER, 'knock', reader], { env: ATTACKER_ENV });
  try {
    return JSON.parse(result.stdout.trim()) as AttackReport;
  } catch {
    return { mode: 'knock', error: `${result.stdout}${result.stderr}` };
  }
}

/** Generates an ECC P-256 key in slot 9A (default management key); returns the public key PEM. */
async function generateKey(stack: Stack, reader: string, dir: string): Promise<string> {
  const file = join(dir, `${reader.replaceAll(' ', '_')}.pub.pem`);
  const result = await stack.run('yubico-piv-tool', ['-r', reader, '-a', 'generate', '-s', '9a', '-A', 'ECCP256', '-o', file]);
  if (result.code !== 0) throw new Error(`generate failed: ${result.stderr}`);
  return readFile(file, 'utf8');
}

/** The owner logs in and signs; the signature is checked against the card's public key. */
async function ownerSigns(stack: Stack, reader: string, publicKey: string, waitSeconds = 30): Promise<OwnerReport> {
  const message = randomBytes(32);
  const digest = createHash('sha256').update(message).digest('hex');
  const result = await runProgram(PYTHON, [OWNER, reader, digest, String(waitSeconds)], { input: `${PIN}\n`, env: stack.env, timeoutMs: (waitSeconds + 30) * 1000 });
  let owner: OwnerReport;
  try {
    owner = JSON.parse(result.stdout.trim()) as OwnerReport;
  } catch {
    return { failure: `${result.stdout}${result.stderr}`.slice(-2000) };
  }
  if (owner.signature) {
    try {
      owner.signatureValid = verify('sha256', message, publicKey, Buffer.from(owner.signature, 'hex'));
    } catch {
      owner.signatureValid = false;
    }
  }
  return owner;
}

/** Whether the guard's table exists in this namespace now. */
async function guardTableExists(stack: Stack): Promise<boolean> {
  const table = guardTableName(readerPortRange(stack.pcscd.basePort, stack.pcscd.readers)).split(' ');
  return (await runProgram('/usr/sbin/nft', ['list', 'table', ...table])).code === 0;
}

/** Can nobody reach a root listener outside the reader ports on every address? (Else a refusal would prove nothing.) */
async function reachability(): Promise<AttackReport> {
  const server = net.createServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '0.0.0.0', () => resolve()));
  const port = (server.address() as net.AddressInfo).port;
  const attacker = await Attacker.start(['connect', ADDRESSES.join(','), String(port)]);
  await sleep(1500);
  const result = await attacker.stop();
  server.close();
  return result;
}

async function createCard(stack: Stack, name: string): Promise<{ code: number; instance: string; stderr: string }> {
  const result = await stack.cli(['create', '/name', name, '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/PUK', 'DEFAULT', '/generate']);
  return { code: result.code, instance: result.stdout.trim().split('\n').at(-1) ?? '', stderr: result.stderr };
}

async function guarded(dir: string): Promise<void> {
  const stack = await startStack({ readers: 2 });
  try {
    const [port0, port1] = [stack.pcscd.port(0), stack.pcscd.port(1)];
    const [reader0, reader1] = [stack.pcscd.readerName(0), stack.pcscd.readerName(1)];
    report('setup', { ports: [port0, port1], addresses: ADDRESSES, guardLog: stack.daemonLog().split('\n').find((line) => line.includes('vpcd guard')) ?? null, table: await guardTableExists(stack) });
    report('reachability', { attacker: await reachability() });

    const cardA = await createCard(stack, 'Owner A');
    const publicKeyA = await generateKey(stack, reader0, dir);
    report('baseline', { create: cardA, owner: await ownerSigns(stack, reader0, publicKeyA) });

    // Hijack: wait in vpcd's backlog behind the inserted card, knock the card out with a
    // 1-byte APDU through pcscd, be the card when vpcd takes the next connection.
    let attacker = await Attacker.start(['connect', ADDRESSES.join(','), String(port0)]);
    await sleep(500);
    const knocked = await knock(stack, reader0);
    const hijackOwner = await ownerSigns(stack, reader0, publicKeyA);
    await sleep(1000);
    report('hijack', { knock: knocked, owner: hijackOwner, attacker: await attacker.stop() });

    // A free reader, taken before create puts a card there.
    attacker = await Attacker.start(['connect', ADDRESSES.join(','), String(port1)]);
    await sleep(1000);
    const cardB = await createCard(stack, 'Owner B');
    const publicKeyB = cardB.code === 0 ? await generateKey(stack, reader1, dir) : '';
    const freeOwner = cardB.code === 0 ? await ownerSigns(stack, reader1, publicKeyB) : { failure: 'no card' };
    report('freeReader', { create: cardB, owner: freeOwner, attacker: await attacker.stop() });

    // The ports while the daemon restarts: a clean stop, then a crash.
    attacker = await Attacker.start(['connect', ADDRESSES.join(','), `${port0},${port1}`]);
    await stack.stopDaemon();
    const tableAfterStop = await guardTableExists(stack);
    await sleep(2000);
    await stack.startDaemon();
    await stack.killDaemon();
    const tableAfterKill = await guardTableExists(stack);
    await sleep(2000);
    await stack.startDaemon();
    const restartOwnerA = await ownerSigns(stack, reader0, publicKeyA);
    const restartOwnerB = await ownerSigns(stack, reader1, publicKeyB);
    report('restart', { tableAfterStop, tableAfterKill, owners: [restartOwnerA, restartOwnerB], attacker: await attacker.stop() });

    // Be vpcd while pcscd is down: listen on the reader ports (IPv4 "any", and dual-stack [::])
    // and wait for the daemon to connect.
    await stack.pcscd.stopPcscd();
    attacker = await Attacker.start(['listen', `0.0.0.0:${port0},:::${port1}`]);
    await sleep(6000);
    const impersonation = await attacker.stop();
    await stack.pcscd.startPcscd();
    report('impersonate', { attacker: impersonation, owners: [await ownerSigns(stack, reader0, publicKeyA), await ownerSigns(stack, reader1, publicKeyB)] });

    // As before the guard: cards back within about 2 s of a pcscd restart.
    const restartStarted = performance.now();
    await stack.pcscd.restart();
    const restartMs = Math.round(performance.now() - restartStarted);
    report('pcscdRestart', { restartMs, owner: await ownerSigns(stack, reader0, publicKeyA) });
  } finally {
    await stack.stop();
  }
}

/** The same attacker without the guard: proof that the attacks are real and the harness sees them succeed. */
async function unguarded(): Promise<void> {
  const stack = await startStack({ readers: 2, daemonArgs: ['--allow-unprotected-vpcd'] });
  try {
    const [port0, port1] = [stack.pcscd.port(0), stack.pcscd.port(1)];
    report('setup', { ports: [port0, port1], warning: stack.daemonLog().split('\n').find((line) => line.includes('WARNING')) ?? null, table: await guardTableExists(stack) });
    const card = await createCard(stack, 'Unguarded');

    let attacker = await Attacker.start(['connect', ADDRESSES.join(','), String(port1)]);
    await sleep(3000);
    report('freeReader', { create: card, attacker: await attacker.stop() });

    // Wait in the backlog behind the inserted card; when the daemon's link drops (here: it
    // crashes), vpcd takes the attacker as the card, and the owner's VERIFY goes to it.
    attacker = await Attacker.start(['connect', '127.0.0.1', String(port0)]);
    await sleep(1000);
    await stack.killDaemon();
    const owner = await ownerSigns(stack, stack.pcscd.readerName(0), '', 15);
    report('hijack', { owner, attacker: await attacker.stop() });
    await stack.startDaemon();

    await stack.pcscd.stopPcscd();
    attacker = await Attacker.start(['listen', `0.0.0.0:${port0}`]);
    await sleep(4000);
    report('impersonate', { attacker: await attacker.stop() });
    await stack.pcscd.startPcscd();
  } finally {
    await stack.stop();
  }
}

async function main(): Promise<void> {
  // Never outside a namespace of our own: the guard's rules must not reach the machine's.
  if ((await readlink('/proc/self/ns/net')) === (await readlink('/proc/1/ns/net').catch(() => ''))) {
    throw new Error('run this inside its own network namespace (unshare --net), as test/e2e/vpcd_guard_attacks.test.ts does');
  }
  const dir = process.env.TPMVSC_SCENARIO_DIR ?? '/tmp';
  switch (process.argv[2]) {
    case 'guarded':
      return guarded(dir);
    case 'unguarded':
      return unguarded();
    default:
      throw new Error('scenario: guarded or unguarded');
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(`scenario failed: ${error instanceof Error ? error.stack : String(error)}\n`);
    process.exit(1);
  },
);
