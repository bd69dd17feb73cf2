/**
 * The TPM 2.0 client: one connection, one command in flight, typed results.
 *
 * Command layout (TCG TPM 2.0 Part 1, 18 Command/Response structure):
 *   tag u16 | commandSize u32 | commandCode u32 | handles u32* | [authSize u32 | authArea*] | parameters
 *   authArea = sessionHandle u32 | nonceCaller TPM2B | sessionAttributes u8 | hmac TPM2B
 * Response layout:
 *   tag u16 | responseSize u32 | responseCode u32 | handles u32* | [parameterSize u32] | parameters | [authArea*]
 *   authArea = nonceTPM TPM2B | sessionAttributes u8 | hmac TPM2B
 */
import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  HANDLE_RANGE, TPM_ALG, TPM_CAP, TPM_CC, TPM_HT, TPM_PT, TPM_RH, TPM_SE, TPM_ST, TPM_SU, TPMA_NV, TPMA_PERMANENT, TPMA_SESSION,
} from './constants.js';
import { RC, TpmError, TpmProtocolError, TpmTransportError, isAuthFail, isRetryable } from './errors.js';
import { EMPTY, Reader, Writer } from './marshal.js';
import { handleName, nvName, objectName } from './names.js';
import { CONTINUE, makeEccSalt, SESSION_SYMMETRIC, Session, trimAuth } from './session.js';
import {
  hashName, hashSize, marshalPublic2b, marshalSensitive2b, nullHashcheckTicket, parseAttest, readContext, readEccPoint2b,
  readNvPublic, readPublic, readSignature, readTicket, writeContext, writeEccPoint2b, writeNvPublic, writePublic, writeScheme,
  writeSensitiveCreate, writeSymDef, writeTicket,
} from './structures.js';
import { srkEccTemplate } from './templates.js';
import type { AuthOptions, PolicySessionRef, TpmOptions } from './tpm_options.js';
import { openTransport, type TpmTransport } from './transport.js';
import type {
  Attest, DictionaryAttackInfo, EccPoint, EccPublic, ExternalPrivateKey, HashAlg, KeyBlob, LoadedObject, NvPublic,
  PermanentAttributes, SavedContext, Scheme, SensitiveCreate, Signature, Ticket, TpmEntity, TpmPublic,
} from './types.js';

/**
 * One authorization slot of a command (one per handle that needs authorization). `ownSession`:
 * a session the library started for this one command (the owner-authorized SRK bootstrap).
 */
type AuthSlot = AuthOptions & { ownSession?: Session };

/** What the executor needs to know about a command. */
interface CommandSpec {
  cc: number;
  name: string;
  /** All handles in the handle area, in order. */
  handles: TpmEntity[];
  /** Authorizations for the first `auths.length` handles. */
  auths: AuthSlot[];
  params: Uint8Array;
  /** Number of handles in the response. */
  responseHandles: number;
  /**
   * The first command parameter is a TPM2B: true = it carries a secret, encrypt it by default;
   * 'possible' = encrypt only when the caller asks (AuthOptions.encrypt).
   */
  encryptCommand?: boolean | 'possible';
  /** The same for the first response parameter. */
  encryptResponse?: boolean | 'possible';
  /** Longer timeout for slow commands (RSA key generation on hardware TPMs). */
  timeoutMs?: number;
}

interface CommandResult {
  handles: number[];
  params: Reader;
}

/** A session chosen for one slot of one command. */
interface SlotSession {
  session: Session | undefined; // undefined = TPM_RS_PW
  authValue: Uint8Array;
  attrs: number;
}

const handleBytes = handleName;

export class Tpm {
  private readonly transport: TpmTransport;
  private readonly timeoutMs: number;
  private readonly maxRetries: number;
  private readonly expectedSrkName: Uint8Array | undefined;
  private readonly flushLeftovers: boolean;
  private readonly ownerAuth: Uint8Array;
  private queue: Promise<unknown> = Promise.resolve();
  private seenConnections = 0;
  private epochCount = 0;
  private srk: LoadedObject | undefined;
  /** Shared salted HMAC sessions, by slot (slot 0 is the common one). */
  private readonly hmacSessions: (Session | undefined)[] = [];
  private readonly policySessions = new Map<number, Session>();
  /** NV names by index (the name changes when TPMA_NV_WRITTEN sets). */
  private readonly nvNames = new Map<number, { nvPublic: NvPublic; name: Uint8Array }>();
  private closed = false;

  private constructor(transport: TpmTransport, options: TpmOptions) {
    this.transport = transport;
    this.timeoutMs = options.timeoutMs ?? transport.defaultTimeoutMs;
    this.maxRetries = options.maxRetries ?? 20;
    this.expectedSrkName = options.expectedSrkName;
    this.flushLeftovers = options.flushLeftovers ?? !transport.hasResourceManager;
    this.ownerAuth = Uint8Array.from(options.ownerAuth ?? []);
  }

  /**
   * Opens the transport, flushes leftovers (swtpm), checks the pinned SRK if one is given
   * (SALT_KEY_MISMATCH otherwise), and returns a ready client.
   */
  static async open(options: TpmOptions = {}): Promise<Tpm> {
    const transport = options.transport ?? openTransport(options.tcti);
    const tpm = new Tpm(transport, options);
    try {
      // with a pinned SRK, check it now so that a wrong TPM is refused before any use
      await tpm.exclusive(async () => (options.expectedSrkName ? tpm.ensureSrk() : undefined));
    } catch (e) {
      await transport.close();
      throw e;
    }
    return tpm;
  }

  /** Flushes the library's own sessions and SRK, closes the transport. */
  async close(): Promise<void> {
    if (this.closed) return;
    await this.exclusive(async () => {
      for (const h of this.ownHandles()) await this.flushQuiet(h);
    }).catch(() => undefined);
    this.closed = true;
    this.ownerAuth.fill(0);
    await this.transport.close();
  }

  /** Increments whenever the connection was re-established: handles from an older epoch are gone. */
  get epoch(): number {
    return this.epochCount;
  }

  /** Human-readable transport description. */
  get description(): string {
    return this.transport.description;
  }

  // --- plumbing ------------------------------------------------------------------------------

  private ownHandles(): number[] {
    const out: number[] = [];
    if (this.srk) out.push(this.srk.handle);
    for (const s of this.hmacSessions) if (s) out.push(s.handle);
    for (const h of this.policySessions.keys()) out.push(h);
    return out;
  }

  /** Runs `fn` with exclusive use of the connection, after a reconnect check. */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.closed) throw new TpmTransportError('CLOSED', 'Tpm closed');
      await this.transport.connect(this.timeoutMs);
      if (this.transport.connectionCount !== this.seenConnections) await this.onNewConnection();
      return fn();
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  private async onNewConnection(): Promise<void> {
    this.seenConnections = this.transport.connectionCount;
    this.epochCount++;
    this.srk = undefined;
    this.hmacSessions.length = 0;
    this.policySessions.clear();
    this.nvNames.clear();
    if (this.flushLeftovers) {
      for (const range of [HANDLE_RANGE.TRANSIENT, HANDLE_RANGE.HMAC_SESSION, HANDLE_RANGE.POLICY_SESSION]) {
        for (const h of await this.handlesIn(range)) await this.flushQuiet(h);
      }
    }
  }

  private async flushQuiet(handle: number): Promise<void> {
    try {
      await this.execute({ cc: TPM_CC.FlushContext, name: 'FlushContext', handles: [], auths: [], params: handleBytes(handle), responseHandles: 0 });
    } catch {
      // already gone
    }
  }

  /** Sends bytes, resubmitting on RETRY / YIELDED / TESTING and starting an uninitialised TPM. */
  private async transmit(command: Buffer, name: string, timeoutMs = this.timeoutMs): Promise<Buffer> {
    let startedUp = false;
    for (let attempt = 0; ; attempt++) {
      const resp = await this.transport.transmit(command, timeoutMs);
      const rc = resp.readUInt32BE(6);
      if (rc === 0) return resp;
      if (isRetryable(rc) && attempt < this.maxRetries) {
        await sleep(Math.min(5 * (attempt + 1), 100));
        continue;
      }
      if (rc === RC.INITIALIZE && !startedUp && command.readUInt32BE(6) !== TPM_CC.Startup) {
        startedUp = true;
        const w = new Writer(12);
        w.u16(TPM_ST.NO_SESSIONS).u32(12).u32(TPM_CC.Startup).u16(TPM_SU.CLEAR);
        await this.transport.transmit(w.finish(), this.timeoutMs);
        continue;
      }
      if (resp.length !== 10) throw new TpmTransportError('MALFORMED', `error response to ${name} has ${resp.length} bytes`);
      return resp;
    }
  }

  /** Session-lost codes after which the command is rebuilt with fresh sessions (once). */
  private static sessionLost(rc: number): boolean {
    if (rc >= 0x918 && rc <= 0x91e) return true; // TPM_RC_REFERENCE_S0..S6
    return (rc & 0x080) !== 0 && (rc & 0x840) === 0x800 && ((rc & 0xbf) === RC.HANDLE || (rc & 0xbf) === RC.VALUE);
  }

  private async execute(spec: CommandSpec): Promise<CommandResult> {
    for (let attempt = 0; ; attempt++) {
      const slots = await this.chooseSessions(spec);
      const { command, encSession } = this.buildCommand(spec, slots);
      const resp = await this.transmit(command, spec.name, spec.timeoutMs);
      const rc = resp.readUInt32BE(6);
      if (rc !== 0) {
        if (attempt === 0 && Tpm.sessionLost(rc) && slots.some((s) => s.session && s.session.type === 'hmac')) {
          // The TPM no longer knows our shared session (flushed by someone else, TPM reset):
          // drop it (flushing is harmless if it is really gone) and rebuild with a fresh one.
          const stale = this.hmacSessions.filter((s): s is Session => s !== undefined);
          this.hmacSessions.length = 0;
          for (const s of stale) await this.flushQuiet(s.handle);
          continue;
        }
        throw new TpmError(rc, spec.name);
      }
      return this.parseResponse(spec, slots, resp, encSession);
    }
  }

  private async chooseSessions(spec: CommandSpec): Promise<SlotSession[]> {
    const slots: SlotSession[] = [];
    const wanted = spec.auths[0]?.encrypt;
    const pick = (v: boolean | 'possible' | undefined): boolean => (v === undefined || v === false ? false : wanted ?? v === true);
    const encryptCommand = pick(spec.encryptCommand);
    const encryptResponse = pick(spec.encryptResponse);
    const secret = encryptCommand || encryptResponse;
    let hmacIndex = 0;
    for (let i = 0; i < spec.auths.length; i++) {
      const a = spec.auths[i]!;
      const authValue = a.auth ?? EMPTY;
      const choice = a.session ?? (trimAuth(authValue).length > 0 || (secret && i === 0) ? 'salted' : 'password');
      if (a.ownSession) slots.push({ session: a.ownSession, authValue, attrs: CONTINUE });
      else if (choice === 'password') slots.push({ session: undefined, authValue, attrs: CONTINUE });
      else if (choice === 'salted') slots.push({ session: await this.hmacSession(hmacIndex++), authValue, attrs: CONTINUE });
      else {
        const s = this.policySessions.get(choice.handle);
        if (!s) throw new TpmProtocolError('BAD_INPUT', `unknown policy session 0x${choice.handle.toString(16)}`);
        slots.push({ session: s, authValue, attrs: CONTINUE });
      }
    }
    if (secret) {
      let enc = slots.find((s) => s.session?.salted);
      if (!enc) {
        enc = { session: await this.hmacSession(hmacIndex++), authValue: EMPTY, attrs: CONTINUE };
        slots.push(enc);
      }
      if (encryptCommand) enc.attrs |= TPMA_SESSION.decrypt;
      if (encryptResponse) enc.attrs |= TPMA_SESSION.encrypt;
    }
    return slots;
  }

  private buildCommand(spec: CommandSpec, slots: SlotSession[]): { command: Buffer; encSession: SlotSession | undefined } {
    const params = Buffer.from(spec.params);
    for (const s of slots) s.session?.rollNonce();
    const encSession = slots.find((s) => s.attrs & (TPMA_SESSION.decrypt | TPMA_SESSION.encrypt));
    if (encSession && encSession.attrs & TPMA_SESSION.decrypt) {
      const size = params.readUInt16BE(0);
      encSession.session!.encryptCommandParam(params.subarray(2, 2 + size), encSession.authValue);
    }
    const w = new Writer(64 + params.length + slots.length * 80);
    w.u16(slots.length ? TPM_ST.SESSIONS : TPM_ST.NO_SESSIONS).u32(0).u32(spec.cc);
    for (const h of spec.handles) w.u32(h.handle);
    if (slots.length) {
      const cpHashes = new Map<number, Buffer>(); // one per session hash algorithm
      const authAt = w.length;
      w.u32(0);
      for (const s of slots) {
        w.u32(s.session ? s.session.handle : TPM_RH.PW);
        if (!s.session) {
          w.tpm2b(EMPTY).u8(s.attrs).tpm2b(s.authValue);
          continue;
        }
        let cpHash = cpHashes.get(s.session.hashAlg);
        if (!cpHash) {
          const h = createHash(hashName(s.session.hashAlg)).update(u32(spec.cc));
          for (const e of spec.handles) h.update(e.name);
          cpHash = h.update(params).digest();
          cpHashes.set(s.session.hashAlg, cpHash);
        }
        const { nonceCaller, hmac } = s.session.authorizeCommand(cpHash, s.authValue, s.attrs);
        w.tpm2b(nonceCaller).u8(s.attrs).tpm2b(hmac);
      }
      w.patchU32(authAt, w.length - authAt - 4);
    }
    w.bytes(params);
    w.patchU32(2, w.length);
    return { command: w.finish(), encSession };
  }

  private parseResponse(spec: CommandSpec, slots: SlotSession[], resp: Buffer, encSession: SlotSession | undefined): CommandResult {
    const r = new Reader(resp, 10);
    const handles: number[] = [];
    for (let i = 0; i < spec.responseHandles; i++) handles.push(r.u32());
    const tag = resp.readUInt16BE(0);
    if (!slots.length) {
      if (tag !== TPM_ST.NO_SESSIONS) throw new TpmProtocolError('BAD_RESPONSE', `${spec.name}: unexpected sessions in response`);
      return { handles, params: new Reader(resp, r.pos) };
    }
    if (tag !== TPM_ST.SESSIONS) throw new TpmProtocolError('BAD_RESPONSE', `${spec.name}: response lacks sessions`);
    const paramSize = r.u32();
    const paramStart = r.pos;
    if (paramStart + paramSize > resp.length) throw new TpmProtocolError('BAD_RESPONSE', `${spec.name}: parameterSize beyond response`);
    const params = resp.subarray(paramStart, paramStart + paramSize);
    r.pos = paramStart + paramSize;
    const rpHashes = new Map<number, Buffer>(); // one per session hash algorithm
    for (const s of slots) {
      const nonce = r.tpm2b();
      const attrs = r.u8();
      const hmac = r.tpm2b();
      if (!s.session) continue;
      let rpHash = rpHashes.get(s.session.hashAlg);
      if (!rpHash) {
        rpHash = createHash(hashName(s.session.hashAlg)).update(u32(0)).update(u32(spec.cc)).update(params).digest();
        rpHashes.set(s.session.hashAlg, rpHash);
      }
      s.session.verifyResponse(rpHash, nonce, attrs, hmac, s.authValue);
      if (!(attrs & CONTINUE)) this.dropSession(s.session);
    }
    r.done(`${spec.name} response`);
    if (encSession && encSession.attrs & TPMA_SESSION.encrypt && paramSize >= 2) {
      const size = params.readUInt16BE(0);
      if (2 + size > params.length) throw new TpmProtocolError('BAD_RESPONSE', `${spec.name}: first parameter beyond response`);
      encSession.session!.decryptResponseParam(params.subarray(2, 2 + size), encSession.authValue);
    }
    return { handles, params: new Reader(resp, paramStart, paramStart + paramSize) };
  }

  private dropSession(s: Session): void {
    const i = this.hmacSessions.indexOf(s);
    if (i >= 0) this.hmacSessions[i] = undefined;
    this.policySessions.delete(s.handle);
  }

  /** RSA key generation on hardware TPMs can take far longer than any other command. */
  private keyGenTimeout(template: TpmPublic): number {
    return template.type === TPM_ALG.RSA ? Math.max(this.timeoutMs, 120_000) : this.timeoutMs;
  }

  /** The SRK (loaded, name-checked), creating it on first use in this connection. */
  private async ensureSrk(): Promise<LoadedObject> {
    if (this.srk) return this.srk;
    let obj: LoadedObject;
    try {
      obj = trimAuth(this.ownerAuth).length === 0
        ? await this.createPrimaryRaw(TPM_RH.OWNER, srkEccTemplate(), undefined, {})
        : await this.createSrkWithOwnerAuth();
    } catch (e) {
      if (isAuthFail(e)) throw await this.ownerAuthError(e);
      throw e;
    }
    if (this.expectedSrkName && !Buffer.from(obj.name).equals(Buffer.from(this.expectedSrkName))) {
      await this.flushQuiet(obj.handle);
      throw new TpmProtocolError('SALT_KEY_MISMATCH', 'the TPM presented a storage root key other than the pinned one');
    }
    this.srk = obj;
    return obj;
  }

  /**
   * CreatePrimary(OWNER) with an owner password needs an HMAC session, and the SRK that salts
   * sessions is what is being created. An ephemeral key of the NULL hierarchy (empty auth, new
   * seed at every TPM reset) salts this one session instead, so the password only keys an HMAC
   * that a listener cannot test guesses against. The session is flushed at once: every later
   * session is salted by the SRK, whose name is checked against the pinned one.
   */
  private async createSrkWithOwnerAuth(): Promise<LoadedObject> {
    const ephemeral = await this.createPrimaryRaw(TPM_RH.NULL, srkEccTemplate(), undefined, { session: 'password' });
    let bootstrap: Session;
    try {
      bootstrap = await this.startSession(TPM_SE.HMAC, TPM_ALG.SHA256, ephemeral);
    } finally {
      await this.flushQuiet(ephemeral.handle);
    }
    try {
      return await this.createPrimaryRaw(TPM_RH.OWNER, srkEccTemplate(), undefined, { auth: this.ownerAuth, ownSession: bootstrap });
    } finally {
      await this.flushQuiet(bootstrap.handle);
    }
  }

  /** Why the owner hierarchy refused the SRK's CreatePrimary, from TPMA_PERMANENT.ownerAuthSet. */
  private async ownerAuthError(cause: TpmError): Promise<Error> {
    const permanent = await this.permanentBits();
    const passwordSet = (permanent & TPMA_PERMANENT.ownerAuthSet) !== 0;
    const given = trimAuth(this.ownerAuth).length > 0;
    if (passwordSet && !given) return new TpmProtocolError('OWNER_AUTH_REQUIRED', "the TPM's owner hierarchy has a password and none was given", { cause });
    if (passwordSet) return new TpmProtocolError('OWNER_AUTH_REFUSED', "the TPM refused the owner password given", { cause });
    if (given) return new TpmProtocolError('OWNER_AUTH_NOT_SET', "an owner password was given but the TPM's owner hierarchy has none", { cause });
    return cause;
  }

  private async startSession(type: number, hashAlg: HashAlg, saltKey?: LoadedObject): Promise<Session> {
    const srk = saltKey ?? (await this.ensureSrk());
    // The salt is KDFe over the salt key's nameAlg (Part 1, secret sharing), whatever the session hash.
    const { salt, encryptedSalt } = makeEccSalt(srk.publicArea as EccPublic, srk.publicArea.nameAlg);
    const nonceCaller = randomBytes(hashSize(hashAlg));
    const w = new Writer(200);
    w.tpm2b(nonceCaller).tpm2b(encryptedSalt).u8(type);
    writeSymDef(w, SESSION_SYMMETRIC);
    w.u16(hashAlg);
    const res = await this.execute({
      cc: TPM_CC.StartAuthSession, name: 'StartAuthSession',
      handles: [srk, { handle: TPM_RH.NULL, name: handleBytes(TPM_RH.NULL) }], auths: [],
      params: w.view(), responseHandles: 1,
    });
    const nonceTPM = Buffer.from(res.params.tpm2b());
    const s = new Session(res.handles[0]!, type === TPM_SE.HMAC ? 'hmac' : 'policy', hashAlg, salt, nonceCaller, nonceTPM);
    salt.fill(0);
    return s;
  }

  private async hmacSession(index: number): Promise<Session> {
    const have = this.hmacSessions[index];
    if (have) return have;
    const s = await this.startSession(TPM_SE.HMAC, TPM_ALG.SHA256);
    this.hmacSessions[index] = s;
    return s;
  }

  /**
   * TPM2_GetCapability (caller holds the queue): moreData and a reader at the capability data
   * after its selector, which is checked against the one asked for.
   */
  private async capabilityData(capability: number, property: number, count: number): Promise<{ moreData: boolean; data: Reader }> {
    const w = new Writer(12);
    w.u32(capability).u32(property).u32(count);
    const res = await this.execute({ cc: TPM_CC.GetCapability, name: 'GetCapability', handles: [], auths: [], params: w.view(), responseHandles: 0 });
    const r = res.params;
    const moreData = r.u8() !== 0;
    if (r.u32() !== capability) throw new TpmProtocolError('BAD_RESPONSE', 'capability mismatch');
    return { moreData, data: r };
  }

  private async handlesIn(first: number, max = 64): Promise<number[]> {
    const { data: r } = await this.capabilityData(TPM_CAP.HANDLES, first, max);
    const n = r.u32();
    if (n > 1024) throw new TpmProtocolError('BAD_RESPONSE', 'too many handles');
    const out: number[] = [];
    // TPM_HT_LOADED_SESSION (0x02) lists every loaded session by its own handle: HMAC
    // sessions 0x02.., policy sessions 0x03.. (0x03 asks for saved sessions only). Keep both,
    // or a crashed client's policy sessions are never flushed and fill the session slots.
    const loadedSessions = first >>> 24 === TPM_HT.HMAC_SESSION;
    for (let i = 0; i < n; i++) {
      const h = r.u32();
      if (h >>> 24 === first >>> 24 || (loadedSessions && h >>> 24 === TPM_HT.POLICY_SESSION)) out.push(h);
    }
    return out;
  }

  /** TPMA_PERMANENT (caller holds the queue). */
  private async permanentBits(): Promise<number> {
    return (await this.properties(TPM_PT.PERMANENT, 1)).get(TPM_PT.PERMANENT) ?? 0;
  }

  private async properties(first: number, count: number): Promise<Map<number, number>> {
    const { data: r } = await this.capabilityData(TPM_CAP.TPM_PROPERTIES, first, count);
    const n = r.u32();
    if (n > 1024) throw new TpmProtocolError('BAD_RESPONSE', 'too many properties');
    const out = new Map<number, number>();
    for (let i = 0; i < n; i++) out.set(r.u32(), r.u32());
    return out;
  }

  private async createPrimaryRaw(hierarchy: number, template: TpmPublic, sensitive: SensitiveCreate | undefined, opts: AuthSlot): Promise<LoadedObject> {
    const w = new Writer(512);
    writeSensitiveCreate(w, sensitive);
    w.sized((x) => writePublic(x, template));
    w.tpm2b(EMPTY).u32(0); // outsideInfo, creationPCR (empty TPML_PCR_SELECTION)
    const secret = !!(sensitive?.data?.length || trimAuth(sensitive?.userAuth).length);
    const res = await this.execute({
      cc: TPM_CC.CreatePrimary, name: 'CreatePrimary', handles: [permanent(hierarchy)], auths: [opts],
      params: w.view(), responseHandles: 1, encryptCommand: secret || 'possible', timeoutMs: this.keyGenTimeout(template),
    });
    const r = res.params;
    const pubReader = r.sized();
    const publicArea = readPublic(pubReader);
    r.tpm2b(); // creationData
    r.tpm2b(); // creationHash
    readTicket(r);
    const name = r.tpm2b();
    if (!Buffer.from(name).equals(Buffer.from(objectName(publicArea)))) {
      throw new TpmProtocolError('BAD_RESPONSE', 'CreatePrimary: returned name does not match the public area');
    }
    return { handle: res.handles[0]!, name, publicArea };
  }

  private async nvEntity(nvIndex: number): Promise<TpmEntity> {
    let e = this.nvNames.get(nvIndex);
    if (!e) {
      e = await this.nvReadPublicRaw(nvIndex);
      this.nvNames.set(nvIndex, e);
    }
    return { handle: nvIndex, name: e.name };
  }

  private markNvWritten(nvIndex: number): void {
    const e = this.nvNames.get(nvIndex);
    if (!e || e.nvPublic.attributes & TPMA_NV.WRITTEN) return;
    const nvPublic = { ...e.nvPublic, attributes: (e.nvPublic.attributes | TPMA_NV.WRITTEN) >>> 0 };
    this.nvNames.set(nvIndex, { nvPublic, name: nvName(nvPublic) });
  }

  private async nvReadPublicRaw(nvIndex: number): Promise<{ nvPublic: NvPublic; name: Uint8Array }> {
    const res = await this.execute({
      cc: TPM_CC.NV_ReadPublic, name: 'NV_ReadPublic', handles: [{ handle: nvIndex, name: handleBytes(nvIndex) }], auths: [],
      params: EMPTY, responseHandles: 0,
    });
    const inner = res.params.sized();
    const nvPublic = readNvPublic(inner);
    inner.done('TPMS_NV_PUBLIC');
    const name = res.params.tpm2b();
    if (!Buffer.from(name).equals(Buffer.from(nvName(nvPublic)))) throw new TpmProtocolError('BAD_RESPONSE', 'NV_ReadPublic: name mismatch');
    return { nvPublic, name };
  }

  private async nvAuthEntity(nvIndex: number, authHandle: number | undefined): Promise<{ auth: TpmEntity; index: TpmEntity }> {
    const index = await this.nvEntity(nvIndex);
    const auth = authHandle === undefined || authHandle === nvIndex ? index : permanent(authHandle);
    return { auth, index };
  }

  /** TPM_PT_NV_BUFFER_MAX is fixed for a TPM: asked once, not before every NV read and write. */
  private nvBufferMax: number | undefined;

  private async nvMaxBuffer(): Promise<number> {
    if (this.nvBufferMax === undefined) {
      const p = await this.properties(TPM_PT.NV_BUFFER_MAX, 1);
      this.nvBufferMax = Math.max(64, Math.min(p.get(TPM_PT.NV_BUFFER_MAX) ?? 512, 1024));
    }
    return this.nvBufferMax;
  }

  // --- lifecycle (swtpm) -------------------------------------------------------------------

  /** TPM2_Startup(CLEAR or STATE). TPM_RC_INITIALIZE (already started) is ignored. */
  async startup(clear = true): Promise<void> {
    await this.exclusive(async () => {
      try {
        await this.execute({ cc: TPM_CC.Startup, name: 'Startup', handles: [], auths: [], params: u16(clear ? TPM_SU.CLEAR : TPM_SU.STATE), responseHandles: 0 });
      } catch (e) {
        if (!(e instanceof TpmError && e.base === RC.INITIALIZE)) throw e;
      }
    });
  }

  /** TPM2_Shutdown(CLEAR or STATE): call before stopping a software TPM to avoid a DA strike. */
  async shutdown(clear = true): Promise<void> {
    await this.exclusive(async () => {
      await this.execute({ cc: TPM_CC.Shutdown, name: 'Shutdown', handles: [], auths: [], params: u16(clear ? TPM_SU.CLEAR : TPM_SU.STATE), responseHandles: 0 });
    });
  }

  // --- storage root / salt key -------------------------------------------------------------

  /**
   * The ECC P-256 storage root key (TCG SRK template, owner hierarchy, empty auth), created once
   * per connection and kept loaded; it salts every session and is the usual parent for keys.
   * Do not flush it. Its handle changes when `epoch` changes.
   */
  async storageRoot(): Promise<LoadedObject> {
    return this.exclusive(() => this.ensureSrk());
  }

  /** The SRK's name, to pin with TpmOptions.expectedSrkName at the next open. */
  async storageRootName(): Promise<Uint8Array> {
    return (await this.storageRoot()).name;
  }

  // --- misc -------------------------------------------------------------------------------

  /** Random bytes from the TPM (chunked by the TPM's digest size limit). */
  async getRandom(bytes: number): Promise<Uint8Array> {
    if (!Number.isInteger(bytes) || bytes < 0 || bytes > 4096) throw new TpmProtocolError('BAD_INPUT', 'getRandom: 0..4096 bytes');
    return this.exclusive(async () => {
      const parts: Uint8Array[] = [];
      let have = 0;
      while (have < bytes) {
        const res = await this.execute({ cc: TPM_CC.GetRandom, name: 'GetRandom', handles: [], auths: [], params: u16(Math.min(bytes - have, 64)), responseHandles: 0 });
        const b = res.params.tpm2b();
        if (b.length === 0) throw new TpmProtocolError('BAD_RESPONSE', 'GetRandom returned no bytes');
        parts.push(b);
        have += b.length;
      }
      return Buffer.concat(parts).subarray(0, bytes);
    });
  }

  /** Raw GetCapability: moreData and the bytes of TPMS_CAPABILITY_DATA after its capability field. */
  async getCapability(capability: number, property: number, count: number): Promise<{ moreData: boolean; data: Uint8Array }> {
    return this.exclusive(async () => {
      const { moreData, data } = await this.capabilityData(capability, property, count);
      return { moreData, data: data.bytes(data.remaining) };
    });
  }

  /** Handles in a range (HANDLE_RANGE.*); HMAC_SESSION lists every loaded session, policy sessions too. */
  async getHandles(first: number, max = 64): Promise<number[]> {
    return this.exclusive(() => this.handlesIn(first, max));
  }

  /** TPM_PT_* property values. */
  async getProperties(first: number, count: number): Promise<Map<number, number>> {
    return this.exclusive(() => this.properties(first, count));
  }

  /** Dictionary-attack state: counter, limits, lockout and an estimate of the recovery time. */
  async dictionaryAttackInfo(): Promise<DictionaryAttackInfo> {
    return this.exclusive(async () => {
      const perm = await this.permanentBits();
      const p = await this.properties(TPM_PT.LOCKOUT_COUNTER, 4);
      const lockoutCounter = p.get(TPM_PT.LOCKOUT_COUNTER) ?? 0;
      const maxAuthFail = p.get(TPM_PT.MAX_AUTH_FAIL) ?? 0;
      const lockoutInterval = p.get(TPM_PT.LOCKOUT_INTERVAL) ?? 0;
      const lockoutRecovery = p.get(TPM_PT.LOCKOUT_RECOVERY) ?? 0;
      const inLockout = (perm & TPMA_PERMANENT.inLockout) !== 0 || (maxAuthFail > 0 && lockoutCounter >= maxAuthFail);
      return { inLockout, lockoutCounter, maxAuthFail, lockoutInterval, lockoutRecovery, recoverySeconds: inLockout ? lockoutInterval : 0 };
    });
  }

  /** TPMA_PERMANENT: which hierarchy passwords are set (e.g. to leave the lockout hierarchy alone). */
  async permanentAttributes(): Promise<PermanentAttributes> {
    return this.exclusive(async () => {
      const bits = await this.permanentBits();
      return {
        ownerAuthSet: (bits & TPMA_PERMANENT.ownerAuthSet) !== 0,
        endorsementAuthSet: (bits & TPMA_PERMANENT.endorsementAuthSet) !== 0,
        lockoutAuthSet: (bits & TPMA_PERMANENT.lockoutAuthSet) !== 0,
        disableClear: (bits & TPMA_PERMANENT.disableClear) !== 0,
        inLockout: (bits & TPMA_PERMANENT.inLockout) !== 0,
      };
    });
  }

  /** Clears the DA counter and lockout (lockoutAuth usually empty). */
  async dictionaryAttackLockReset(opts: AuthOptions = {}): Promise<void> {
    await this.exclusive(async () => {
      await this.execute({ cc: TPM_CC.DictionaryAttackLockReset, name: 'DictionaryAttackLockReset', handles: [permanent(TPM_RH.LOCKOUT)], auths: [opts], params: EMPTY, responseHandles: 0 });
    });
  }

  /** Sets the DA limits (seconds). */
  async dictionaryAttackParameters(p: { maxTries: number; recoveryTime: number; lockoutRecovery: number }, opts: AuthOptions = {}): Promise<void> {
    await this.exclusive(async () => {
      const w = new Writer(12);
      w.u32(p.maxTries).u32(p.recoveryTime).u32(p.lockoutRecovery);
      await this.execute({ cc: TPM_CC.DictionaryAttackParameters, name: 'DictionaryAttackParameters', handles: [permanent(TPM_RH.LOCKOUT)], auths: [opts], params: w.view(), responseHandles: 0 });
    });
  }

  /**
   * Whether the TPM supports a key's parameters (TPM2_TestParms; TPMT_PUBLIC_PARMS = type | parameters).
   * Resolves false on a format-1 parameter error (VALUE, CURVE, KEY_SIZE, SCHEME...).
   */
  async testParms(template: TpmPublic): Promise<boolean> {
    return this.exclusive(async () => {
      const w = new Writer(64);
      writePublic(w, template);
      // TPMT_PUBLIC_PARMS is TPMT_PUBLIC without nameAlg, attributes, authPolicy and unique.
      const full = w.view();
      const r = new Reader(full);
      r.u16(); r.u16(); r.u32(); r.tpm2b();
      const paramsStart = r.pos;
      const uniqueLen = template.type === TPM_ALG.ECC ? 4 + template.unique.x.length + template.unique.y.length : 2 + template.unique.length;
      const parms = Buffer.concat([u16(template.type), full.subarray(paramsStart, full.length - uniqueLen)]);
      try {
        await this.execute({ cc: TPM_CC.TestParms, name: 'TestParms', handles: [], auths: [], params: parms, responseHandles: 0 });
        return true;
      } catch (e) {
        if (e instanceof TpmError && e.location.kind === 'parameter') return false;
        throw e;
      }
    });
  }

  // --- objects -----------------------------------------------------------------------------

  /** TPM2_CreatePrimary under a hierarchy (TPM_RH.OWNER, ENDORSEMENT, NULL). Flush the result when done. */
  async createPrimary(hierarchy: number, template: TpmPublic, sensitive?: SensitiveCreate, opts: AuthOptions = {}): Promise<LoadedObject> {
    return this.exclusive(() => this.createPrimaryRaw(hierarchy, template, sensitive, opts));
  }

  /** TPM2_Create: a new key or sealed object under `parent`; returns the blobs to Load later. */
  async create(parent: TpmEntity, template: TpmPublic, sensitive?: SensitiveCreate, opts: AuthOptions = {}): Promise<KeyBlob> {
    return this.exclusive(async () => {
      const w = new Writer(512);
      writeSensitiveCreate(w, sensitive);
      w.sized((x) => writePublic(x, template));
      w.tpm2b(EMPTY).u32(0);
      const secret = !!(sensitive?.data?.length || trimAuth(sensitive?.userAuth).length);
      const res = await this.execute({
        cc: TPM_CC.Create, name: 'Create', handles: [parent], auths: [opts], params: w.view(), responseHandles: 0, encryptCommand: secret || 'possible',
        timeoutMs: this.keyGenTimeout(template),
      });
      const r = res.params;
      const privStart = r.pos;
      r.tpm2b();
      const priv = r.slice(privStart, r.pos);
      const pubStart = r.pos;
      const publicArea = readPublic(r.sized());
      const pub = r.slice(pubStart, r.pos);
      return { public: pub, private: priv, publicArea, name: objectName(publicArea) };
    });
  }

  /** TPM2_Load of a blob (TPM2B_PUBLIC / TPM2B_PRIVATE with size prefixes) under `parent`. */
  async load(parent: TpmEntity, blob: Pick<KeyBlob, 'public' | 'private'>, opts: AuthOptions = {}): Promise<LoadedObject> {
    const pr = new Reader(blob.public);
    const publicArea = readPublic(pr.sized());
    pr.done('TPM2B_PUBLIC');
    const vr = new Reader(blob.private);
    vr.tpm2b();
    vr.done('TPM2B_PRIVATE');
    return this.exclusive(async () => {
      const res = await this.execute({
        cc: TPM_CC.Load, name: 'Load', handles: [parent], auths: [opts],
        params: Buffer.concat([blob.private, blob.public]), responseHandles: 1,
      });
      const name = res.params.tpm2b();
      if (!Buffer.from(name).equals(Buffer.from(objectName(publicArea)))) throw new TpmProtocolError('BAD_RESPONSE', 'Load: name mismatch');
      return { handle: res.handles[0]!, name, publicArea };
    });
  }

  /** Loads a public key only (hierarchy NULL by default), e.g. to verify signatures in the TPM. */
  async loadExternalPublic(publicArea: TpmPublic, hierarchy: number = TPM_RH.NULL): Promise<LoadedObject> {
    return this.exclusive(async () => {
      const w = new Writer(512);
      w.u16(0).sized((x) => writePublic(x, publicArea)).u32(hierarchy);
      const res = await this.execute({ cc: TPM_CC.LoadExternal, name: 'LoadExternal', handles: [], auths: [], params: w.view(), responseHandles: 1 });
      return { handle: res.handles[0]!, name: res.params.tpm2b(), publicArea };
    });
  }

  /** TPM2_ReadPublic: the public area and name of a loaded or persistent object (name verified). */
  async readPublic(handle: number): Promise<{ publicArea: TpmPublic; public: Uint8Array; name: Uint8Array; qualifiedName: Uint8Array }> {
    return this.exclusive(async () => {
      const res = await this.execute({ cc: TPM_CC.ReadPublic, name: 'ReadPublic', handles: [{ handle, name: handleBytes(handle) }], auths: [], params: EMPTY, responseHandles: 0 });
      const r = res.params;
      const start = r.pos;
      const publicArea = readPublic(r.sized());
      const pub = r.slice(start, r.pos);
      const name = r.tpm2b();
      const qualifiedName = r.tpm2b();
      if (!Buffer.from(name).equals(Buffer.from(objectName(publicArea)))) throw new TpmProtocolError('BAD_RESPONSE', 'ReadPublic: name mismatch');
      return { publicArea, public: pub, name, qualifiedName };
    });
  }

  /** TPM2_FlushContext of a transient object or session. */
  async flushContext(handle: number): Promise<void> {
    await this.exclusive(async () => {
      await this.execute({ cc: TPM_CC.FlushContext, name: 'FlushContext', handles: [], auths: [], params: handleBytes(handle), responseHandles: 0 });
      if (this.srk?.handle === handle) this.srk = undefined;
      this.policySessions.delete(handle);
      const i = this.hmacSessions.findIndex((s) => s?.handle === handle);
      if (i >= 0) this.hmacSessions[i] = undefined;
    });
  }

  /** Makes a loaded object persistent at `persistentHandle`, or evicts a persistent one (pass it as `object`). */
  async evictControl(object: TpmEntity, persistentHandle: number, opts: AuthOptions & { hierarchy?: number } = {}): Promise<void> {
    await this.exclusive(async () => {
      await this.execute({
        cc: TPM_CC.EvictControl, name: 'EvictControl', handles: [permanent(opts.hierarchy ?? TPM_RH.OWNER), object], auths: [opts],
        params: handleBytes(persistentHandle), responseHandles: 0,
      });
    });
  }

  /** Changes an object's authValue; returns the new TPM2B_PRIVATE (with size prefix). Load it again to use the new auth. */
  async objectChangeAuth(object: TpmEntity, parent: TpmEntity, newAuth: Uint8Array, opts: AuthOptions = {}): Promise<Uint8Array> {
    return this.exclusive(async () => {
      const res = await this.execute({
        cc: TPM_CC.ObjectChangeAuth, name: 'ObjectChangeAuth', handles: [object, parent], auths: [opts],
        params: tpm2b(newAuth), responseHandles: 0, encryptCommand: true,
      });
      const r = res.params;
      const start = r.pos;
      r.tpm2b();
      return r.slice(start, r.pos);
    });
  }

  /**
   * Imports an external private key under `parent` (a storage key) as a TPM blob. The key is
   * wrapped with an inner AES-128-CFB wrapper whose key travels in the session-encrypted first
   * parameter, so the private key never crosses the wire in clear. `template` gives attributes and
   * scheme (create it with `imported: true`: fixedTPM, fixedParent and sensitiveDataOrigin clear).
   */
  async importKey(parent: TpmEntity, template: TpmPublic, key: ExternalPrivateKey, userAuth?: Uint8Array, opts: AuthOptions = {}): Promise<KeyBlob> {
    let publicArea: TpmPublic;
    let sensitive: Uint8Array;
    if (key.type === 'rsa' && template.type === TPM_ALG.RSA) {
      publicArea = { ...template, unique: key.n, exponent: key.e === 65537 ? 0 : key.e };
      sensitive = key.p;
    } else if (key.type === 'ecc' && template.type === TPM_ALG.ECC) {
      publicArea = { ...template, curveId: key.curveId, unique: { x: key.x, y: key.y } };
      sensitive = key.d;
    } else {
      throw new TpmProtocolError('BAD_INPUT', 'importKey: key type does not match the template');
    }
    const name = objectName(publicArea);
    const sens2b = marshalSensitive2b(publicArea.type, trimAuth(userAuth), EMPTY, sensitive);
    const integrity = createHash(hashName(publicArea.nameAlg)).update(sens2b).update(name).digest();
    const innerKey = randomBytes(16);
    const plain = Buffer.concat([tpm2b(integrity), sens2b]);
    const cipher = createCipheriv('aes-128-cfb', innerKey, Buffer.alloc(16));
    const duplicate = Buffer.concat([cipher.update(plain), cipher.final()]);
    plain.fill(0);
    sens2b.fill(0);
    const w = new Writer(1024);
    w.tpm2b(innerKey).sized((x) => writePublic(x, publicArea)).tpm2b(duplicate).tpm2b(EMPTY);
    writeSymDef(w, { algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB });
    innerKey.fill(0);
    const params = w.finish();
    return this.exclusive(async () => {
      try {
        const res = await this.execute({ cc: TPM_CC.Import, name: 'Import', handles: [parent], auths: [opts], params, responseHandles: 0, encryptCommand: true });
        const r = res.params;
        const start = r.pos;
        r.tpm2b();
        return { public: marshalPublic2b(publicArea), private: r.slice(start, r.pos), publicArea, name };
      } finally {
        params.fill(0);
      }
    });
  }

  // --- private-key operations --------------------------------------------------------------

  /**
   * TPM2_Sign of a digest. scheme: { scheme: TPM_ALG.ECDSA | RSASSA | RSAPSS, hash }. The digest
   * travels encrypted (salted session) by default. For a restricted key pass `validation` from hash().
   */
  async sign(key: TpmEntity, digest: Uint8Array, scheme: Scheme, opts: AuthOptions & { validation?: Ticket } = {}): Promise<Signature> {
    return this.exclusive(async () => {
      const w = new Writer(128);
      w.tpm2b(digest);
      writeScheme(w, scheme);
      writeTicket(w, opts.validation ?? nullHashcheckTicket());
      const res = await this.execute({ cc: TPM_CC.Sign, name: 'Sign', handles: [key], auths: [opts], params: w.view(), responseHandles: 0, encryptCommand: true });
      return readSignature(res.params);
    });
  }

  /** RSA decryption. scheme {scheme: NULL} is the raw RSA private operation; RSAES; OAEP with hash and label. */
  async rsaDecrypt(key: TpmEntity, ciphertext: Uint8Array, scheme: Scheme, label?: Uint8Array, opts: AuthOptions = {}): Promise<Uint8Array> {
    return this.exclusive(async () => {
      const w = new Writer(600);
      w.tpm2b(ciphertext);
      writeScheme(w, scheme);
      w.tpm2b(label && label.length ? (label[label.length - 1] === 0 ? label : Buffer.concat([label, Buffer.of(0)])) : EMPTY);
      const res = await this.execute({
        cc: TPM_CC.RSA_Decrypt, name: 'RSA_Decrypt', handles: [key], auths: [opts], params: w.view(), responseHandles: 0,
        encryptCommand: true, encryptResponse: true,
      });
      return res.params.tpm2b();
    });
  }

  /** TPM2_ECDH_ZGen: the shared point d * Q (its x coordinate is the ECDH secret). */
  async ecdhZGen(key: TpmEntity, point: EccPoint, opts: AuthOptions = {}): Promise<EccPoint> {
    return this.exclusive(async () => {
      const w = new Writer(128);
      writeEccPoint2b(w, point);
      const res = await this.execute({
        cc: TPM_CC.ECDH_ZGen, name: 'ECDH_ZGen', handles: [key], auths: [opts], params: w.view(), responseHandles: 0,
        encryptCommand: true, encryptResponse: true,
      });
      return readEccPoint2b(res.params);
    });
  }

  /** TPM2_Unseal: the sealed data, returned encrypted on the wire (salted session). */
  async unseal(object: TpmEntity, opts: AuthOptions = {}): Promise<Uint8Array> {
    return this.exclusive(async () => {
      const res = await this.execute({ cc: TPM_CC.Unseal, name: 'Unseal', handles: [object], auths: [opts], params: EMPTY, responseHandles: 0, encryptResponse: true });
      return res.params.tpm2b();
    });
  }

  // --- NV ----------------------------------------------------------------------------------

  /** TPM2_NV_DefineSpace (owner hierarchy by default); `auth` is the index's authValue (sent encrypted). */
  async nvDefineSpace(publicInfo: NvPublic, auth?: Uint8Array, opts: AuthOptions & { hierarchy?: number } = {}): Promise<TpmEntity> {
    return this.exclusive(async () => {
      const w = new Writer(128);
      w.tpm2b(auth).sized((x) => writeNvPublic(x, publicInfo));
      await this.execute({
        cc: TPM_CC.NV_DefineSpace, name: 'NV_DefineSpace', handles: [permanent(opts.hierarchy ?? TPM_RH.OWNER)], auths: [opts],
        params: w.view(), responseHandles: 0, encryptCommand: trimAuth(auth).length > 0 || 'possible',
      });
      this.nvNames.delete(publicInfo.nvIndex);
      return { handle: publicInfo.nvIndex, name: nvName(publicInfo) };
    });
  }

  /** TPM2_NV_UndefineSpace (owner hierarchy by default). */
  async nvUndefineSpace(nvIndex: number, opts: AuthOptions & { hierarchy?: number } = {}): Promise<void> {
    await this.exclusive(async () => {
      const index = await this.nvEntity(nvIndex);
      await this.execute({ cc: TPM_CC.NV_UndefineSpace, name: 'NV_UndefineSpace', handles: [permanent(opts.hierarchy ?? TPM_RH.OWNER), index], auths: [opts], params: EMPTY, responseHandles: 0 });
      this.nvNames.delete(nvIndex);
    });
  }

  /** TPM2_NV_ReadPublic (name verified). */
  async nvReadPublic(nvIndex: number): Promise<{ nvPublic: NvPublic; name: Uint8Array }> {
    return this.exclusive(async () => {
      const e = await this.nvReadPublicRaw(nvIndex);
      this.nvNames.set(nvIndex, e);
      return e;
    });
  }

  /** Reads `size` bytes at `offset` (chunked). Authorized by the index itself unless opts.authHandle (e.g. TPM_RH.OWNER). */
  async nvRead(nvIndex: number, size: number, offset = 0, opts: AuthOptions & { authHandle?: number } = {}): Promise<Uint8Array> {
    checkNvRange(size, offset);
    return this.exclusive(async () => {
      const { auth, index } = await this.nvAuthEntity(nvIndex, opts.authHandle);
      const max = await this.nvMaxBuffer();
      const parts: Uint8Array[] = [];
      for (let done = 0; done < size;) {
        const n = Math.min(max, size - done);
        const w = new Writer(4);
        w.u16(n).u16(offset + done);
        const res = await this.execute({
          cc: TPM_CC.NV_Read, name: 'NV_Read', handles: [auth, index], auths: [opts], params: w.view(), responseHandles: 0,
          encryptResponse: trimAuth(opts.auth).length > 0 || 'possible',
        });
        const b = res.params.tpm2b();
        if (b.length !== n) throw new TpmProtocolError('BAD_RESPONSE', `NV_Read returned ${b.length} of ${n} bytes`);
        parts.push(b);
        done += n;
      }
      return Buffer.concat(parts);
    });
  }

  /** Writes `data` at `offset` (chunked); the data travels encrypted when a salted session is used. */
  async nvWrite(nvIndex: number, data: Uint8Array, offset = 0, opts: AuthOptions & { authHandle?: number } = {}): Promise<void> {
    checkNvRange(data.length, offset);
    await this.exclusive(async () => {
      const { auth, index } = await this.nvAuthEntity(nvIndex, opts.authHandle);
      const max = await this.nvMaxBuffer();
      for (let done = 0; done < data.length || (data.length === 0 && done === 0);) {
        const n = Math.min(max, data.length - done);
        const w = new Writer(n + 8);
        w.tpm2b(data.subarray(done, done + n)).u16(offset + done);
        await this.execute({
          cc: TPM_CC.NV_Write, name: 'NV_Write', handles: [auth, index], auths: [opts], params: w.view(), responseHandles: 0,
          encryptCommand: true,
        });
        this.markNvWritten(nvIndex);
        if (auth.handle === nvIndex) auth.name = (await this.nvEntity(nvIndex)).name;
        index.name = auth.handle === nvIndex ? auth.name : (await this.nvEntity(nvIndex)).name;
        done += n;
        if (n === 0) break;
      }
    });
  }

  /** TPM2_NV_Increment of a counter index. */
  async nvIncrement(nvIndex: number, opts: AuthOptions & { authHandle?: number } = {}): Promise<void> {
    await this.exclusive(async () => {
      const { auth, index } = await this.nvAuthEntity(nvIndex, opts.authHandle);
      await this.execute({ cc: TPM_CC.NV_Increment, name: 'NV_Increment', handles: [auth, index], auths: [opts], params: EMPTY, responseHandles: 0 });
      this.markNvWritten(nvIndex);
    });
  }

  /** Reads an NV counter index (8 bytes, big-endian) as a bigint. */
  async nvReadCounter(nvIndex: number, opts: AuthOptions & { authHandle?: number } = {}): Promise<bigint> {
    const b = await this.nvRead(nvIndex, 8, 0, opts);
    return Buffer.from(b).readBigUInt64BE(0);
  }

  // --- priority B: contexts, policy, attestation ------------------------------------------

  /** TPM2_ContextSave of a transient object or session. */
  async contextSave(handle: number): Promise<SavedContext> {
    return this.exclusive(async () => {
      const res = await this.execute({ cc: TPM_CC.ContextSave, name: 'ContextSave', handles: [{ handle, name: handleBytes(handle) }], auths: [], params: EMPTY, responseHandles: 0 });
      return readContext(res.params);
    });
  }

  /** TPM2_ContextLoad: returns the new handle. */
  async contextLoad(context: SavedContext): Promise<number> {
    return this.exclusive(async () => {
      const w = new Writer(1024);
      writeContext(w, context);
      const res = await this.execute({ cc: TPM_CC.ContextLoad, name: 'ContextLoad', handles: [], auths: [], params: w.view(), responseHandles: 1 });
      return res.handles[0]!;
    });
  }

  /** Starts a salted policy (or trial) session. Flush it with flushContext when done. */
  async startPolicySession(opts: { trial?: boolean; hashAlg?: HashAlg } = {}): Promise<PolicySessionRef> {
    return this.exclusive(async () => {
      const hashAlg = opts.hashAlg ?? TPM_ALG.SHA256;
      const s = await this.startSession(opts.trial ? TPM_SE.TRIAL : TPM_SE.POLICY, hashAlg);
      this.policySessions.set(s.handle, s);
      return { kind: 'policy', handle: s.handle, hashAlg };
    });
  }

  private policyEntity(session: PolicySessionRef): TpmEntity {
    if (!this.policySessions.has(session.handle)) throw new TpmProtocolError('BAD_INPUT', 'unknown policy session');
    return { handle: session.handle, name: handleBytes(session.handle) };
  }

  /** TPM2_PolicyAuthValue: the authorized command must also prove the entity's authValue (by HMAC). */
  async policyAuthValue(session: PolicySessionRef): Promise<void> {
    await this.exclusive(async () => {
      await this.execute({ cc: TPM_CC.PolicyAuthValue, name: 'PolicyAuthValue', handles: [this.policyEntity(session)], auths: [], params: EMPTY, responseHandles: 0 });
      this.policySessions.get(session.handle)!.policyAuthValue = true;
    });
  }

  /** TPM2_PolicyCommandCode. */
  async policyCommandCode(session: PolicySessionRef, commandCode: number): Promise<void> {
    await this.exclusive(async () => {
      await this.execute({ cc: TPM_CC.PolicyCommandCode, name: 'PolicyCommandCode', handles: [this.policyEntity(session)], auths: [], params: u32(commandCode), responseHandles: 0 });
    });
  }

  /** TPM2_PolicySecret with the authorization of `authEntity` (e.g. TPM_RH.ENDORSEMENT), no expiration. */
  async policySecret(session: PolicySessionRef, authEntity: TpmEntity, opts: AuthOptions = {}): Promise<void> {
    await this.exclusive(async () => {
      const w = new Writer(16);
      w.tpm2b(EMPTY).tpm2b(EMPTY).tpm2b(EMPTY).u32(0);
      await this.execute({ cc: TPM_CC.PolicySecret, name: 'PolicySecret', handles: [authEntity, this.policyEntity(session)], auths: [opts], params: w.view(), responseHandles: 0 });
    });
  }

  /**
   * TPM2_PolicyNV: the policy holds only if (NV data at `offset`, `operandB.length` bytes)
   * `operation` (TPM_EO) `operandB`. Authorized like an NV read: by the index itself with its
   * authValue (opts.auth) unless opts.authHandle (e.g. TPM_RH.OWNER). Fails with TPM_RC_POLICY
   * when the comparison is false.
   *
   *   handles: authHandle, nvIndex, policySession    params: TPM2B operandB | u16 offset | u16 operation
   */
  async policyNV(session: PolicySessionRef, nvIndex: number, operandB: Uint8Array, offset: number, operation: number, opts: AuthOptions & { authHandle?: number } = {}): Promise<void> {
    checkNvRange(operandB.length, offset);
    await this.exclusive(async () => {
      const { auth, index } = await this.nvAuthEntity(nvIndex, opts.authHandle);
      const w = new Writer(operandB.length + 8);
      w.tpm2b(operandB).u16(offset).u16(operation);
      await this.execute({
        cc: TPM_CC.PolicyNV, name: 'PolicyNV', handles: [auth, index, this.policyEntity(session)], auths: [opts], params: w.view(), responseHandles: 0,
        encryptCommand: 'possible',
      });
    });
  }

  /**
   * TPM2_PolicyOR: the session's current digest must be one of `branches` (2..8 digests of the
   * session's hash size); the digest becomes H(0...0 || TPM_CC_PolicyOR || branch1 || ... || branchN).
   *
   *   handles: policySession    params: TPML_DIGEST = u32 count | count x TPM2B_DIGEST
   */
  async policyOR(session: PolicySessionRef, branches: readonly Uint8Array[]): Promise<void> {
    if (branches.length < 2 || branches.length > 8) throw new TpmProtocolError('BAD_INPUT', `PolicyOR takes 2 to 8 branch digests, not ${branches.length}`);
    const size = hashSize(session.hashAlg);
    for (const branch of branches) {
      if (branch.length !== size) throw new TpmProtocolError('BAD_INPUT', `a PolicyOR branch digest is ${branch.length} bytes, the session hash needs ${size}`);
    }
    await this.exclusive(async () => {
      const w = new Writer(4 + branches.length * (size + 2));
      w.u32(branches.length);
      for (const branch of branches) w.tpm2b(branch);
      await this.execute({ cc: TPM_CC.PolicyOR, name: 'PolicyOR', handles: [this.policyEntity(session)], auths: [], params: w.view(), responseHandles: 0 });
    });
  }

  /** TPM2_PolicyGetDigest. */
  async policyGetDigest(session: PolicySessionRef): Promise<Uint8Array> {
    return this.exclusive(async () => {
      const res = await this.execute({ cc: TPM_CC.PolicyGetDigest, name: 'PolicyGetDigest', handles: [this.policyEntity(session)], auths: [], params: EMPTY, responseHandles: 0 });
      return res.params.tpm2b();
    });
  }

  /** TPM2_Hash with a validation ticket (owner hierarchy by default) for signing with a restricted key. */
  async hash(data: Uint8Array, hashAlg: HashAlg, hierarchy: number = TPM_RH.OWNER): Promise<{ digest: Uint8Array; validation: Ticket }> {
    return this.exclusive(async () => {
      const w = new Writer(data.length + 16);
      w.tpm2b(data).u16(hashAlg).u32(hierarchy);
      const res = await this.execute({ cc: TPM_CC.Hash, name: 'Hash', handles: [], auths: [], params: w.view(), responseHandles: 0 });
      return { digest: res.params.tpm2b(), validation: readTicket(res.params) };
    });
  }

  /** TPM2_Certify: `signKey` attests `object`'s name with `qualifyingData` as extraData. */
  async certify(object: TpmEntity, signKey: TpmEntity, qualifyingData: Uint8Array, scheme: Scheme, opts: { objectAuth?: AuthOptions; signAuth?: AuthOptions } = {}): Promise<{ attest: Attest; signature: Signature }> {
    return this.exclusive(async () => {
      const w = new Writer(128);
      w.tpm2b(qualifyingData);
      writeScheme(w, scheme);
      const res = await this.execute({ cc: TPM_CC.Certify, name: 'Certify', handles: [object, signKey], auths: [opts.objectAuth ?? {}, opts.signAuth ?? {}], params: w.view(), responseHandles: 0 });
      const attest = parseAttest(res.params.tpm2b());
      return { attest, signature: readSignature(res.params) };
    });
  }

  /** TPM2_ActivateCredential: releases the credential if `activate` (the AK) and `key` (the EK) share this TPM. */
  async activateCredential(activate: TpmEntity, key: TpmEntity, credentialBlob: Uint8Array, secret: Uint8Array, opts: { activateAuth?: AuthOptions; keyAuth?: AuthOptions } = {}): Promise<Uint8Array> {
    return this.exclusive(async () => {
      const w = new Writer(512);
      w.tpm2b(credentialBlob).tpm2b(secret);
      const res = await this.execute({
        cc: TPM_CC.ActivateCredential, name: 'ActivateCredential', handles: [activate, key], auths: [opts.activateAuth ?? {}, opts.keyAuth ?? {}],
        params: w.view(), responseHandles: 0, encryptResponse: true,
      });
      return res.params.tpm2b();
    });
  }
}

function u16(v: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(v, 0);
  return b;
}

function u32(v: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(v >>> 0, 0);
  return b;
}

function tpm2b(data: Uint8Array): Buffer {
  return Buffer.concat([u16(data.length), data]);
}

function checkNvRange(size: number, offset: number): void {
  if (!Number.isInteger(size) || !Number.isInteger(offset) || size < 0 || offset < 0 || size + offset > 0xffff) {
    throw new TpmProtocolError('BAD_INPUT', `NV range offset ${offset} size ${size} is out of bounds`);
  }
}

/** A permanent handle as an entity (its name is the handle). */
export function permanent(handle: number): TpmEntity {
  if (handle >>> 24 !== TPM_HT.PERMANENT) throw new TpmProtocolError('BAD_INPUT', `0x${handle.toString(16)} is not a permanent handle`);
  return { handle, name: handleBytes(handle) };
}
