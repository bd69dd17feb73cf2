/**
 * tpmvscd's control server: the Unix socket tpmvscmgr talks to (protocol in
 * common/control_protocol.ts: one request line, zero or more progress lines, one final line).
 *
 * Access: the socket file is 0660 owned by the daemon's user and the admin group (`tpmvsc`) when
 * that group exists, and every connection is checked again with SO_PEERCRED: only root, the
 * daemon's own user and members of the admin group are served (NOT_PERMITTED otherwise), so a
 * too-open file mode does not open the door.
 *
 * Limits (control_connection_limits.ts): a connection is counted against its uid and against
 * the total the moment it is accepted, and refused over either limit; reading starts only once
 * the peer is known to be allowed (so an outsider's bytes are never buffered); the request line
 * must be complete, within MAX_REQUEST_LINE_BYTES, before the request timeout; after the final
 * line the connection is closed, forcibly if the client does not close its end soon.
 *
 * Requests run concurrently, but create and destroy run one at a time. A client that goes away
 * during create aborts the create's signal (the card manager rolls back).
 * Diagnostics (never secrets) are published on the `tpmvsc:control` diagnostics channel.
 */
import { channel } from 'node:diagnostics_channel';
import { chmod, chown, lstat, mkdir, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { MAX_REQUEST_LINE_BYTES, PROGRESS, type ControlRequest, type ServerLine } from '../common/control_protocol.js';
import { TpmvscError } from '../common/errors.js';
import type { CardManagerApi } from './card_manager_api.js';
import { ConnectionLimiter, DEFAULT_CONTROL_LIMITS, type ControlLimits, type LimitScope } from './control_connection_limits.js';
import { ClientGone, readRequestLine } from './control_request_line.js';
import { validateControlRequest } from './control_request_validation.js';
import { groupId, isAdministrator, peerCredentials, type PeerCredentials } from './peer_credentials.js';

export const CONTROL_CHANNEL = 'tpmvsc:control';
const diagnostics = channel(CONTROL_CHANNEL);

/** What the server publishes on the diagnostics channel. */
export type ControlEvent =
  | { event: 'listening'; socketPath: string; adminGroup: string; adminGid: number | undefined }
  | { event: 'refused'; pid: number; uid: number }
  | { event: 'limit-reached'; scope: LimitScope; limit: number; pid: number; uid: number }
  | { event: 'request'; op: ControlRequest['op']; pid: number; uid: number }
  | { event: 'answered'; op: ControlRequest['op'] | undefined; ok: boolean; code?: string }
  | { event: 'client-gone'; op: 'create' }
  | { event: 'internal-error'; op: ControlRequest['op'] | undefined; name: string; message: string; stack?: string | undefined };

function publish(event: ControlEvent): void {
  if (diagnostics.hasSubscribers) diagnostics.publish(event);
}

/** Each limit (control_connection_limits.ts) defaults to DEFAULT_CONTROL_LIMITS. */
export interface ControlServerOptions extends Partial<ControlLimits> {
  /** Where to listen, e.g. /run/tpmvsc/control.sock. */
  socketPath: string;
  /** The card logic requests are dispatched to. */
  cards: CardManagerApi;
  /** Group whose members may manage cards, default `tpmvsc`. */
  adminGroup?: string;
}

const SOCKET_MODE = 0o660;
/** After its final line, a client has this long to close its end before the server closes it. */
const CLOSE_GRACE_MS = 2000;
/**
 * Refused connections kept open for CLOSE_GRACE_MS so the client reads the refusal rather than a
 * reset; past this many at once, further refusals are closed right away.
 */
const MAX_LINGERING_REFUSALS = 32;

export class ControlServer {
  readonly socketPath: string;
  private readonly cards: CardManagerApi;
  private readonly adminGroup: string;
  private readonly requestTimeoutMs: number;
  private readonly limiter: ConnectionLimiter;
  private server: Server | undefined;
  private adminGid: number | undefined;
  /** Every open socket, admitted or being refused (close() ends them all). */
  private readonly connections = new Set<Socket>();
  private lingeringRefusals = 0;
  /** Tail of the create/destroy queue. */
  private exclusiveTail: Promise<void> = Promise.resolve();

  constructor(options: ControlServerOptions) {
    this.socketPath = options.socketPath;
    this.cards = options.cards;
    this.adminGroup = options.adminGroup ?? 'tpmvsc';
    this.requestTimeoutMs = options.requestTimeoutMs ?? DEFAULT_CONTROL_LIMITS.requestTimeoutMs;
    this.limiter = new ConnectionLimiter({
      maxConnections: options.maxConnections ?? DEFAULT_CONTROL_LIMITS.maxConnections,
      maxConnectionsPerUser: options.maxConnectionsPerUser ?? DEFAULT_CONTROL_LIMITS.maxConnectionsPerUser,
    });
  }

  /** Creates the socket (replacing a stale one) with its mode and group, and starts serving. */
  async listen(): Promise<void> {
    if (this.server) throw new Error('the control server is already listening');
    // getgrnam may consult NSS: once here, never per request.
    this.adminGid = groupId(this.adminGroup);
    await this.prepareDirectory();
    await this.removeStaleSocket();
    // Paused: nothing is read from a connection before its peer is known to be allowed.
    const server = createServer({ pauseOnConnect: true }, (socket) => this.onConnection(socket));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // The socket file is created inside listen(): with umask 0177 it is born 0600 and only
      // then widened to 0660 below, never briefly open to everyone.
      const previousUmask = process.umask(0o177);
      try {
        server.listen(this.socketPath, () => {
          server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(previousUmask);
      }
    });
    this.server = server;
    if (this.adminGid !== undefined) await chown(this.socketPath, process.getuid?.() ?? 0, this.adminGid);
    await chmod(this.socketPath, SOCKET_MODE);
    publish({ event: 'listening', socketPath: this.socketPath, adminGroup: this.adminGroup, adminGid: this.adminGid });
  }

  /** Stops listening, drops open connections (aborting creates) and removes the socket file. */
  async close(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    for (const socket of this.connections) socket.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(this.socketPath, { force: true });
  }

  /** The parent directory: created 0750 with the admin group, or 0755 when there is no such group. */
  private async prepareDirectory(): Promise<void> {
    const directory = dirname(this.socketPath);
    try {
      await lstat(directory);
      return; // systemd's RuntimeDirectory= (or the admin) owns its mode
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
    }
    await mkdir(directory, { recursive: true, mode: 0o700 });
    if (this.adminGid !== undefined) {
      await chown(directory, process.getuid?.() ?? 0, this.adminGid);
      await chmod(directory, 0o750);
    } else {
      await chmod(directory, 0o755);
    }
  }

  /** Removes a socket file nobody listens on; refuses to touch a live socket or a non-socket file. */
  private async removeStaleSocket(): Promise<void> {
    let stats;
    try {
      stats = await lstat(this.socketPath);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    if (!stats.isSocket()) throw new Error(`${this.socketPath} exists and is not a socket; remove it by hand`);
    const live = await new Promise<boolean>((resolve) => {
      const probe = createConnection({ path: this.socketPath });
      probe.once('connect', () => {
        probe.destroy();
        resolve(true);
      });
      probe.once('error', () => resolve(false));
    });
    if (live) throw new Error(`another daemon already listens on ${this.socketPath}`);
    await rm(this.socketPath, { force: true });
  }

  private onConnection(socket: Socket): void {
    this.connections.add(socket);
    socket.once('close', () => this.connections.delete(socket));
    socket.on('error', () => socket.destroy());
    const connectedAt = Date.now();
    // Read the credentials now, while the peer certainly exists.
    let peer: PeerCredentials | undefined;
    try {
      peer = peerCredentials(socket);
    } catch {
      peer = undefined;
    }
    if (!peer) return this.refuse(socket, new TpmvscError('NOT_PERMITTED'));
    const admission = this.limiter.admit(peer.uid);
    if (!admission.admitted) {
      const { scope, limit } = admission;
      if (admission.firstRefusal) publish({ event: 'limit-reached', scope, limit, pid: peer.pid, uid: peer.uid });
      return this.refuse(socket, tooManyConnections(scope, limit));
    }
    socket.once('close', admission.release);
    void this.serve(socket, peer, connectedAt);
  }

  private async serve(socket: Socket, peer: PeerCredentials, connectedAt: number): Promise<void> {
    let op: ControlRequest['op'] | undefined;
    try {
      if (!(await isAdministrator(peer, this.adminGid, process.getuid?.() ?? 0))) {
        publish({ event: 'refused', pid: peer.pid, uid: peer.uid });
        throw new TpmvscError('NOT_PERMITTED');
      }
      const line = await readRequestLine(socket, {
        maxBytes: MAX_REQUEST_LINE_BYTES,
        timeoutMs: this.requestTimeoutMs,
        connectedAt,
      });
      // Read on (and discard) so a client that goes away during a create is noticed ('close').
      socket.resume();
      let parsed: unknown;
      try {
        parsed = JSON.parse(line);
      } catch {
        throw new TpmvscError('BAD_REQUEST', 'the request is not a JSON object on one line');
      }
      const request = validateControlRequest(parsed);
      op = request.op;
      publish({ event: 'request', op, pid: peer.pid, uid: peer.uid });
      const result = await this.dispatch(request, socket);
      this.send(socket, { ok: true, result });
      publish({ event: 'answered', op, ok: true });
    } catch (error) {
      if (error instanceof ClientGone) return;
      const failure = this.toClientError(error, op);
      this.send(socket, { ok: false, error: { code: failure.code, message: failure.message } });
      publish({ event: 'answered', op, ok: false, code: failure.code });
    } finally {
      this.closeAfterAnswer(socket);
    }
  }

  /** Answers a connection that is not served, without reading anything it sent. */
  private refuse(socket: Socket, error: TpmvscError): void {
    this.send(socket, { ok: false, error: { code: error.code, message: error.message } });
    if (this.lingeringRefusals >= MAX_LINGERING_REFUSALS) {
      socket.destroy();
      return;
    }
    this.lingeringRefusals += 1;
    socket.once('close', () => (this.lingeringRefusals -= 1));
    this.closeAfterAnswer(socket);
  }

  /**
   * Ends the connection after the final line. Its input is discarded, not kept, until the client
   * closes its end; one that does not within CLOSE_GRACE_MS (e.g. never reads) is cut off.
   */
  private closeAfterAnswer(socket: Socket): void {
    if (socket.destroyed) return;
    socket.end();
    socket.resume();
    const timer = setTimeout(() => socket.destroy(), CLOSE_GRACE_MS);
    socket.once('close', () => clearTimeout(timer));
  }

  private toClientError(error: unknown, op: ControlRequest['op'] | undefined): TpmvscError {
    if (error instanceof TpmvscError) return error;
    const detail = error instanceof Error ? error : new Error(String(error));
    publish({ event: 'internal-error', op, name: detail.name, message: detail.message, stack: detail.stack });
    return new TpmvscError('INTERNAL', 'see the daemon log');
  }

  private async dispatch(request: ControlRequest, socket: Socket): Promise<unknown> {
    switch (request.op) {
      case 'create':
        return this.exclusive(() => this.create(request, socket));
      case 'destroy':
        await this.exclusive(() => this.cards.destroy(request.instance));
        return { instance: request.instance };
      case 'list':
        return this.cards.list();
      case 'status':
        return request.instance === undefined ? this.cards.status() : this.cards.status(request.instance);
    }
  }

  private async create(request: Extract<ControlRequest, { op: 'create' }>, socket: Socket) {
    const abort = new AbortController();
    const onClose = (): void => {
      publish({ event: 'client-gone', op: 'create' });
      abort.abort(new ClientGone());
    };
    if (socket.destroyed) throw new ClientGone();
    socket.once('close', onClose);
    // EOF from the client counts as gone: clients keep the connection open until the final line.
    try {
      const progress = (line: string): void => {
        if (!abort.signal.aborted) this.send(socket, { progress: line });
      };
      const result = await this.cards.create(request, progress, abort.signal);
      if (abort.signal.aborted) throw new ClientGone();
      return result;
    } catch (error) {
      if (abort.signal.aborted) throw new ClientGone();
      throw error;
    } finally {
      socket.off('close', onClose);
    }
  }

  /** Runs create and destroy one at a time, in arrival order. */
  private exclusive<T>(task: () => Promise<T>): Promise<T> {
    const run = this.exclusiveTail.then(task);
    this.exclusiveTail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private send(socket: Socket, line: ServerLine): void {
    if (!socket.destroyed && socket.writable) socket.write(`${JSON.stringify(line)}\n`);
  }
}

/** The refusal of a connection over a limit, naming the setting that raises it. */
function tooManyConnections(scope: LimitScope, limit: number): TpmvscError {
  return new TpmvscError(
    'TOO_MANY_CONNECTIONS',
    scope === 'user'
      ? `${limit} from this user (--max-control-connections-per-user); try again when they have finished`
      : `${limit} from all users (--max-control-connections); try again when they have finished`,
  );
}

/** Re-exported so card managers and tests share the wording. */
export { PROGRESS };
