/**
 * Where `npm start` (scripts/start.ts) keeps its demo: swtpm state, card state, the daemon's
 * control socket. tpmvscmgr reads it too, to say which daemon a socket belongs to.
 *
 *   $TPMVSC_START_DIR, else $XDG_DATA_HOME/tpmvsc, else ~/.local/share/tpmvsc
 */
import { homedir } from 'node:os';
import { join } from 'node:path';

export function startDirectory(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TPMVSC_START_DIR) return env.TPMVSC_START_DIR;
  const base = env.XDG_DATA_HOME || join(env.HOME || homedir(), '.local', 'share');
  return join(base, 'tpmvsc');
}

/** The control socket of the daemon `npm start` runs. */
export function startSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(startDirectory(env), 'control.sock');
}

/** Readers of the pcscd `npm start` starts itself (TPMVSC_READERS changes it). */
export const START_READERS = 2;
