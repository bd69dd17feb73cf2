/**
 * Reader registration: the pcscd configuration that creates the pool of vpcd readers
 * our cards sit in (`tpmvscd register-readers`).
 *
 * pcscd reads every file of /etc/reader.conf.d/ (or the directory given with -c). One
 * block per driver instance:
 *
 *   FRIENDLYNAME "TPM Virtual Smart Card 0"
 *   DEVICENAME   /dev/null:470
 *   LIBPATH      /usr/lib/pcsc/drivers/serial/libifdvpcd.so
 *   CHANNELID    0x1D6
 *
 * Facts of the vpcd driver (vsmartcard 3.3) and pcscd 1.9.9 that shape this file:
 * - One block serves 2 slots (a build-time constant of the driver): slot 0 listens on
 *   PORT, slot 1 on PORT+1, so block b uses basePort + 2b and reader slot n uses
 *   basePort + n.
 * - A second block with the SAME LIBPATH aliases the first (pcscd loads the library once
 *   and the driver keeps its state in globals): every block after the first gets its
 *   own copy of libifdvpcd.so in driverDir.
 * - Blocks sharing a FRIENDLYNAME get duplicate reader names, so block b is named
 *   "<friendlyName> <b>" and pcscd shows "<friendlyName> <b> 00 0<slot % 2>".
 * - pcscd accepts at most 16 readers; Windows allows 10 virtual smart cards.
 *
 * Our ports start at DEFAULT_BASE_PORT, below 1024, where only root (pcscd) may listen (the
 * vpcd guard, vpcd_guard.ts, keeps everyone else from connecting). The stock
 * /etc/reader.conf.d/vpcd ("Virtual PCD" on port 35963, vpcd's default) would give a second,
 * unregistered pair of readers, or fight a pool moved to 35963 for its port: registerReaders()
 * therefore neutralises a stock
 * `vpcd` file found in confDir by rewriting it as a comment that points here. The file is
 * a dpkg conffile: dpkg keeps a locally modified conffile on upgrades (it asks, or keeps
 * ours with --force-confold), and never silently re-enables it.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { access, chmod, copyFile, mkdir, open, readFile, readdir, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

import { TpmvscError } from '../common/errors.js';

/** vpcd's default port, 0x8C7B (the vsmartcard-vpcd package's own "Virtual PCD" pair). */
export const VPCD_DEFAULT_PORT = 35963;
/**
 * Reader slot 0 of a tpmvsc pool; slot n is 470 + n, at most 485 (16 readers). Below 1024: only
 * root may listen there (unless net.ipv4.ip_unprivileged_port_start says otherwise). Below 512:
 * clear of the privileged ports bindresvport(), rresvport() and the kernel's NFS client pick
 * (512/600/665..1023). Unused in Debian's /etc/services (netbase), which lists nothing from 466 to 486.
 */
export const DEFAULT_BASE_PORT = 470;
/** Windows' limit of TPM virtual smart cards. */
export const DEFAULT_READER_COUNT = 10;
/** pcscd's limit of readers (PCSCLITE_MAX_READERS_CONTEXTS). */
export const MAX_READER_COUNT = 16;
/** Slots per vpcd driver instance (one reader.conf block). */
export const SLOTS_PER_BLOCK = 2;

/** vpcd opens readers in blocks: a pool of `readers` takes this many (an odd pool fills its last block). */
export function readersInWholeBlocks(readers: number): number {
  return Math.ceil(readers / SLOTS_PER_BLOCK) * SLOTS_PER_BLOCK;
}
export const DEFAULT_FRIENDLY_NAME = 'TPM Virtual Smart Card';
/** Where Debian's vsmartcard-vpcd installs the driver when dpkg cannot tell. */
export const STOCK_DRIVER_PATH = '/usr/lib/pcsc/drivers/serial/libifdvpcd.so';
/** Name of our file in reader.conf.d. */
export const CONFIG_FILE_NAME = 'tpmvsc';
/** Name of the stock file in reader.conf.d that registerReaders() neutralises. */
export const STOCK_CONFIG_FILE_NAME = 'vpcd';
/** First line of every file we write: how we recognise our own files. */
const MARKER = '# Written by tpmvscd register-readers';

/** Longest friendly name accepted: pcscd's reader names are at most 127 bytes. */
const MAX_FRIENDLY_NAME_LENGTH = 100;

export interface RegisterReadersOptions {
  /** reader.conf.d directory pcscd reads, e.g. /etc/reader.conf.d. */
  confDir: string;
  /** Directory for the per-block copies of libifdvpcd.so, e.g. /var/lib/tpmvsc/drivers. */
  driverDir: string;
  /** Readers in the pool, 1..16 (rounded up to even: a block has 2 slots). Default 10. */
  readers?: number;
  /** Port of reader slot 0. Default DEFAULT_BASE_PORT (470). */
  basePort?: number;
  /** Friendly name prefix of the readers. Default "TPM Virtual Smart Card". */
  friendlyName?: string;
  /** Default 'numbered'; 'plain' allows one block (2 readers). */
  naming?: ReaderNaming;
  /** The stock driver. Default: found with dpkg, else STOCK_DRIVER_PATH. */
  driverPath?: string;
}

/** One reader of the pool as pcscd shows it. */
export interface RegisteredReader {
  slot: number;
  port: number;
  name: string;
}

export interface RegisteredReaders {
  /** The configuration file written. */
  configFile: string;
  /** The LIBPATH of every block, block 0 first (block 0 uses the stock driver). */
  driverPaths: string[];
  readers: RegisteredReader[];
  /** The stock vpcd file rewritten as a comment, or null when there was none to disable. */
  disabledStockConfig: string | null;
}

function badRequest(detail: string): TpmvscError {
  return new TpmvscError('BAD_REQUEST', detail);
}

function checkSlot(slot: number): void {
  if (!Number.isInteger(slot) || slot < 0 || slot >= MAX_READER_COUNT) {
    throw badRequest(`reader slot must be an integer 0..${MAX_READER_COUNT - 1}, not ${String(slot)}`);
  }
}

function checkFriendlyName(friendlyName: string): void {
  // Quoted in the config file: no quote, no backslash, no newline, nothing pcscd's lexer trips on.
  if (
    friendlyName.length === 0 ||
    friendlyName.length > MAX_FRIENDLY_NAME_LENGTH ||
    !/^[\x20-\x7e]+$/.test(friendlyName) ||
    /["\\]/.test(friendlyName) ||
    friendlyName !== friendlyName.trim()
  ) {
    throw badRequest(
      `reader friendly name must be 1..${MAX_FRIENDLY_NAME_LENGTH} printable ASCII characters, ` +
        'without quotes, backslashes or surrounding spaces',
    );
  }
}

function checkBasePort(basePort: number, readers: number): void {
  if (!Number.isInteger(basePort) || basePort < 1 || basePort + readers - 1 > 65535) {
    throw badRequest(`base port ${String(basePort)} leaves no room for ${readers} readers`);
  }
}

/** The TCP port of reader slot n: basePort + n. */
export function portOf(slot: number, basePort: number = DEFAULT_BASE_PORT): number {
  checkSlot(slot);
  checkBasePort(basePort, slot + 1);
  return basePort + slot;
}

/**
 * How pcscd's FRIENDLYNAMEs tell blocks apart: 'numbered' (ours, "<name> <block>") or 'plain'
 * (the name alone: one block only, e.g. the vsmartcard-vpcd package's own "Virtual PCD" pair,
 * which pcscd shows as "Virtual PCD 00 00" and "Virtual PCD 00 01").
 */
export type ReaderNaming = 'numbered' | 'plain';

/** FRIENDLYNAME of block b (slots 2b and 2b+1). */
export function blockFriendlyName(block: number, friendlyName: string = DEFAULT_FRIENDLY_NAME, naming: ReaderNaming = 'numbered'): string {
  if (naming === 'numbered') return `${friendlyName} ${block}`;
  if (block !== 0) throw badRequest('plain reader names have one block of two readers: slots 0 and 1 only');
  return friendlyName;
}

/**
 * The exact PC/SC reader name pcscd 1.9.9 shows for slot n: "<FRIENDLYNAME> 00 <slot in
 * block, 2 hex digits>" (the middle 00 is pcscd's instance number of that friendly name).
 */
export function readerName(slot: number, friendlyName: string = DEFAULT_FRIENDLY_NAME, naming: ReaderNaming = 'numbered'): string {
  checkSlot(slot);
  checkFriendlyName(friendlyName);
  const block = Math.floor(slot / SLOTS_PER_BLOCK);
  const slotInBlock = slot % SLOTS_PER_BLOCK;
  return `${blockFriendlyName(block, friendlyName, naming)} 00 ${slotInBlock.toString(16).toUpperCase().padStart(2, '0')}`;
}

/** The path of the stock vpcd driver, from `dpkg -L vsmartcard-vpcd` when available. */
export async function findStockDriver(): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)('dpkg', ['-L', 'vsmartcard-vpcd'], { timeout: 10_000 });
    const found = stdout.split('\n').find((line) => line.endsWith('/libifdvpcd.so'));
    if (found) return found;
  } catch {
    // Not a dpkg system, or the package is not installed: fall back to Debian's path.
  }
  return STOCK_DRIVER_PATH;
}

/** Writes a file atomically (temp file in the same directory, fsync, rename). */
async function writeFileAtomic(file: string, content: string | Buffer, mode: number): Promise<void> {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const handle = await open(temp, 'wx', mode);
    try {
      await handle.writeFile(content);
      await handle.chmod(mode); // the umask may have narrowed `mode`
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, file);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/** Copies the driver atomically, so a running pcscd keeps its mapped copy intact. */
async function copyDriverAtomic(source: string, target: string): Promise<void> {
  const temp = path.join(path.dirname(target), `.${path.basename(target)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    await copyFile(source, temp, fsConstants.COPYFILE_EXCL);
    await chmod(temp, 0o644);
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}

/** File name of the driver copy of block b (b >= 1). */
export function driverCopyName(block: number): string {
  return `libifdvpcd-tpmvsc-${block}.so`;
}

interface ConfigBlock {
  friendlyName: string;
  port: number;
  libPath: string;
}

/** The text of our reader.conf.d file. */
export function renderReaderConfig(blocks: readonly ConfigBlock[]): string {
  const lines = [
    MARKER,
    '# pcscd readers for tpmvsc virtual smart cards: one vpcd driver instance per block of',
    '# two slots, slot 0 on the DEVICENAME port and slot 1 on the next one. Each block needs',
    '# its own friendly name and its own copy of the driver. Regenerate, do not edit.',
  ];
  for (const block of blocks) {
    if (/["\\\n]/.test(block.friendlyName) || /\s/.test(block.libPath)) {
      throw badRequest('friendly name or driver path cannot be written to reader.conf');
    }
    lines.push(
      '',
      `FRIENDLYNAME "${block.friendlyName}"`,
      `DEVICENAME   /dev/null:${block.port}`,
      `LIBPATH      ${block.libPath}`,
      `CHANNELID    0x${block.port.toString(16).toUpperCase()}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

const DISABLED_STOCK_CONFIG = `${MARKER}
# The stock vsmartcard-vpcd reader ("Virtual PCD" on port 35963) is disabled: tpmvsc's
# readers replace it, see ${CONFIG_FILE_NAME} in this directory. To give the port
# back, remove ${CONFIG_FILE_NAME} and reinstall vsmartcard-vpcd's configuration.
`;

/** Rewrites a stock vpcd file in confDir as a comment; returns its path when it did. */
async function disableStockConfig(confDir: string): Promise<string | null> {
  const file = path.join(confDir, STOCK_CONFIG_FILE_NAME);
  let content: string;
  try {
    content = await readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw error;
  }
  if (content.startsWith(MARKER)) return null; // disabled already
  await writeFileAtomic(file, DISABLED_STOCK_CONFIG, 0o644);
  return file;
}

/** Removes driver copies of blocks the pool no longer has (after shrinking it). */
async function removeStaleCopies(driverDir: string, blocks: number): Promise<void> {
  for (const entry of await readdir(driverDir)) {
    const match = /^libifdvpcd-tpmvsc-(\d+)\.so$/.exec(entry);
    if (match && Number(match[1]) >= blocks) await rm(path.join(driverDir, entry), { force: true });
  }
}

/**
 * Writes pcscd's configuration for the reader pool: `<confDir>/tpmvsc` (mode 0644) and a
 * copy of the driver per block after the first in driverDir; disables a stock vpcd file
 * in confDir. pcscd must be restarted to see the change.
 */
export async function registerReaders(options: RegisterReadersOptions): Promise<RegisteredReaders> {
  const requested = options.readers ?? DEFAULT_READER_COUNT;
  if (!Number.isInteger(requested) || requested < 1 || requested > MAX_READER_COUNT) {
    throw badRequest(`readers must be an integer 1..${MAX_READER_COUNT}, not ${String(requested)}`);
  }
  const readers = readersInWholeBlocks(requested);
  const blocks = readers / SLOTS_PER_BLOCK;
  const basePort = options.basePort ?? DEFAULT_BASE_PORT;
  checkBasePort(basePort, readers);
  const friendlyName = options.friendlyName ?? DEFAULT_FRIENDLY_NAME;
  checkFriendlyName(friendlyName);
  const naming = options.naming ?? 'numbered';
  if (naming === 'plain' && blocks > 1) throw badRequest('plain reader names have one block of two readers: use 2 readers or fewer');
  if (!path.isAbsolute(options.confDir) || !path.isAbsolute(options.driverDir)) {
    throw badRequest('confDir and driverDir must be absolute paths');
  }
  const driverPath = options.driverPath ?? (await findStockDriver());
  try {
    await access(driverPath, fsConstants.R_OK);
  } catch {
    throw badRequest(`vpcd driver not found at ${driverPath} (install vsmartcard-vpcd)`);
  }

  await mkdir(options.confDir, { recursive: true, mode: 0o755 });
  await mkdir(options.driverDir, { recursive: true, mode: 0o755 });

  const configBlocks: ConfigBlock[] = [];
  for (let block = 0; block < blocks; block++) {
    let libPath = driverPath;
    if (block > 0) {
      libPath = path.join(options.driverDir, driverCopyName(block));
      await copyDriverAtomic(driverPath, libPath);
    }
    configBlocks.push({
      friendlyName: blockFriendlyName(block, friendlyName, naming),
      port: basePort + block * SLOTS_PER_BLOCK,
      libPath,
    });
  }
  await removeStaleCopies(options.driverDir, blocks);

  const configFile = path.join(options.confDir, CONFIG_FILE_NAME);
  await writeFileAtomic(configFile, renderReaderConfig(configBlocks), 0o644);
  const disabledStockConfig = await disableStockConfig(options.confDir);

  const registered: RegisteredReader[] = [];
  for (let slot = 0; slot < readers; slot++) {
    registered.push({ slot, port: basePort + slot, name: readerName(slot, friendlyName, naming) });
  }
  return { configFile, driverPaths: configBlocks.map((block) => block.libPath), readers: registered, disabledStockConfig };
}
