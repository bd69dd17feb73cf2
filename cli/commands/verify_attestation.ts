/**
 * tpmvscmgr verify-attestation --ca CA.pem SLOT_CERT.pem AIK_CERT.pem [--slot 9a] [--serial N] [--json]
 * tpmvscmgr verify-attestation --self-issued SLOT_CERT.pem AIK_CERT.pem [...]
 *
 * Checks, without the daemon, that the slot certificate (yubico-piv-tool -a attest) was issued
 * by the card's AIK, the AIK certificate by the CA (or, --self-issued / --ca AIK_CERT.pem for an
 * AIK_ONLY card, by the AIK itself), the TPM's evidence inside it and the attested key itself
 * (attestation/verify.ts). Prints every check with its result, and what no attestation proves.
 * Exit 0 when every check passed, 1 when one failed (named on stderr), 2 on usage.
 */
import { readFile } from 'node:fs/promises';
import { TpmvscError } from '../../common/errors.js';
import { AttestationError } from '../../attestation/attestation_error.js';
import { certificatesFromPem } from '../../attestation/certificate_builder.js';
import { checkAttestation, type VerifyReport } from '../../attestation/verify.js';
import { writeLine, type CliIo } from '../cli_io.js';


export const VERIFY_ATTESTATION_HELP = `Usage: tpmvscmgr verify-attestation --ca CA.pem SLOT_CERT.pem AIK_CERT.pem [--slot SLOT] [--serial N] [--json]
       tpmvscmgr verify-attestation --self-issued SLOT_CERT.pem AIK_CERT.pem [--slot SLOT] [--serial N] [--json]

Verifies a key attestation of a TPM virtual smart card: SLOT_CERT (from ATTEST, e.g.
yubico-piv-tool -a attest -s 9a) signed by the card's AIK, AIK_CERT (object 5FFF01, e.g.
yubico-piv-tool -a read-certificate -s f9) signed by the CA (tpmvsc-ca's ca.pem), the TPM's
TPM2_Certify evidence in SLOT_CERT, and the attested key itself: the certificate's key is the
certified TPM object, with a card key's attributes (fixedTPM, fixedParent, sensitiveDataOrigin:
generated in the TPM, cannot leave it) and policy, for the slot and card the evidence names.
For a card created with /attestation AIK_ONLY the AIK certificate is self-issued: use
--self-issued (it proves the key is in the same TPM as that AIK, not which TPM).

  --slot SLOT     refuse unless the evidence is for this PIV slot (hex: 9a, 9c, 9d, 9e, 82..95)
  --serial N      refuse unless the evidence is for the card with this serial
  --json          one JSON object: {"ok", "verified", "checks": [{"check", "result", "detail"}],
                  "slot", "serial", "pinPolicy", "touchPolicy", "key", "aikTrust", "notProven", ...}

Prints each check (ok / warn / FAIL) and what no attestation can prove. Files may be PEM or DER.
Exit 0: verified; 1: a check failed (the reason on stderr); 2: usage.
`;

interface VerifyArguments {
  ca: string | undefined;
  selfIssued: boolean;
  json: boolean;
  slot: number | undefined;
  serial: number | undefined;
  files: string[];
}

function usage(detail: string): TpmvscError {
  return new TpmvscError('USAGE', `${detail} (see tpmvscmgr verify-attestation --help)`);
}

function parse(argv: readonly string[]): VerifyArguments | 'help' {
  const result: VerifyArguments = { ca: undefined, selfIssued: false, json: false, slot: undefined, serial: undefined, files: [] };
  const value = (i: number, option: string, what: string): string => {
    const next = argv[i];
    if (next === undefined) throw usage(`${option} needs ${what}`);
    return next;
  };
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    const lower = token.toLowerCase();
    if (lower === '--help' || lower === '-h' || lower === '/?') return 'help';
    if (lower === '--ca' || lower === '/ca') {
      if (result.ca !== undefined) throw usage('--ca is given more than once');
      result.ca = value(++i, '--ca', 'a file');
    } else if (lower === '--slot' || lower === '/slot') {
      const text = value(++i, '--slot', 'a PIV slot in hex, e.g. 9a');
      if (!/^[0-9a-f]{2}$/i.test(text)) throw usage(`--slot takes a PIV slot in hex (9a, 9c, 9d, 9e, 82..95), not ${text.slice(0, 20)}`);
      result.slot = parseInt(text, 16);
    } else if (lower === '--serial' || lower === '/serial') {
      const text = value(++i, '--serial', 'the card serial (a decimal number)');
      if (!/^\d{1,10}$/.test(text) || Number(text) > 0xffffffff) throw usage(`--serial takes the card serial as a decimal number, not ${text.slice(0, 20)}`);
      result.serial = Number(text);
    } else if (lower === '--self-issued' || lower === '/self-issued') result.selfIssued = true;
    else if (lower === '--json' || lower === '/json') result.json = true;
    else if (token.startsWith('--')) throw usage(`unknown option ${token.slice(0, 40)}`);
    else result.files.push(token);
  }
  if (result.files.length !== 2) throw usage('give the slot certificate and the AIK certificate');
  if (result.ca === undefined && !result.selfIssued) throw usage('give --ca CA.pem, or --self-issued for an AIK_ONLY card');
  if (result.ca !== undefined && result.selfIssued) throw usage('--ca and --self-issued exclude each other');
  return result;
}

async function certificate(path: string, what: string): Promise<Uint8Array> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (e) {
    throw new TpmvscError('USAGE', `cannot read the ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
  const [first] = certificatesFromPem(bytes);
  if (!first) throw new AttestationError('BAD_INPUT', `the ${what} ${path} holds no certificate (PEM or DER)`);
  return first;
}

const MARK = { passed: 'ok  ', warning: 'warn', failed: 'FAIL' } as const;

function printWords(report: VerifyReport, io: CliIo): void {
  for (const { result, detail } of report.checks) writeLine(io.stdout, `${MARK[result]}  ${detail}`);
  if (report.verified) {
    const slot = report.slot!.toString(16).padStart(2, '0');
    writeLine(io.stdout, `verified: the key in slot ${slot} of card ${report.serial} was generated in a TPM and cannot leave it${report.pinPolicy ? ` (PIN policy ${report.pinPolicy} as the card states it)` : ''}`);
  }
  for (const line of report.notProven) writeLine(io.stdout, `not proven: ${line}`);
}

/**
 * Runs the command and prints its report on stdout. Resolves to the refusal when a check failed
 * (runCli prints its one line on stderr); usage errors are thrown.
 */
export async function runVerifyAttestation(argv: readonly string[], io: CliIo): Promise<AttestationError | undefined> {
  const parsed = parse(argv);
  if (parsed === 'help') {
    io.stdout.write(VERIFY_ATTESTATION_HELP);
    return undefined;
  }
  const slotCertificate = await certificate(parsed.files[0]!, 'slot certificate');
  const aikCertificate = await certificate(parsed.files[1]!, 'AIK certificate');
  const caCertificate = parsed.ca === undefined ? aikCertificate : await certificate(parsed.ca, 'CA certificate');
  const report = checkAttestation({ slotCertificate, aikCertificate, caCertificate, expect: { slot: parsed.slot, serial: parsed.serial } });
  const refusal = report.verified ? undefined : new AttestationError('VERIFY_FAILED', report.reason ?? 'a check failed');
  if (parsed.json) {
    const failure = refusal ? { error: { code: refusal.code, message: refusal.message }, exitCode: refusal.exitCode } : {};
    writeLine(io.stdout, JSON.stringify({ ok: report.verified, ...report, ...failure }));
  } else {
    printWords(report, io);
  }
  return refusal;
}
