/**
 * A private pcscd with a pool of vpcd readers, for tests and benchmarks.
 *
 * Debian 12's pcscd always serves /run/pcscd/pcscd.comm (it ignores PCSCLITE_CSOCK_NAME
 * for its own socket), so there is one pcscd per mount namespace. Each harness runs a
 * small shell inside its own namespace (`unshare --mount --propagation private`) with a
 * tmpfs on /run/pcscd; that shell starts and stops pcscd on request and takes it down
 * when our stdin closes, so pcscd never outlives the test process, even on a crash.
 *
 * Clients outside reach the socket through the shell's root:
 * /proc/<shell pid>/root/run/pcscd/pcscd.comm, stable across pcscd restarts.
 * libpcsclite reads PCSCLITE_CSOCK_NAME once per process: pass `env` to spawned tools,
 * or call useInThisProcess() before the first PC/SC call of an in-process client.
 *
 * The vpcd driver listens on 0.0.0.0 on its ports (network namespaces are not separated):
 * the ports are chosen free at run time below the ephemeral range. A daemon run as root on them
 * installs the vpcd guard's nftables table for the range (daemon/vpcd_guard.ts) and leaves it
 * in place, as in production: the namespace shell deletes that table when it ends, so every
 * harness removes its own table, also when the test process dies.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { registerReaders, readerName as poolReaderName, readersInWholeBlocks, type ReaderNaming } from '../../daemon/reader_config.js';
import { guardTableName, readerPortRange } from '../../daemon/vpcd_guard.js';
import { NamespaceShell } from './namespace_shell.js';

export interface StartPcscdOptions {
  /** Readers in the pool (rounded up to even). Default 2. */
  readers?: number;
  /** Port of slot 0. Default: free ports picked at run time. */
  basePort?: number;
  /** Friendly name prefix. Default "tpmvsc test". */
  friendlyName?: string;
  /** FRIENDLYNAMEs with the block number (default) or without ('plain': one block only). */
  naming?: ReaderNaming;
  /** Run pcscd with -d -a (debug and APDU logs in the log file). Default false. */
  debug?: boolean;
  /** How long to wait for pcscd to come up, in ms. Default 10000. */
  startTimeoutMs?: number;
  /**
   * pcscd's socket made the way systemd makes it for pcscd.socket with SocketMode=/SocketGroup=
   * (bound under that mode, owned root:gid, handed to pcscd by socket activation), e.g. the
   * installer's --restrict-pcscd drop-in: { mode: 0o660, gid }. Default: pcscd makes its own,
   * mode 0666, as when started by hand.
   */
  socketAccess?: { mode: number; gid: number };
}

export interface PcscdInstance {
  basePort: number;
  /** Readers pcscd shows. */
  readers: number;
  friendlyName: string;
  /** process.env plus PCSCLITE_CSOCK_NAME: pass to spawned PC/SC clients. */
  env: NodeJS.ProcessEnv;
  socketPath: string;
  /** PID of the running pcscd (changes on restart). */
  readonly pid: number;
  /** PID of the namespace shell that owns pcscd. */
  namespacePid: number;
  /** The PC/SC reader name of slot n. */
  readerName(slot: number): string;
  /** The vpcd port of slot n. */
  port(slot: number): number;
  /** Sets PCSCLITE_CSOCK_NAME in this process (before the first in-process PC/SC call). */
  useInThisProcess(): void;
  /** Stops pcscd (SIGTERM, waits for it) and starts it again. */
  restart(): Promise<void>;
  /** Stops pcscd only (its ports are free until startPcscd()). */
  stopPcscd(): Promise<void>;
  /** Starts pcscd again after stopPcscd(); waits for its socket and every reader port. */
  startPcscd(): Promise<void>;
  /** Stops pcscd and the namespace, removes the temp dir. Idempotent. */
  stop(): Promise<void>;
  /** pcscd's stderr so far (for failure messages). */
  log(): Promise<string>;
}

/**
 * What systemd does for a socket unit, in small: bind the socket under the umask its SocketMode=
 * implies, chown it to root:SocketGroup=, then exec the service with the listening socket as fd 3
 * and LISTEN_FDS/LISTEN_PID set (sd_listen_fds(3)). argv: PATH MODE(octal) GID PROGRAM ARGS...
 */
const SOCKET_ACTIVATOR = `
import os, socket, sys
path, mode, gid = sys.argv[1], int(sys.argv[2], 8), int(sys.argv[3])
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
previous = os.umask(0o777 & ~mode)
listener.bind(path)
os.umask(previous)
os.chown(path, 0, gid)
listener.listen(socket.SOMAXCONN)
if listener.fileno() != 3:
    os.dup2(listener.fileno(), 3)
os.set_inheritable(3, True)
os.environ['LISTEN_FDS'] = '1'
os.environ['LISTEN_PID'] = str(os.getpid())
os.execvp(sys.argv[4], sys.argv[4:])
`;

/**
 * The shell that owns the namespace: $1 conf dir, $2 log file, $3 temp dir to remove on
 * exit (covers a test process killed before its cleanup), $4 the socket activator, $5 the vpcd
 * guard table of the ports, deleted on exit. Commands on stdin: \`start FLAGS\`,
 * \`activate MODE GID FLAGS\` (pcscd on a socket made as systemd would), \`stop\`.
 */
const NAMESPACE_SHELL = `
set -u
conf=$1
log=$2
tmp=$3
activator=$4
guard=$5
mkdir -p /run/pcscd && mount -t tmpfs -o mode=0755,size=1m tpmvsc-pcscd /run/pcscd || { echo "error mount"; exit 1; }
pid=
stop_pcscd() {
  if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; pid=; fi
}
cleanup() {
  stop_pcscd
  rm -rf "$tmp"
  # By its path: npx puts node_modules/.bin first, where @vercel/nft has a program named nft.
  /usr/sbin/nft delete table $guard 2>/dev/null
}
trap 'cleanup; exit 0' TERM INT HUP
echo ready
while read -r cmd flags; do
  case $cmd in
    start)
      rm -f /run/pcscd/pcscd.comm /run/pcscd/pcscd.pid
      pcscd -f $flags -c "$conf" </dev/null >>"$log" 2>&1 &
      pid=$!
      echo "started $pid";;
    activate)
      rm -f /run/pcscd/pcscd.comm /run/pcscd/pcscd.pid
      set -- $flags
      mode=$1 gid=$2
      shift 2
      /usr/bin/python3 -c "$activator" /run/pcscd/pcscd.comm "$mode" "$gid" pcscd -f "$@" -c "$conf" </dev/null >>"$log" 2>&1 &
      pid=$!
      echo "started $pid";;
    stop) stop_pcscd; echo stopped;;
  esac
done
cleanup
`;

/** [low, high] of the kernel's ephemeral port range. */
async function ephemeralRange(): Promise<[number, number]> {
  try {
    const [low, high] = (await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')).trim().split(/\s+/).map(Number);
    if (low && high) return [low, high];
  } catch {
    // fall through
  }
  return [32768, 60999];
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    // The driver binds 0.0.0.0: probe the same address.
    server.listen({ port, host: '0.0.0.0', exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** `count` consecutive ports free right now, outside the ephemeral range when possible. */
export async function findFreePortRange(count: number): Promise<number> {
  const [ephemeralLow, ephemeralHigh] = await ephemeralRange();
  const [low, high] = ephemeralLow - 10_000 > 1024 ? [10_000, ephemeralLow - 1] : [ephemeralHigh + 1, 65535];
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = low + Math.floor(Math.random() * (high - low - count));
    let free = true;
    for (let port = base; port < base + count && free; port++) free = await canListen(port);
    if (free) return base;
  }
  throw new Error(`no ${count} consecutive free ports found`);
}

/** Local ports in LISTEN state, from /proc/net/tcp (and tcp6). */
async function listeningPorts(): Promise<Set<number>> {
  const ports = new Set<number>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      continue;
    }
    //   sl  local_address rem_address   st ...     (st 0A = LISTEN)
    for (const line of text.split('\n').slice(1)) {
      const fields = line.trim().split(/\s+/);
      if (fields[3] === '0A' && fields[1]) ports.add(parseInt(fields[1].split(':')[1] ?? '', 16));
    }
  }
  return ports;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

class PcscdHarness implements PcscdInstance {
  readonly env: NodeJS.ProcessEnv;
  readonly socketPath: string;
  readonly namespacePid: number;
  private pcscdPid = 0;
  private stopped: Promise<void> | null = null;

  constructor(
    private readonly shell: NamespaceShell,
    private readonly tempDir: string,
    private readonly logFile: string,
    readonly basePort: number,
    readonly readers: number,
    readonly friendlyName: string,
    private readonly naming: ReaderNaming,
    /** The start command: `start FLAGS` or `activate MODE GID FLAGS`. */
    private readonly startCommand: string,
    private readonly startTimeoutMs: number,
  ) {
    this.namespacePid = shell.process.pid!;
    this.socketPath = `/proc/${this.namespacePid}/root/run/pcscd/pcscd.comm`;
    this.env = { ...process.env, PCSCLITE_CSOCK_NAME: this.socketPath };
  }

  get pid(): number {
    return this.pcscdPid;
  }

  readerName(slot: number): string {
    if (slot >= this.readers) throw new RangeError(`slot ${slot} is outside the pool of ${this.readers}`);
    return poolReaderName(slot, this.friendlyName, this.naming);
  }

  port(slot: number): number {
    if (slot >= this.readers) throw new RangeError(`slot ${slot} is outside the pool of ${this.readers}`);
    return this.basePort + slot;
  }

  useInThisProcess(): void {
    process.env['PCSCLITE_CSOCK_NAME'] = this.socketPath;
  }

  log(): Promise<string> {
    return readFile(this.logFile, 'utf8').catch(() => '');
  }

  async startPcscd(): Promise<void> {
    this.shell.send(this.startCommand);
    const line = await this.shell.nextLine(this.startTimeoutMs);
    const match = /^started (\d+)$/.exec(line);
    if (!match) throw new Error(`pcscd harness: unexpected answer ${JSON.stringify(line)}`);
    this.pcscdPid = Number(match[1]);
    const deadline = Date.now() + this.startTimeoutMs;
    for (;;) {
      const socketReady = await stat(this.socketPath).then(
        (info) => info.isSocket(),
        () => false,
      );
      const listening = await listeningPorts();
      let portsReady = true;
      for (let slot = 0; slot < this.readers; slot++) portsReady &&= listening.has(this.basePort + slot);
      if (socketReady && portsReady) return;
      if (Date.now() > deadline) {
        throw new Error(`pcscd did not come up within ${this.startTimeoutMs} ms:\n${(await this.log()).slice(-2000)}`);
      }
      await sleep(20);
    }
  }

  async stopPcscd(): Promise<void> {
    if (!this.pcscdPid) return;
    const pid = this.pcscdPid;
    this.shell.send('stop');
    try {
      await this.shell.nextLine(5000);
    } catch {
      // pcscd ignored SIGTERM: end it by its PID.
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
      await this.shell.nextLine(5000).catch(() => undefined);
    }
    this.pcscdPid = 0;
  }

  async restart(): Promise<void> {
    await this.stopPcscd();
    await this.startPcscd();
  }

  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    try {
      if (this.shell.process.exitCode === null && this.shell.process.signalCode === null) {
        await this.stopPcscd().catch(() => undefined);
      }
      await this.shell.end(5000);
    } finally {
      await rm(this.tempDir, { recursive: true, force: true });
    }
  }
}

/**
 * Starts a private pcscd with `readers` vpcd readers on free loopback ports. Always call
 * stop() (e.g. in t.teardown / test.after.always).
 */
export async function startPcscd(options: StartPcscdOptions = {}): Promise<PcscdInstance> {
  const friendlyName = options.friendlyName ?? 'tpmvsc test';
  const readers = readersInWholeBlocks(options.readers ?? 2);
  const startTimeoutMs = options.startTimeoutMs ?? 10_000;
  const tempDir = await mkdtemp(path.join(os.tmpdir(), 'tpmvsc-pcscd-'));
  let harness: PcscdHarness | null = null;
  try {
    const basePort = options.basePort ?? (await findFreePortRange(readers));
    const confDir = path.join(tempDir, 'reader.conf.d');
    const naming = options.naming ?? 'numbered';
    await registerReaders({ confDir, driverDir: path.join(tempDir, 'drivers'), readers, basePort, friendlyName, naming });
    const logFile = path.join(tempDir, 'pcscd.log');
    const guardTable = guardTableName(readerPortRange(basePort, readers));
    const child = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', NAMESPACE_SHELL, 'sh', confDir, logFile, tempDir, SOCKET_ACTIVATOR, guardTable], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const spawnError = new Promise<never>((_, reject) => child.once('error', reject));
    const shell = new NamespaceShell(child, 'pcscd harness');
    const flags = options.debug ? '-d -a' : '';
    const access = options.socketAccess;
    const startCommand = access ? `activate ${access.mode.toString(8)} ${access.gid} ${flags}` : `start ${flags}`;
    harness = new PcscdHarness(shell, tempDir, logFile, basePort, readers, friendlyName, naming, startCommand, startTimeoutMs);
    const ready = await Promise.race([shell.nextLine(startTimeoutMs), spawnError]).catch((error: unknown) => {
      throw new Error(`cannot create pcscd's mount namespace: ${String(error)} ${shell.stderr}`);
    });
    if (ready !== 'ready') throw new Error(`cannot create pcscd's mount namespace: ${ready} ${shell.stderr}`);
    await harness.startPcscd();
    return harness;
  } catch (error) {
    if (harness) await harness.stop();
    else await rm(tempDir, { recursive: true, force: true });
    throw error;
  }
}
