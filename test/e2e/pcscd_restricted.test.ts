/**
 * The installer's --restrict-pcscd option: a pcscd.socket drop-in (systemd/pcscd.socket.d/
 * tpmvsc-restrict.conf) makes pcscd's socket 0660 root:<group>. Reproduced here as systemd does it
 * (test/helpers/pcscd.ts binds the socket under that mode, chowns it, hands it to pcscd by socket
 * activation), in pcscd's private mount namespace: a uid outside the group is refused by pcscd
 * (Debian 12's pcsc-lite has no polkit: the socket's mode is the only check), whatever the client;
 * a member reaches the card; with the default mode 0666 the same outsider reaches it too.
 *
 * Clients run inside pcscd's namespace (nsenter as root, then setpriv to the unprivileged uid) on
 * the standard socket path, as they would on a real machine.
 */
import { execFileSync } from 'node:child_process';
import { chmod, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { REPO, runProgram, startStack, type CommandResult, type Stack } from '../helpers/stack.js';

/** A gid /etc/group does not know, from 61500 up: the test's stand-in for `scard`. */
function unusedGid(): number {
  for (let gid = 61500; gid < 62500; gid += 1) {
    try {
      execFileSync('getent', ['group', String(gid)], { stdio: 'ignore' });
    } catch {
      return gid;
    }
  }
  throw new Error('no free gid');
}

const PIV_SELECT = '00A4040009A00000030800001000';
const PYSCARD_SELECT = `
from smartcard.System import readers
found = readers()
print("readers:", [str(r) for r in found])
connection = found[0].createConnection()
connection.connect()
data, sw1, sw2 = connection.transmit(list(bytes.fromhex("${PIV_SELECT}")))
print("SELECT PIV: %02X%02X" % (sw1, sw2))
`;

let stack: Stack;
let scardGid: number;
let dropInMode: number;

test.before(async () => {
  // The mode is the drop-in's own; its group (scard) is played by a gid unknown to this machine.
  const dropIn = await readFile(join(REPO, 'systemd', 'pcscd.socket.d', 'tpmvsc-restrict.conf'), 'utf8');
  dropInMode = parseInt(/^SocketMode=([0-7]{3,4})$/m.exec(dropIn)![1]!, 8);
  scardGid = unusedGid();
  stack = await startStack({ readers: 2, pcscdSocketAccess: { mode: dropInMode, gid: scardGid } });
  const created = await stack.cli(['create', '/quiet', '/name', 'Owner', '/AdminKey', 'DEFAULT', '/generate']);
  if (created.code !== 0) throw new Error(created.stderr);
});

test.after.always(async () => {
  await stack?.stop();
});

/** Runs a PC/SC client in pcscd's mount namespace as `uid`:`gid` (only that group), on the default socket path. */
function asUser(uid: string | number, gid: string | number, program: string, args: string[]): Promise<CommandResult> {
  const env = { ...stack.env };
  delete env.PCSCLITE_CSOCK_NAME;
  return runProgram('nsenter', ['--mount', `--target=${stack.pcscd.namespacePid}`, '--', 'setpriv', `--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', '--', program, ...args], {
    env: { ...env, HOME: '/nonexistent' },
  });
}

const outsider = (program: string, args: string[]): Promise<CommandResult> => asUser('nobody', 'nogroup', program, args);
const member = (program: string, args: string[]): Promise<CommandResult> => asUser('nobody', scardGid, program, args);

test.serial('the socket is 0660 root:<group>, as the drop-in makes it', async (t) => {
  const socket = await stat(stack.pcscd.socketPath);
  t.true(socket.isSocket());
  t.is(dropInMode, 0o660);
  t.is(socket.mode & 0o777, 0o660);
  t.is(socket.uid, 0);
  t.is(socket.gid, scardGid);
});

test.serial('a uid outside the group is refused by pcscd, whatever the client', async (t) => {
  const pyscard = await outsider('/usr/bin/python3', ['-c', PYSCARD_SELECT]);
  t.log('pyscard:', pyscard.code, pyscard.stderr.trim().split('\n').at(-1));
  t.is(pyscard.code, 1);
  t.regex(pyscard.stderr, /Failed to establish context: Service not available\. \(0x8010001D\)/);
  t.notRegex(pyscard.stdout, /SELECT PIV/);

  // What each client says (Debian 12): connect() to the socket fails with EACCES, which
  // libpcsclite reports as SCARD_E_NO_SERVICE; most clients then just see no reader.
  const openscList = await outsider('opensc-tool', ['-l']);
  t.log('opensc-tool -l:', openscList.code, JSON.stringify(openscList.stdout + openscList.stderr));
  t.is(openscList.stdout, 'No smart card readers found.\n', 'and exit code 0');
  const openscSerial = await outsider('opensc-tool', ['--serial']);
  t.log('opensc-tool --serial:', openscSerial.code, JSON.stringify(openscSerial.stdout + openscSerial.stderr));
  t.is(openscSerial.code, 1);
  t.regex(openscSerial.stderr, /Failed to connect to reader: No readers found/);

  const yubico = await outsider('yubico-piv-tool', ['-a', 'status']);
  t.log('yubico-piv-tool -a status:', yubico.code, JSON.stringify(yubico.stdout + yubico.stderr));
  t.is(yubico.code, 1);
  t.regex(yubico.stderr, /Failed to connect to yubikey\./);

  const scan = await outsider('timeout', ['5', 'pcsc_scan', '-r']);
  t.log('pcsc_scan -r:', scan.code, JSON.stringify(scan.stdout + scan.stderr));
  t.regex(scan.stdout + scan.stderr, /SCardEstablishContext: Service not available\./);

  const pkcs11 = await outsider('pkcs11-tool', ['--module', '/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so', '-L']);
  t.log('pkcs11-tool -L:', pkcs11.code, JSON.stringify(pkcs11.stdout + pkcs11.stderr));
  t.regex(pkcs11.stdout + pkcs11.stderr, /No slots\./);

  const ykman = await outsider('ykman', ['list', '--readers']);
  t.log('ykman list --readers:', ykman.code, (ykman.stdout + ykman.stderr).trim().split('\n').at(-1));
  t.is(ykman.code, 1);
  t.regex(ykman.stderr, /Service not available\. \(0x8010001D\)/);
});

test.serial('a member of the group and root reach the card', async (t) => {
  const pyscard = await member('/usr/bin/python3', ['-c', PYSCARD_SELECT]);
  t.is(pyscard.code, 0, pyscard.stderr);
  t.regex(pyscard.stdout, /SELECT PIV: 9000/);
  const openscList = await member('opensc-tool', ['-l']);
  t.regex(openscList.stdout, /Yes\s+.*TPM Virtual Smart Card/);
  const yubico = await member('yubico-piv-tool', ['-r', stack.pcscd.readerName(0), '-a', 'status']);
  t.is(yubico.code, 0, yubico.stderr);
  t.regex(yubico.stdout, /CHUID:/);
  const root = await asUser(0, 0, 'opensc-tool', ['-l']);
  t.regex(root.stdout, /Yes\s+.*TPM Virtual Smart Card/);
});

test.serial('control: with the default mode 0666 the same outsider reaches the card', async (t) => {
  await chmod(stack.pcscd.socketPath, 0o666);
  t.teardown(() => chmod(stack.pcscd.socketPath, 0o660));
  const pyscard = await outsider('/usr/bin/python3', ['-c', PYSCARD_SELECT]);
  t.is(pyscard.code, 0, pyscard.stderr);
  t.regex(pyscard.stdout, /SELECT PIV: 9000/);
});
