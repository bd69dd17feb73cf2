/**
 * Exit code 4's message: which socket was tried and how the daemon behind it is started.
 * Two daemons are common: the system one (systemd, /run/tpmvsc/control.sock) and the demo
 * one of `npm start` (common/start_directory.ts); anything else was named by /socket or
 * TPMVSC_SOCKET.
 */
import { existsSync } from 'node:fs';
import { DEFAULT_CONTROL_SOCKET } from '../common/control_protocol.js';
import { TpmvscError } from '../common/errors.js';
import { startSocketPath } from '../common/start_directory.js';

export function daemonNotRunning(socketPath: string, options: { cause?: unknown; env?: NodeJS.ProcessEnv } = {}): TpmvscError {
  const startSocket = startSocketPath(options.env);
  let detail: string;
  if (socketPath === DEFAULT_CONTROL_SOCKET) {
    detail = `nothing listens on ${socketPath}, the system daemon's socket: start it with systemctl start tpmvscd (installed by scripts/install.sh)`;
    if (existsSync(startSocket)) detail += `; npm start's daemon listens on ${startSocket}: TPMVSC_SOCKET=${startSocket} tpmvscmgr ...`;
  } else if (socketPath === startSocket) {
    detail = `nothing listens on ${socketPath}, the socket of npm start's daemon: run npm start in the tpmvsc repository and leave it running`;
  } else {
    detail =
      `nothing listens on ${socketPath} (named by /socket or TPMVSC_SOCKET): start tpmvscd --socket ${socketPath}, ` +
      `or name a running daemon's socket (systemd: ${DEFAULT_CONTROL_SOCKET}, npm start: ${startSocket})`;
  }
  return new TpmvscError('DAEMON_NOT_RUNNING', detail, options.cause === undefined ? {} : { cause: options.cause });
}
