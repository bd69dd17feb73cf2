/**
 * The installed service under a real systemd. systemd boots as PID 1 in a systemd-nspawn
 * container over this machine's own root (test/helpers/nspawn_container.ts: a tmpfs upper
 * layer, so the host is never written; its own network namespace and cgroup2 tree; cgroup BPF
 * allowed), and inside it, as an admin would:
 *
 * 1. The hardening is enforced, or the test FAILS: as nobody, a unit with IPAddressDeny=any
 *    cannot reach an address of the container's own loopback outside 127.0.0.0/8, and a unit
 *    with DevicePolicy=closed cannot open /dev/net/tun; the same probes without the setting
 *    succeed.
 * 2. scripts/install.sh on a machine without /dev/tpmrm0 exits non-zero and names the unmet
 *    condition (it used to print "tpmvscd is running" over an inactive unit).
 * 3. A swtpm unit and docs/INSTALL.md's own drop-in (read from the document) stand in for the
 *    TPM; install.sh again, over the first install: tpmvscd is ready.
 * 4. tpmvscmgr creates a card; ykman puts a key and a certificate in 9A; pkcs11-tool logs in
 *    and signs; openssl verifies the signature.
 * 5. systemctl restart tpmvscd, then pcscd: the card comes back each time.
 * 6. pcscd with our drop-in takes vpcd connections on loopback only (as root, whom the vpcd
 *    guard lets through: a reader port on the container's non-loopback address stays shut, on
 *    127.0.0.1 it answers), and the guard the unit's ExecStartPre installed refuses uid nobody.
 * 7. 61 s without any PC/SC client (Debian's pcscd --auto-exit quits after 60 s), during which
 *    `systemd-analyze security` for tpmvscd and pcscd is printed: pcscd is still the same
 *    process and a one-shot pkcs11-tool login + signature finds the card.
 *
 * Skipped (with the reason) only without root, systemd-nspawn or overlayfs. install.sh installs
 * dist/ as it is: `npm test` builds it first (run `npm run build` before this file alone). The
 * phases' times are logged; apart from the idle wait they take ~20 s on a quiet 2-vCPU machine,
 * 45-65 s when it runs a load of 15.
 *
 * Negative runs, done by hand (systemd 252, kernel 6.18), each failing with one line:
 * - SystemCallFilter=@basic-io in systemd/tpmvscd.service: "install.sh with the software TPM
 *   failed (exit 1): install.sh: tpmvscd is not running (activating/auto-restart): /bin/sh: error
 *   while loading shared libraries: libc.so.6: cannot open shared object file: Operation not
 *   permitted -- the files are installed: fix that (...)".
 * - --auto-exit put back into systemd/pcscd.service.d/tpmvsc.conf's ExecStart: "a one-shot client
 *   found no card after 61 s without clients".
 * - the container without --system-call-filter=bpf (and CAP_BPF): "IPAddressDeny=any is not
 *   enforced in this container: a unit reached 10.201.0.1 (no cgroup BPF firewall)".
 * - the container without SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 (this host's hybrid layout):
 *   "DevicePolicy=closed is not enforced in this container: a unit opened /dev/net/tun (no
 *   cgroup BPF device filter)".
 */
import test, { type ExecutionContext } from 'ava';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { bootContainer, containerUnsupported, type BootedContainer } from '../helpers/nspawn_container.js';
import { OPENSC_MODULE } from '../helpers/card_setup.js';
import { DEFAULT_MANAGEMENT_KEY, DEFAULT_PIN, readerName } from '../helpers/piv_tools.js';
import { REPO, type CommandResult } from '../helpers/stack.js';
import { DEFAULT_BASE_PORT } from '../../daemon/reader_config.js';

/** An address of the container's own loopback that IPAddressAllow=localhost does not cover. */
const OUTSIDE_ADDRESS = '10.201.0.1';
const PROBE_PORT = 4444;
const CARD_LABEL = 'container';
const IDLE_SECONDS = 61;
/** The reader of card 0 and a reader port of the pool with no card (tpmvscd's default base 470). */
const READER = readerName(0);
const FREE_READER_PORT = DEFAULT_BASE_PORT + 2;
const SWTPM_UNIT = 'tpmvsc-test-swtpm.service';

const unsupported = await containerUnsupported();
const serviceTest = unsupported ? test.skip : test.serial;

/** The line that says what went wrong: the last one on stderr, else on stdout. */
function lastLine(result: CommandResult): string {
  const last = (text: string): string | undefined => text.split('\n').map((line) => line.trim()).filter(Boolean).at(-1);
  return last(result.stderr) ?? last(result.stdout) ?? '(no output)';
}

/** Runs a program inside; a failure throws one line (the output goes to the test's log). */
async function inside(t: ExecutionContext, c: BootedContainer, what: string, program: string, args: string[], timeoutMs = 60_000): Promise<CommandResult> {
  const result = await c.run(program, args, { timeoutMs });
  if (result.code !== 0) {
    t.log(`${what}: ${program} ${args.join(' ')}\n${result.stdout}\n${result.stderr}`);
    throw new Error(`${what} failed (exit ${result.code}): ${lastLine(result)}`);
  }
  return result;
}

/**
 * What an earlier tpmvsc on this machine may have left (the container's root is an overlay of the
 * host's, which other work shares): the test installs on a machine without any of it.
 */
const EARLIER_INSTALL = ['/var/lib/tpmvsc', '/usr/lib/tpmvsc', '/usr/bin/tpmvscd', '/usr/bin/tpmvscmgr', '/usr/bin/tpmvsc-ca',
  '/usr/lib/systemd/system/tpmvscd.service', '/etc/systemd/system/tpmvscd.service.d', '/etc/systemd/system/pcscd.service.d/tpmvsc.conf',
  '/etc/reader.conf.d/tpmvsc'];

/** Removes EARLIER_INSTALL inside the container (the host keeps its files); logs what there was. */
async function startFromAFreshMachine(t: ExecutionContext, c: BootedContainer): Promise<void> {
  const found = EARLIER_INSTALL.filter((path) => existsSync(`/proc/${c.leaderPid}/root${path}`));
  if (found.length === 0) return;
  t.log(`the host has files of an earlier tpmvsc, removed inside the container only: ${found.join(' ')}`);
  await inside(t, c, 'removing an earlier install inside the container', 'rm', ['-rf', '--', ...found]);
}

/** A transient unit that runs `script` as nobody with these extra unit properties. */
function probeUnit(c: BootedContainer, properties: string[], script: string): Promise<CommandResult> {
  const args = ['--wait', '--pipe', '--quiet', '--property=User=nobody', '--property=Group=nogroup'];
  for (const property of properties) args.push(`--property=${property}`);
  return c.run('systemd-run', [...args, 'timeout', '3', 'bash', '-c', script]);
}

async function proveHardeningEnforced(t: ExecutionContext, c: BootedContainer): Promise<void> {
  await inside(t, c, 'adding a non-loopback address to the container loopback', 'ip', ['address', 'add', `${OUTSIDE_ADDRESS}/32`, 'dev', 'lo']);
  await inside(t, c, 'starting the probe listener', 'systemd-run', ['--quiet', '--unit=tpmvsc-test-listener', '/usr/bin/node', '-e',
    `require('net').createServer((s) => s.end()).listen(${PROBE_PORT}, '${OUTSIDE_ADDRESS}')`]);
  const connect = `exec 3<>/dev/tcp/${OUTSIDE_ADDRESS}/${PROBE_PORT}`;
  let reachable: CommandResult | undefined;
  for (let attempt = 0; attempt < 50 && reachable?.code !== 0; attempt++) reachable = await probeUnit(c, [], connect);
  if (reachable?.code !== 0) throw new Error(`the probe cannot reach ${OUTSIDE_ADDRESS}:${PROBE_PORT} even without IPAddressDeny=: ${reachable ? lastLine(reachable) : ''}`);
  const denied = await probeUnit(c, ['IPAddressDeny=any', 'IPAddressAllow=localhost'], connect);
  if (denied.code === 0) throw new Error(`IPAddressDeny=any is not enforced in this container: a unit reached ${OUTSIDE_ADDRESS} (no cgroup BPF firewall)`);

  const openTun = 'exec 3<>/dev/net/tun';
  const opened = await probeUnit(c, [], openTun);
  if (opened.code !== 0) throw new Error(`the probe cannot open /dev/net/tun even without DevicePolicy=: ${lastLine(opened)}`);
  const closed = await probeUnit(c, ['DevicePolicy=closed'], openTun);
  if (closed.code === 0) throw new Error('DevicePolicy=closed is not enforced in this container: a unit opened /dev/net/tun (no cgroup BPF device filter)');
  t.regex(closed.stderr, /Operation not permitted/);
}

/** The drop-in docs/INSTALL.md gives for a software TPM (the ```ini block after "software TPM"). */
async function installGuideSoftwareTpmDropIn(): Promise<string> {
  const guide = await readFile(join(REPO, 'docs', 'INSTALL.md'), 'utf8');
  const block = /software TPM[\s\S]*?```ini\n([\s\S]*?)```/.exec(guide);
  if (!block?.[1]) throw new Error('docs/INSTALL.md has no ```ini drop-in for a software TPM');
  return block[1];
}

/** The PKCS#11 token label of the card in READER, or undefined when the reader is empty. */
async function tokenLabel(c: BootedContainer): Promise<string | undefined> {
  const listed = await c.run('pkcs11-tool', ['--module', OPENSC_MODULE, '--list-token-slots']);
  const slot = listed.stdout.split(/\n(?=Slot )/).find((block) => block.includes(READER));
  return /token label\s*:\s*(.*)/.exec(slot ?? '')?.[1]?.trim();
}

async function waitForCard(c: BootedContainer, after: string, timeoutMs = 20_000): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    if ((await tokenLabel(c)) === CARD_LABEL) return Date.now() - started;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`the card did not come back within ${timeoutMs / 1000} s after ${after}`);
}

/** pkcs11-tool logs in and signs with the 9A key; openssl checks the signature with the key's public half. */
async function loginAndSign(t: ExecutionContext, c: BootedContainer, what: string): Promise<void> {
  await c.writeFile('/root/data.bin', randomBytes(300));
  await inside(t, c, `${what}: pkcs11-tool login + sign`, 'pkcs11-tool', ['--module', OPENSC_MODULE, '--token-label', CARD_LABEL,
    '--login', '--pin', DEFAULT_PIN, '--sign', '--id', '01', '--mechanism', 'ECDSA-SHA256', '--signature-format', 'openssl',
    '--input-file', '/root/data.bin', '--output-file', '/root/data.sig']);
  const verified = await inside(t, c, `${what}: openssl verify`, 'openssl', ['dgst', '-sha256', '-verify', '/root/9a.pub.pem',
    '-signature', '/root/data.sig', '/root/data.bin']);
  t.regex(verified.stdout, /Verified OK/);
}

async function mainPid(c: BootedContainer, unit: string): Promise<number> {
  return Number((await c.run('systemctl', ['show', '--property=MainPID', '--value', unit])).stdout.trim());
}

/** `systemd-analyze security` of a unit: its table (rows that are not ✓) and the overall exposure. */
async function securityReport(t: ExecutionContext, c: BootedContainer, unit: string): Promise<number> {
  const report = await inside(t, c, `systemd-analyze security ${unit}`, 'systemd-analyze', ['security', '--no-pager', unit]);
  const exposure = /Overall exposure level for \S+: ([\d.]+)/.exec(report.stdout);
  t.log(`systemd-analyze security ${unit} (rows not ✓):\n${report.stdout.split('\n').filter((line) => line.trim() && !line.startsWith('✓')).join('\n')}`);
  if (!exposure?.[1]) throw new Error(`no overall exposure in systemd-analyze security ${unit}`);
  return Number(exposure[1]);
}

serviceTest(`install.sh, tpmvscd and pcscd under a real systemd in a container${unsupported ? ` (skipped: ${unsupported})` : ''}`, async (t) => {
  t.timeout(400_000);
  const phases: string[] = [];
  let mark = Date.now();
  const phase = (name: string): void => {
    phases.push(`${name} ${((Date.now() - mark) / 1000).toFixed(1)} s`);
    mark = Date.now();
  };
  // The checkout (install.sh, dist/, node_modules) wherever it is, e.g. a CI clone under /tmp.
  const c = await bootContainer({ bindReadOnly: [REPO] });
  t.teardown(() => c.stop());
  phase('boot');

  await proveHardeningEnforced(t, c);
  await startFromAFreshMachine(t, c);
  phase('hardening proof');

  // No TPM: install.sh must say the daemon does not run, and why.
  const install = ['bash', join(REPO, 'scripts', 'install.sh')] as const;
  const noTpm = await c.run(install[0], [install[1]], { timeoutMs: 240_000 });
  t.not(noTpm.code, 0, `install.sh without a TPM claimed success:\n${noTpm.stdout}`);
  t.regex(noTpm.stderr, /install\.sh: tpmvscd is not running \(inactive\/dead\): .*ConditionPathExists=\/dev\/tpmrm0/);
  phase('install.sh without a TPM');

  // A software TPM in the TPM's place, exactly as docs/INSTALL.md says.
  await c.writeFile(`/etc/systemd/system/${SWTPM_UNIT}`, [
    '[Unit]', 'Description=Software TPM for the tpmvsc container test', '[Service]', 'StateDirectory=tpmvsc-test-swtpm',
    'ExecStart=/usr/bin/swtpm socket --tpm2 --tpmstate dir=/var/lib/tpmvsc-test-swtpm --flags not-need-init,startup-clear '
    + '--server type=tcp,bindaddr=127.0.0.1,port=2321 --ctrl type=tcp,bindaddr=127.0.0.1,port=2322', '',
  ].join('\n'));
  await c.writeFile('/etc/systemd/system/tpmvscd.service.d/override.conf', await installGuideSoftwareTpmDropIn());
  await inside(t, c, 'systemctl daemon-reload', 'systemctl', ['daemon-reload']);
  await inside(t, c, 'starting swtpm', 'systemctl', ['start', SWTPM_UNIT]);
  const installed = await inside(t, c, 'install.sh with the software TPM', install[0], [install[1]], 240_000);
  t.regex(installed.stdout, /install\.sh: tpmvscd is running/);
  phase('install.sh');

  const created = await inside(t, c, 'tpmvscmgr create', 'tpmvscmgr', ['create', '/name', 'container', '/AdminKey', 'DEFAULT',
    '/PIN', 'DEFAULT', '/PUK', 'DEFAULT', '/generate']);
  t.regex(created.stdout, /ROOT\\SMARTCARDREADER\\0000/);
  const ykman = (args: string[]): Promise<CommandResult> => inside(t, c, `ykman piv ${args[0]} ${args[1]}`, 'ykman', ['--reader', READER, 'piv', ...args], 90_000);
  await ykman(['keys', 'generate', '-m', DEFAULT_MANAGEMENT_KEY, '-a', 'ECCP256', '9a', '/root/9a.pub.pem']);
  await ykman(['certificates', 'generate', '-m', DEFAULT_MANAGEMENT_KEY, '-P', DEFAULT_PIN, '-s', `CN=${CARD_LABEL}`, '9a', '/root/9a.pub.pem']);
  await loginAndSign(t, c, 'new card');
  phase('card created, key + certificate, login + sign');

  await inside(t, c, 'systemctl restart tpmvscd', 'systemctl', ['restart', 'tpmvscd.service']);
  const daemonBack = await waitForCard(c, 'systemctl restart tpmvscd');
  await inside(t, c, 'systemctl restart pcscd', 'systemctl', ['restart', 'pcscd.service']);
  const pcscdBack = await waitForCard(c, 'systemctl restart pcscd');
  // The last PC/SC client until the one-shot client below: the idle time starts now.
  const idleSince = Date.now();
  const pcscdPid = await mainPid(c, 'pcscd.service');
  phase(`restarts (card back ${daemonBack} ms after tpmvscd's, ${pcscdBack} ms after pcscd's)`);

  // The idle wait overlaps what needs no PC/SC client.
  // As root, whom the vpcd guard lets through: what stops a connection is pcscd's own filter.
  const readerPort = `exec 3<>/dev/tcp/%s/${FREE_READER_PORT}`;
  const asRoot = ['timeout', '3', 'bash', '-c'];
  const fromOutside = await c.run(asRoot[0]!, [...asRoot.slice(1), readerPort.replace('%s', OUTSIDE_ADDRESS)]);
  t.not(fromOutside.code, 0, `a reader port of pcscd answered on ${OUTSIDE_ADDRESS}: the pcscd drop-in's IPAddressDeny= is not applied`);
  const fromLoopback = await c.run(asRoot[0]!, [...asRoot.slice(1), readerPort.replace('%s', '127.0.0.1')]);
  t.is(fromLoopback.code, 0, `pcscd's reader port ${FREE_READER_PORT} does not answer root on 127.0.0.1: ${lastLine(fromLoopback)}`);
  // Another local user is refused by the guard the unit's ExecStartPre installed.
  const asNobody = ['--reuid=nobody', '--regid=nogroup', '--clear-groups', 'timeout', '3', 'bash', '-c'];
  const nobodyOnLoopback = await c.run('setpriv', [...asNobody, readerPort.replace('%s', '127.0.0.1')]);
  t.regex(nobodyOnLoopback.stderr, /Connection refused/, `uid nobody reached reader port ${FREE_READER_PORT}: the vpcd guard is not in place (${lastLine(nobodyOnLoopback)})`);
  const daemonExposure = await securityReport(t, c, 'tpmvscd.service');
  const pcscdExposure = await securityReport(t, c, 'pcscd.service');
  t.log(`systemd-analyze security: tpmvscd.service ${daemonExposure}, pcscd.service with our drop-in ${pcscdExposure}`);
  t.true(daemonExposure <= 1.7, `tpmvscd.service's exposure rose to ${daemonExposure} (1.7 when written)`);
  t.true(pcscdExposure <= 1.8, `pcscd.service's exposure with our drop-in rose to ${pcscdExposure} (1.8 when written, 0.1 of it CAP_NET_BIND_SERVICE for the reader ports below 1024; the drop-in before issue #16 gave 8.1)`);
  phase('loopback-only check and systemd-analyze security');

  await new Promise((resolve) => setTimeout(resolve, Math.max(0, idleSince + IDLE_SECONDS * 1000 - Date.now())));
  const pcscdPidAfter = await mainPid(c, 'pcscd.service');
  if (pcscdPidAfter !== pcscdPid) throw new Error(`pcscd exited during ${IDLE_SECONDS} s without clients (pid ${pcscdPid} then ${pcscdPidAfter}): the cards left their readers`);
  t.is(await tokenLabel(c), CARD_LABEL, `a one-shot client found no card after ${IDLE_SECONDS} s without clients`);
  await loginAndSign(t, c, `after ${IDLE_SECONDS} s idle`);
  phase(`idle wait (${IDLE_SECONDS} s) and one-shot client`);
  t.log(`phases: ${phases.join(', ')}`);
});
