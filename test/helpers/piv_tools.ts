/**
 * Helpers for end-to-end tests that drive the cards with real PIV clients
 * (yubico-piv-tool, ykman, openssl) on a stack from ./stack.ts.
 *
 *   const stack = await startStack({ readers: 2 });
 *   await relaxTpmLockout(stack);           // before any wrong-PIN test
 *   const out = await pivTool(stack, readerName(0), ['-a', 'status']);
 */
import { TpmvscError } from '../../common/errors.js';
import { authenticateAdmin } from '../../cli/piv_admin_session.js';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProgram, startStack, type CommandResult, type Stack } from './stack.js';
import { openPcsc, type PcscClient, type PcscConnection } from './pcsc_client.js';

export const DEFAULT_PIN = '12345678';
export const DEFAULT_PUK = '12345678';
export const DEFAULT_MANAGEMENT_KEY = '010203040506070801020304050607080102030405060708';
export const CREATE_WITH_PUK = ['create', '/name', 'E2E', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/PUK', 'DEFAULT', '/generate'];
export const CREATE_WITHOUT_PUK = ['create', '/name', 'E2E', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/generate'];

/**
 * PC/SC name of card slot n: vpcd gives every port two readers, "<name> <port> 00 0<i>".
 * (So a bare 'TPM Virtual' matches at least two readers: ykman refuses such a filter.)
 */
export function readerName(slot: number): string {
  return `TPM Virtual Smart Card ${Math.floor(slot / 2)} 00 0${slot % 2}`;
}

/** Runs yubico-piv-tool on one reader. */
export function pivTool(stack: Stack, reader: string, args: string[], input?: string): Promise<CommandResult> {
  return stack.run('yubico-piv-tool', ['-r', reader, ...args], input === undefined ? {} : { input });
}

/** Runs ykman piv on one reader. */
export function ykmanPiv(stack: Stack, reader: string, args: string[], input?: string): Promise<CommandResult> {
  return stack.run('ykman', ['--reader', reader, 'piv', ...args], { timeoutMs: 90_000, ...(input === undefined ? {} : { input }) });
}

/**
 * swtpm's dictionary-attack defaults (3 failures, 1000 s recovery) put the whole TPM in
 * lockout long before a card's own 5-try counter runs out; the vault then answers
 * "lockout" (6983) without counting. Windows configures its TPM with 32 tries / 10 min:
 * do the same here so the card counter is what a wrong-PIN test observes. The daemon
 * holds swtpm's only TCP connection, so it is stopped around the tpm2-tools call.
 */
export async function relaxTpmLockout(stack: Stack, maxTries = 64): Promise<void> {
  await stack.stopDaemon();
  try {
    const result = await runProgram('tpm2_dictionarylockout', ['-T', stack.swtpm.tcti, '-s', '-c', '-n', String(maxTries), '-t', '60', '-l', '60']);
    if (result.code !== 0) throw new Error(`tpm2_dictionarylockout failed: ${result.stderr}`);
  } finally {
    await stack.startDaemon();
  }
}

/**
 * Two readers with one card (created with a PUK) in slot 0, PC/SC of this process pointed at
 * the stack's pcscd; `relaxLockout`: the TPM's DA limit for tests that block PINs on purpose.
 */
export async function startCardStack(options: { relaxLockout?: number } = {}): Promise<Stack> {
  const stack = await startStack({ readers: 2 });
  try {
    const created = await stack.cli(CREATE_WITH_PUK);
    if (created.code !== 0) throw new Error(`create failed: ${created.stderr}`);
    if (options.relaxLockout !== undefined) await relaxTpmLockout(stack, options.relaxLockout);
    stack.pcscd.useInThisProcess();
    return stack;
  } catch (error) {
    await stack.stop();
    throw error;
  }
}

/** A temporary directory removed by the returned cleanup. */
export async function tempDir(): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), 'tpmvsc-e2e-'));
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) };
}

/**
 * Verifies a self-signed certificate's own signature with openssl (-check_ss_sig: by
 * default openssl trusts a self-signed anchor without checking its signature).
 */
export async function verifySelfSigned(dir: string, certificatePem: string, name: string): Promise<CommandResult> {
  const path = join(dir, `${name}.pem`);
  await writeFile(path, certificatePem);
  return runProgram('openssl', ['verify', '-check_ss_sig', '-CAfile', path, path]);
}

/** The SubjectPublicKeyInfo of a certificate, as PEM. */
export async function certificatePublicKey(dir: string, certificatePem: string, name: string): Promise<string> {
  const path = join(dir, `${name}.crt.pem`);
  await writeFile(path, certificatePem);
  return (await runProgram('openssl', ['x509', '-in', path, '-noout', '-pubkey'])).stdout;
}

/**
 * PIN and PUK tries left of a card, as the daemon counts them (TPM NV; tpmvscmgr status). Read
 * tries this way after any client that leaves the card without a reset (OpenSC and so ssh,
 * browsers, p11-kit; ykman): the card then stays PIN-verified, an empty VERIFY answers 9000 and
 * `yubico-piv-tool -a status` prints "PIN tries left: -1" until the next reset.
 */
export async function cardTries(stack: Stack, instance = 'ROOT\\SMARTCARDREADER\\0000'): Promise<{ pin: number; puk: number | null }> {
  const result = await stack.cli(['status', '/instance', instance, '--json']);
  if (result.code !== 0) throw new Error(`tpmvscmgr status ${instance} failed (${result.code}): ${result.stderr}`);
  const card = (JSON.parse(result.stdout) as { cards: Array<{ pinTriesRemaining: number; pukTriesRemaining: number | null }> }).cards[0]!;
  return { pin: card.pinTriesRemaining, puk: card.pukTriesRemaining };
}

/** "PIN tries left: n" from yubico-piv-tool -a status (only right after a client that reset the card). */
export function pinTriesLeft(status: string): number | undefined {
  const match = /PIN tries left:\s+(\d+)/.exec(status);
  return match ? Number(match[1]) : undefined;
}

/** Sends one APDU given in hex; returns the status word and the data in hex. */
export async function sendApdu(connection: PcscConnection, hex: string): Promise<{ sw: string; data: Buffer }> {
  const response = await connection.transmit(Buffer.from(hex.replace(/\s+/g, ''), 'hex'));
  return { sw: response.subarray(-2).toString('hex').toUpperCase(), data: response.subarray(0, -2) };
}

/**
 * PIV management-key (9B) mutual authentication, as tpmvscmgr does it (cli/piv_admin_session.ts).
 * Returns true when the card accepted us and proved it knows the key.
 */
export async function authenticateManagementKey(connection: PcscConnection, keyHex: string): Promise<boolean> {
  try {
    await authenticateAdmin(connection, Buffer.from(keyHex, 'hex'));
    return true;
  } catch (error) {
    if (error instanceof TpmvscError) return false;
    throw error;
  }
}

/** A PIN as VERIFY / RESET RETRY COUNTER data: ASCII padded with FF to 8 bytes. */
export function paddedPin(pin: string): string {
  return Buffer.concat([Buffer.from(pin, 'ascii'), Buffer.alloc(Math.max(0, 8 - pin.length), 0xff)]).toString('hex');
}

/**
 * A stack whose pcscd this process talks to (libpcsclite reads its socket once per process),
 * with the TPM's lockout relaxed for wrong-PIN tests. For test.before / test.after.always.
 */
export async function startPcscStack(readers: number): Promise<{ stack: Stack; pcsc: PcscClient; stop: () => Promise<void> }> {
  const stack = await startStack({ readers });
  await relaxTpmLockout(stack);
  stack.pcscd.useInThisProcess();
  const pcsc = openPcsc();
  return {
    stack,
    pcsc,
    stop: async () => {
      pcsc.close();
      await stack.stop();
    },
  };
}

/**
 * A card session of its own: connect, SELECT PIV, use it, disconnect with a reset, so it
 * neither sees a PIN or 9B state an earlier client left nor leaves one behind.
 */
export async function withPivSession<T>(pcsc: PcscClient, reader: string, use: (connection: PcscConnection) => Promise<T>): Promise<T> {
  await pcsc.waitForCard(reader, true, 5000);
  const connection = await pcsc.connect(reader);
  try {
    const selected = await sendApdu(connection, '00A4040005A000000308');
    if (selected.sw !== '9000') throw new Error(`SELECT PIV answered ${selected.sw}`);
    return await use(connection);
  } finally {
    await connection.disconnect('reset');
  }
}
