/**
 * tpmvscmgr as a function: parses argv, runs the command, turns every failure into ONE line on
 * stderr ("tpmvscmgr: ...") and the exit code of common/errors.ts. With /json, a failure is also
 * reported on stdout as {"ok": false, "error": {"code", "message"}, "exitCode"}.
 */
import { EXIT, TpmvscError, type ErrorCode } from '../common/errors.js';
import { asksForVersion, productVersion } from '../common/product_version.js';
import { writeLine, type CliIo } from './cli_io.js';
import { RequestAborted } from './control_client.js';
import { runCreate } from './commands/create.js';
import { runDestroy } from './commands/destroy.js';
import { runList } from './commands/list.js';
import { runStatus } from './commands/status.js';
import { runUnblock } from './commands/unblock.js';
import { helpText } from './help.js';
import { parseArguments, VERIFY_ATTESTATION, type CliCommand } from './parse_arguments.js';
import { PromptInterrupted } from './prompt.js';
import { RemoteExit, runRemote, targetsMachine } from './remote.js';
import { REMOTE_SESSION_OPTION, runRemoteSession } from './remote_session.js';

/** Conventional exit code after SIGINT (128 + 2). */
export const EXIT_INTERRUPTED = 130;

/** Codes whose detail alone reads best ("tpmvscmgr: /name must be ..."). */
const DETAIL_ONLY: ReadonlySet<ErrorCode> = new Set(['USAGE', 'BAD_REQUEST', 'NOT_SUPPORTED', 'PIN_POLICY']);

export function errorLine(error: TpmvscError): string {
  const text = DETAIL_ONLY.has(error.code) && error.detail ? error.detail : error.message;
  return `tpmvscmgr: ${text.replace(/[\r\n]+/g, ' ')}`;
}

async function dispatch(command: CliCommand, io: CliIo): Promise<void> {
  // /machine: the target's own tpmvscmgr does the work, over ssh.
  if (command.command !== 'help' && targetsMachine(command)) return runRemote(command, io);
  switch (command.command) {
    case 'help':
      io.stdout.write(helpText(command.topic));
      return;
    case 'create':
      await runCreate(command, io);
      return;
    case 'destroy':
      return runDestroy(command, io);
    case 'list':
      return runList(command, io);
    case 'status':
      return runStatus(command, io);
    case 'unblock':
      return runUnblock(command, io);
  }
}

/** Runs tpmvscmgr; resolves to the exit code. Never throws. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  // The target's side of /machine (hidden option, see remote_session.ts).
  if (argv[0] === REMOTE_SESSION_OPTION) return runRemoteSession(argv.slice(1), io, runCli);
  let json = argv.some((token) => ['/json', '--json'].includes(token.toLowerCase()));
  try {
    if (asksForVersion(argv)) {
      writeLine(io.stdout, `tpmvscmgr ${productVersion()}`);
      return EXIT.ok;
    }
    // verify-attestation is a local, Unix-style command (no daemon): it parses its own arguments.
    if (argv[0]?.toLowerCase() === VERIFY_ATTESTATION) {
      // Loaded for this command only: its X.509 code (pkijs) would add 0.1-0.5 s to every other one.
      const { runVerifyAttestation } = await import('./commands/verify_attestation.js');
      const refusal = await runVerifyAttestation(argv.slice(1), io);
      if (!refusal) return EXIT.ok;
      // The report (words or JSON) is on stdout already: only the one-line reason is left.
      writeLine(io.stderr, errorLine(refusal));
      return refusal.exitCode;
    }
    const command = parseArguments(argv);
    json = command.command !== 'help' && command.json;
    await dispatch(command, io);
    return EXIT.ok;
  } catch (error) {
    // The target's tpmvscmgr already said everything: end with its exit code.
    if (error instanceof RemoteExit) return error.exitCode;
    if (error instanceof RequestAborted || error instanceof PromptInterrupted || io.signal.aborted) {
      writeLine(io.stderr, 'tpmvscmgr: interrupted; nothing was created');
      return EXIT_INTERRUPTED;
    }
    const failure =
      error instanceof TpmvscError ? error : new TpmvscError('INTERNAL', error instanceof Error ? error.name : undefined, { cause: error });
    writeLine(io.stderr, errorLine(failure));
    if (json) {
      writeLine(io.stdout, JSON.stringify({ ok: false, error: { code: failure.code, message: failure.message }, exitCode: failure.exitCode }));
    }
    return failure.exitCode;
  }
}
