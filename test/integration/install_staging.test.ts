/**
 * scripts/install.sh into a DESTDIR (issue #15): the tree holds only what runs (the product's
 * compiled folders without source maps, production dependencies only, the three wrappers, the
 * systemd files and the guide), every program in it starts; and a failing step leaves no tree
 * behind, nor a changed install. The failure is a real one: a disk that is full (a small tmpfs,
 * mounted in a private mount namespace), for a first install and for an upgrade.
 */
import test from 'ava';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { REPO, runProgram } from '../helpers/stack.js';

const INSTALL = join(REPO, 'scripts', 'install.sh');
/** The folders of dist/ that run; scripts/, bench/ and test/ are development only. */
const PRODUCT_FOLDERS = ['applet', 'attestation', 'ca', 'cli', 'common', 'daemon', 'tpm', 'vault'];
const WRAPPERS = { tpmvscd: 'daemon', tpmvscmgr: 'cli', 'tpmvsc-ca': 'ca' } as const;

/** Every file under dir, as paths relative to it. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => !entry.isDirectory()).map((entry) => relative(dir, join(entry.parentPath, entry.name))).sort();
}

/** The package folders of a node_modules tree, relative to its parent ("node_modules/a/node_modules/@s/b"). */
async function packageFolders(root: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (modules: string): Promise<void> => {
    const names = await readdir(join(root, modules)).catch(() => [] as string[]);
    for (const name of names.filter((entry) => !entry.startsWith('.'))) {
      const scoped = name.startsWith('@') ? (await readdir(join(root, modules, name))).map((inner) => `${name}/${inner}`) : [name];
      for (const packageName of scoped) {
        found.push(`${modules}/${packageName}`);
        await walk(`${modules}/${packageName}/node_modules`);
      }
    }
  };
  await walk('node_modules');
  return found.sort();
}

test('DESTDIR install: only what runs, and every program in it starts', async (t) => {
  const temp = await mkdtemp(join(tmpdir(), 'tpmvsc-destdir-'));
  t.teardown(() => rm(temp, { recursive: true, force: true }));
  const destdir = join(temp, 'pkgroot');
  const installed = await runProgram('bash', [INSTALL], { env: { ...process.env, DESTDIR: destdir }, timeoutMs: 180_000 });
  t.is(installed.code, 0, installed.stderr);
  t.regex(installed.stdout, /staged into/);

  const files = await filesUnder(destdir);
  const lib = 'usr/lib/tpmvsc/';
  t.deepEqual(files.filter((file) => !file.startsWith(lib)), [
    'etc/systemd/system/pcscd.service.d/tpmvsc.conf',
    'usr/bin/tpmvsc-ca',
    'usr/bin/tpmvscd',
    'usr/bin/tpmvscmgr',
    'usr/lib/systemd/system/tpmvscd.service',
    'usr/lib/sysusers.d/tpmvsc.conf',
    'usr/lib/tmpfiles.d/tpmvsc.conf',
    'usr/share/doc/tpmvsc/INSTALL.md',
  ]);
  t.deepEqual((await readdir(join(destdir, lib))).sort(), ['dist', 'node_modules', 'package.json']);
  t.deepEqual((await readdir(join(destdir, lib, 'dist'))).sort(), PRODUCT_FOLDERS);
  t.deepEqual(files.filter((file) => file.startsWith(`${lib}dist/`) && !file.endsWith('.js')), [], 'dist holds JavaScript only (no source maps, no .d.ts)');

  // Exactly the production dependencies, the way npm lists them.
  const listed = await runProgram('npm', ['ls', '--omit=dev', '--all', '--parseable']);
  t.is(listed.code, 0, listed.stderr);
  const production = listed.stdout.trim().split('\n').map((path) => relative(REPO, path)).filter((path) => path.startsWith('node_modules/')).sort();
  t.deepEqual(await packageFolders(join(destdir, lib)), production);
  const manifest = JSON.parse(await readFile(join(REPO, 'package.json'), 'utf8')) as { devDependencies: Record<string, string> };
  for (const dev of Object.keys(manifest.devDependencies)) t.false(production.includes(`node_modules/${dev}`), `${dev} is installed`);

  // Each wrapper runs its program with the node found at install time; run that program in the DESTDIR copy.
  for (const [name, folder] of Object.entries(WRAPPERS)) {
    const wrapper = await readFile(join(destdir, 'usr', 'bin', name), 'utf8');
    const exec = /^exec (\S+) \/usr\/lib\/tpmvsc\/dist\/(\w+)\/main\.js "\$@"$/m.exec(wrapper);
    t.truthy(exec, wrapper);
    t.is(exec?.[2], folder);
    t.is((await stat(join(destdir, 'usr', 'bin', name))).mode & 0o777, 0o755);
    const version = await runProgram(exec?.[1] ?? 'node', [join(destdir, lib, 'dist', folder, 'main.js'), '--version']);
    t.is(version.code, 0, version.stderr);
    t.regex(version.stdout, new RegExp(`^${name} \\d+\\.\\d+\\.\\d+`));
  }
  const guide = await readFile(join(REPO, 'docs', 'INSTALL.md'), 'utf8');
  for (const name of Object.keys(WRAPPERS)) t.true(guide.includes(`/usr/bin/${name}`), `docs/INSTALL.md names /usr/bin/${name}`);
});

/**
 * Runs in a private mount namespace: $1 a scratch directory, $2 install.sh. A first install
 * into a 3 MB disk; then an install into a roomy disk, which is then shrunk to what it uses
 * plus 1 MB, and an upgrade on that full disk. Prints each exit code and a listing of the
 * disks (files: path, size, mode, mtime, checksum; directories: path, mode).
 */
const FULL_DISK_SCRIPT = `
set -u
scratch=$1; install=$2
# Directories by name and mode only: the staging directory's coming and going touches their mtime.
listing() { echo "== $1"; (cd "$2" && find . -mindepth 1 \\( -type d -printf '%p/ %m\\n' \\) -o -printf '%p %s %m %T@\\n' | sort; find . -type f -exec md5sum {} + | sort); }
mkdir "$scratch/small" "$scratch/upgrade"
mount -t tmpfs -o size=3m tpmvsc-install-small "$scratch/small" || exit 90
mount -t tmpfs -o size=64m tpmvsc-install-upgrade "$scratch/upgrade" || exit 90
DESTDIR="$scratch/small/pkgroot" bash "$install" >/dev/null 2>"$scratch/small-error"; echo "== first $?"
echo "== first-error $(tail -n 1 "$scratch/small-error")"
listing small "$scratch/small"
DESTDIR="$scratch/upgrade/root" bash "$install" >/dev/null 2>&1; echo "== installed $?"
used=$(df --output=used -k "$scratch/upgrade" | tail -n 1)
mount -o remount,size=$((used + 1024))k "$scratch/upgrade" || exit 91
listing before "$scratch/upgrade"
DESTDIR="$scratch/upgrade/root" bash "$install" >/dev/null 2>"$scratch/upgrade-error"; echo "== upgrade $?"
echo "== upgrade-error $(tail -n 1 "$scratch/upgrade-error")"
listing after "$scratch/upgrade"
`;

test('a failing step (a full disk) leaves no tree behind, and an existing install as it was', async (t) => {
  const scratch = await mkdtemp(join(tmpdir(), 'tpmvsc-full-disk-'));
  t.teardown(() => rm(scratch, { recursive: true, force: true }));
  const run = await runProgram('unshare', ['--mount', '--propagation', 'private', 'bash', '-c', FULL_DISK_SCRIPT, 'bash', scratch, INSTALL], { timeoutMs: 300_000 });
  t.is(run.code, 0, `the full-disk harness failed: ${run.stderr}`);
  const sections = new Map<string, string>();
  for (const section of run.stdout.split(/^== /m).filter(Boolean)) {
    const [head, ...body] = section.split('\n');
    const [name, ...rest] = (head ?? '').split(' ');
    sections.set(name ?? '', [rest.join(' '), ...body].join('\n').trim());
  }
  t.not(sections.get('first'), '0', 'install.sh succeeded on a 3 MB disk');
  t.regex(sections.get('first-error') ?? '', /^install\.sh: failed \(exit code \d+\) at: .*; nothing was installed or changed$/);
  t.is(sections.get('small'), '', 'a failed first install left files or directories behind');

  t.is(sections.get('installed'), '0');
  t.not(sections.get('upgrade'), '0', 'install.sh succeeded on a full disk');
  t.regex(sections.get('upgrade-error') ?? '', /nothing was installed or changed$/);
  t.true((sections.get('before') ?? '').includes('./root/usr/lib/tpmvsc/dist/daemon/main.js'));
  t.is(sections.get('after'), sections.get('before'), 'the failed upgrade changed the existing install');
});

test('DESTDIR install --restrict-pcscd=GROUP stages the socket drop-in and the group; a bad group name stops it first', async (t) => {
  const temp = await mkdtemp(join(tmpdir(), 'tpmvsc-destdir-'));
  t.teardown(() => rm(temp, { recursive: true, force: true }));
  const destdir = join(temp, 'pkgroot');
  const installed = await runProgram('bash', [INSTALL, '--restrict-pcscd=cardusers'], { env: { ...process.env, DESTDIR: destdir }, timeoutMs: 180_000 });
  t.is(installed.code, 0, installed.stderr);
  const socketDropIn = await readFile(join(destdir, 'etc', 'systemd', 'system', 'pcscd.socket.d', 'tpmvsc-restrict.conf'), 'utf8');
  t.regex(socketDropIn, /^SocketMode=0660$/m);
  t.regex(socketDropIn, /^SocketGroup=cardusers$/m);
  t.regex(await readFile(join(destdir, 'usr', 'lib', 'sysusers.d', 'tpmvsc-pcscd.conf'), 'utf8'), /^g\s+cardusers -$/m);

  const refused = await runProgram('bash', [INSTALL, '--restrict-pcscd=Card Users'], { env: { ...process.env, DESTDIR: join(temp, 'refused') } });
  t.is(refused.code, 2);
  t.regex(refused.stderr, /^install\.sh: --restrict-pcscd=GROUP needs a group name/);
  t.deepEqual(await readdir(temp), ['pkgroot'], 'a refused option left a tree');
});
