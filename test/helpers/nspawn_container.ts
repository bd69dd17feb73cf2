/**
 * A real systemd, booted as PID 1 in a systemd-nspawn container over this machine's own root,
 * for tests of the installed service (test/e2e/systemd_service.test.ts).
 *
 * The host is never written: the container's root is an overlay of / whose upper layer is a
 * tmpfs, nspawn's own state (/run/systemd/nspawn) is a private tmpfs, and all of it is mounted
 * in a mount namespace of a small shell that exists only for this container. The container
 * has its own network namespace (--private-network: only its own loopback) and its own
 * sub-cgroup of this process's cgroup2 hierarchy. That shell tears everything down when told
 * to, or when our stdin closes (the test process died), so nothing outlives the test.
 *
 * What makes systemd's hardening work inside (measured on a host with systemd 252 that is not
 * PID 1 and has a hybrid cgroup layout, cgroup2 at /sys/fs/cgroup/unified):
 * - SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1: the container gets a cgroup2 tree of its own. With the
 *   hybrid default, DevicePolicy= falls back to the devices v1 controller, which nspawn mounts
 *   read-only: device rules are silently not applied.
 * - --system-call-filter=bpf: nspawn's seccomp filter refuses bpf() by default, and without it
 *   systemd applies neither IPAddressDeny= nor DevicePolicy= (both are cgroup BPF programs),
 *   again without an error. CAP_BPF is kept too, though CAP_SYS_ADMIN (which the container
 *   has) already lets this kernel load them.
 * The test proves both are enforced before it trusts the container.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { NamespaceShell } from './namespace_shell.js';
import { runProgram, type CommandResult } from './stack.js';

export interface BootedContainer {
  /** The container's systemd, as this machine sees its PID. */
  readonly leaderPid: number;
  /** Runs a program inside the container (all its namespaces), with a clean root environment. */
  run(program: string, args: string[], options?: { input?: string; timeoutMs?: number }): Promise<CommandResult>;
  /** Writes a file inside the container (into the overlay's tmpfs layer). */
  writeFile(path: string, content: string | Uint8Array): Promise<void>;
  /** The container's console (systemd's boot messages) so far. */
  console(): Promise<string>;
  /** Powers the container off and removes every trace of it. Idempotent. */
  stop(): Promise<void>;
}

const NSPAWN = '/usr/bin/systemd-nspawn';

/** Why this machine cannot run the container (a reason to skip), or undefined when it can. */
export async function containerUnsupported(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'needs root (systemd-nspawn, mounts)';
  if (!existsSync(NSPAWN)) return 'systemd-nspawn is missing: apt-get install systemd-container (scripts/setup.sh does)';
  const filesystems = await readFile('/proc/filesystems', 'utf8');
  if (!/\toverlay$/m.test(filesystems)) return 'the kernel has no overlayfs';
  return undefined;
}

/** Where this process sits in the cgroup2 hierarchy, and where a v1 name=systemd tree mirrors it. */
async function cgroupPlaces(): Promise<{ unifiedMount: string; ownPath: string; systemdV1Mount: string | undefined }> {
  // mountinfo: id parent major:minor root mountpoint options [optional...] - fstype source superoptions
  const mounts = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').map((line) => {
    const [before, after] = line.split(' - ');
    const fields = (before ?? '').split(' ');
    const [fstype, , superOptions] = (after ?? '').split(' ');
    return { mountPoint: fields[4] ?? '', fstype, superOptions: superOptions ?? '' };
  });
  const unified = mounts.find((mount) => mount.fstype === 'cgroup2');
  if (!unified) throw new Error('this machine mounts no cgroup2 hierarchy: systemd-nspawn cannot give the container a unified one');
  const ownLine = (await readFile('/proc/self/cgroup', 'utf8')).split('\n').find((line) => line.startsWith('0::'));
  if (!ownLine) throw new Error('/proc/self/cgroup has no cgroup2 line');
  const systemdV1 = mounts.find((mount) => mount.fstype === 'cgroup' && mount.superOptions.split(',').includes('name=systemd'));
  return { unifiedMount: unified.mountPoint, ownPath: ownLine.slice(3).replace(/\/$/, ''), systemdV1Mount: systemdV1?.mountPoint };
}

/**
 * The shell that owns the container's mount namespace: $1 scratch mount point, $2 console log,
 * $3 the container's cgroup2 directory, $4 its mirror in a v1 name=systemd tree (or empty),
 * then nspawn's arguments. It prints "started <nspawn pid>", then waits for a line (or EOF) on
 * stdin, powers the container off, removes its cgroups and prints "stopped".
 */
const NAMESPACE_SHELL = `
set -u
scratch=$1; console=$2; cgroup=$3; v1cgroup=$4; shift 4
fail() { echo "error $*"; exit 1; }
mount -t tmpfs -o mode=0700,size=2g tpmvsc-container "$scratch" || fail "cannot mount a tmpfs on $scratch"
mkdir "$scratch/upper" "$scratch/work" "$scratch/root"
mount -t overlay -o "lowerdir=/,upperdir=$scratch/upper,workdir=$scratch/work" tpmvsc-container-root "$scratch/root" \\
  || fail "cannot mount an overlay of / with a tmpfs upper layer"
# nspawn keeps state in /run/systemd/nspawn: a private tmpfs there, and where that directory does
# not exist, a private overlay of its nearest parent first so that creating it writes nothing.
state=/run/systemd/nspawn
if [ ! -d $state ]; then
  parent=$state; while [ ! -d "$parent" ]; do parent=$(dirname "$parent"); done
  mkdir "$scratch/run-upper" "$scratch/run-work"
  mount -t overlay -o "lowerdir=$parent,upperdir=$scratch/run-upper,workdir=$scratch/run-work" tpmvsc-container-run "$parent" \\
    || fail "cannot overlay $parent"
  mkdir -p $state
fi
mount -t tmpfs -o mode=0755,size=1m tpmvsc-container-nspawn $state || fail "cannot mount a tmpfs on $state"
mkdir "$cgroup" || fail "cannot create the cgroup $cgroup"
(echo $BASHPID > "$cgroup/cgroup.procs" && SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 exec systemd-nspawn "$@") </dev/null >"$console" 2>&1 &
nspawn=$!
echo "started $nspawn"
read -r _
# SIGTERM: nspawn asks the container's systemd for a clean poweroff.
kill -TERM $nspawn 2>/dev/null
sleep 20 &
sleeper=$!
wait -n $nspawn $sleeper 2>/dev/null
kill -KILL $nspawn 2>/dev/null
wait $nspawn 2>/dev/null
kill $sleeper 2>/dev/null
wait $sleeper 2>/dev/null
# Anything of the container still in its cgroup (only the container was ever put there).
[ -e "$cgroup/cgroup.kill" ] && echo 1 > "$cgroup/cgroup.kill" 2>/dev/null
for dir in "$cgroup" $v1cgroup; do
  for try in 1 2 3 4 5 6 7 8 9 10; do
    [ -d "$dir" ] || break
    find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null
    sleep 0.2
  done
done
echo stopped
`;

const CLEAN_ENVIRONMENT = ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/root', 'LANG=C.UTF-8', 'TERM=dumb', 'SYSTEMD_PAGER='];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The child of nspawn that runs the container's systemd (PID 1 inside). */
async function findLeader(nspawnPid: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const children = await readFile(`/proc/${nspawnPid}/task/${nspawnPid}/children`, 'utf8').catch(() => '');
    for (const child of children.trim().split(/\s+/).filter(Boolean)) {
      const comm = await readFile(`/proc/${child}/comm`, 'utf8').catch(() => '');
      if (comm.trim() === 'systemd') return Number(child);
    }
    await sleep(50);
  }
  throw new Error(`systemd-nspawn (pid ${nspawnPid}) started no systemd within ${timeoutMs} ms`);
}

/**
 * Boots systemd in a new container and waits until its boot is finished. `unit` is the target
 * it boots (default basic.target: sockets and timers but not this machine's own services);
 * `bindReadOnly`: host directories the container sees read-only at the same path.
 */
export async function bootContainer(options: { unit?: string; bootTimeoutMs?: number; bindReadOnly?: string[] } = {}): Promise<BootedContainer> {
  const bootTimeoutMs = options.bootTimeoutMs ?? 60_000;
  const places = await cgroupPlaces();
  const name = `tpmvsc-container-${process.pid}-${Date.now().toString(36)}`;
  const cgroupPath = `${places.ownPath}/${name}`;
  const temp = await mkdtemp(join(tmpdir(), 'tpmvsc-container-'));
  const scratch = join(temp, 'mnt');
  await mkdir(scratch);
  const consoleLog = join(temp, 'console.log');
  const nspawnArgs = [
    '--quiet', `--directory=${scratch}/root`, '--boot', '--private-network', '--keep-unit', '--register=no',
    '--link-journal=no', '--capability=CAP_BPF', '--system-call-filter=bpf', '--console=read-only',
    // The overlay shows the root file system only: a directory on another mount (a checkout in
    // /tmp, on a tmpfs) is bound in at the same path.
    ...(options.bindReadOnly ?? []).map((path) => `--bind-ro=${path}`),
    '--', `systemd.unit=${options.unit ?? 'basic.target'}`,
  ];
  const child = spawn('unshare', [
    '--mount', '--propagation', 'private', 'bash', '-c', NAMESPACE_SHELL, 'bash', scratch, consoleLog,
    `${places.unifiedMount}${cgroupPath}`, places.systemdV1Mount ? `${places.systemdV1Mount}${cgroupPath}` : '', ...nspawnArgs,
  ], { stdio: ['pipe', 'pipe', 'pipe'] });
  const shell = new NamespaceShell(child, 'container shell');
  const container = new Container(shell, temp, consoleLog);
  try {
    const started = await shell.nextLine(10_000);
    const match = /^started (\d+)$/.exec(started);
    if (!match) throw new Error(`cannot set the container up: ${started}`);
    container.leaderPid = await findLeader(Number(match[1]), 15_000);
    // Until systemd has set up /run/systemd, systemctl answers "offline" or cannot connect: ask again.
    const deadline = Date.now() + bootTimeoutMs;
    let booted: CommandResult;
    do {
      booted = await container.run('systemctl', ['is-system-running', '--wait'], { timeoutMs: bootTimeoutMs });
      if (!['', 'offline'].includes(booted.stdout.trim())) break;
      await sleep(100);
    } while (Date.now() < deadline);
    const state = booted.stdout.trim();
    if (state !== 'running' && state !== 'degraded') {
      throw new Error(`the container's systemd did not finish booting (${state || booted.stderr.trim()}):\n${(await container.console()).slice(-3000)}`);
    }
    return container;
  } catch (error) {
    await container.stop();
    throw error;
  }
}

class Container implements BootedContainer {
  leaderPid = 0;
  private stopped: Promise<void> | undefined;

  constructor(
    private readonly shell: NamespaceShell,
    private readonly temp: string,
    private readonly consoleLog: string,
  ) {}

  run(program: string, args: string[], options: { input?: string; timeoutMs?: number } = {}): Promise<CommandResult> {
    if (!this.leaderPid) throw new Error('the container is not running');
    return runProgram('nsenter', ['--target', String(this.leaderPid), '--all', '--root', '--wd', 'env', '-i', ...CLEAN_ENVIRONMENT, program, ...args], {
      ...options,
      cwd: '/',
    });
  }

  async writeFile(path: string, content: string | Uint8Array): Promise<void> {
    const where = `/proc/${this.leaderPid}/root${path}`;
    await mkdir(dirname(where), { recursive: true });
    await writeFile(where, content);
  }

  console(): Promise<string> {
    return readFile(this.consoleLog, 'utf8').catch(() => '');
  }

  stop(): Promise<void> {
    this.stopped ??= this.shutdown();
    return this.stopped;
  }

  private async shutdown(): Promise<void> {
    try {
      // The shell powers the container off (up to 20 s), then removes its cgroups.
      await this.shell.end(40_000);
      this.leaderPid = 0;
    } finally {
      await rm(this.temp, { recursive: true, force: true });
    }
  }
}
