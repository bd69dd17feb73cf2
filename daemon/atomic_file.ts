/**
 * Crash-safe file replacement: a reader of `path` sees the old content or the new
 * content, never a mix, whatever moment the process dies at.
 *
 *   write  path.tmp-<random>   (mode 0600, O_EXCL)
 *   fsync  the temp file       (content durable)
 *   rename temp -> path        (atomic switch)
 *   fsync  the directory       (the rename itself durable)
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm, mkdir, chmod } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';

export const PRIVATE_FILE_MODE = 0o600;
export const PRIVATE_DIR_MODE = 0o700;

export async function writeFileAtomic(path: string, data: string | Uint8Array, mode: number = PRIVATE_FILE_MODE): Promise<void> {
  const directory = dirname(path);
  const temporary = join(directory, `.${basename(path)}.tmp-${randomBytes(6).toString('hex')}`);
  // 'wx' is O_CREAT|O_EXCL: never an existing file, never through a symbolic link.
  const handle = await open(temporary, 'wx', mode);
  try {
    await handle.writeFile(data);
    if (mode !== PRIVATE_FILE_MODE) await handle.chmod(mode); // the umask may have narrowed it
    await handle.sync();
  } catch (error) {
    await handle.close();
    await rm(temporary, { force: true });
    throw error;
  }
  await handle.close();
  try {
    await rename(temporary, path);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  await syncDirectory(directory);
}

/** Makes a directory's entries (created, renamed or removed files) durable. */
export async function syncDirectory(directory: string): Promise<void> {
  const handle = await open(directory, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Creates a private directory (0700) and its parents; tightens the mode if it exists. */
export async function ensurePrivateDirectory(path: string): Promise<void> {
  await mkdir(path, { recursive: true, mode: PRIVATE_DIR_MODE });
  await chmod(path, PRIVATE_DIR_MODE);
}
