/**
 * Another local account at the card: a PC/SC client running as uid nobody (setpriv, no groups)
 * that talks to the stack's real pcscd, as any user of the machine can (pcscd's socket is 0666).
 * It runs inside the pcscd harness's mount namespace (nsenter), where the socket is at its
 * usual path: nobody cannot enter /proc/<pid>/root of a root process.
 *
 * The client connects SHARED at once and holds its connection (so pcscd never powers the card
 * off, as an attacker who waits for the owner would), then sends one APDU per `send`:
 *
 *   const attacker = await openUnprivilegedPcsc(stack.pcscd, reader);
 *   const sw = await attacker.send('0087119A...');     // '6982'
 *   await attacker.close();
 *
 * pyscard through /usr/bin/python3 (Debian's python3-pyscard).
 */
import { spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { PcscdInstance } from './pcscd.js';

/** Reads hex APDUs, one per line; answers the status word (or "ERR <code>"), one per line. */
const CLIENT = `
import sys
from smartcard.scard import *
reader = sys.argv[1]
rc, context = SCardEstablishContext(SCARD_SCOPE_USER)
rc, card, protocol = SCardConnect(context, reader, SCARD_SHARE_SHARED, SCARD_PROTOCOL_T0 | SCARD_PROTOCOL_T1)
if rc != SCARD_S_SUCCESS:
    print('ERR connect ' + hex(rc & 0xffffffff), flush=True)
    sys.exit(1)
print('ready', flush=True)
for line in sys.stdin:
    rc, response = SCardTransmit(card, protocol, list(bytes.fromhex(line.strip())))
    print(('ERR ' + hex(rc & 0xffffffff)) if rc != SCARD_S_SUCCESS else bytes(response[-2:]).hex().upper(), flush=True)
SCardDisconnect(card, SCARD_LEAVE_CARD)
`;

export interface UnprivilegedPcsc {
  /** The uid the client runs as (read back from the process). */
  uid: number;
  /** Sends one APDU (hex); resolves with the status word, e.g. '9000', '6982'. */
  send(apduHex: string): Promise<string>;
  close(): Promise<void>;
}

export async function openUnprivilegedPcsc(pcscd: PcscdInstance, reader: string): Promise<UnprivilegedPcsc> {
  const dir = await mkdtemp(join(tmpdir(), 'tpmvsc-nobody-'));
  await chmod(dir, 0o755);
  const script = join(dir, 'client.py');
  await writeFile(script, CLIENT, { mode: 0o644 });
  const child = spawn(
    'nsenter',
    ['-t', String(pcscd.namespacePid), '-m', '--', 'setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups',
      'env', '-u', 'PCSCLITE_CSOCK_NAME', '/usr/bin/python3', script, reader],
    { stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<string> => {
    const line = await lines.next();
    if (line.done) throw new Error(`the unprivileged PC/SC client exited: ${stderr}`);
    return line.value;
  };
  const close = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.stdin.end();
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const ready = await next();
    if (ready !== 'ready') throw new Error(`the unprivileged PC/SC client could not connect: ${ready} ${stderr}`);
    const status = await readFile(`/proc/${child.pid}/status`, 'utf8');
    // nsenter and setpriv exec in place: the pid is python's, whose real uid must be nobody's.
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1);
    return {
      uid,
      send: async (apduHex) => {
        child.stdin.write(`${apduHex}\n`);
        return next();
      },
      close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
