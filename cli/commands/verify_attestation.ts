/**
 * tpmvscmgr verify-attestation --ca CA.pem SLOT_CERT.pem AIK_CERT.pem [--json]
 * tpmvscmgr verify-attestation --self-issued SLOT_CERT.pem AIK_CERT.pem
 *
 * Checks, without the daemon, that the slot certificate (yubico-piv-tool -a attest) was issued
 * by the card's AIK, the AIK certificate by the CA (or, --self-issued / --ca AIK_CERT.pem for an
 * AIK_ONLY card, by the AIK itself), and the TPM's evidence inside it (attestation/verify.ts).
 * Prints each passed check; exits 0 only when every check passed (1 otherwise, 2 on usage).
 */
import { readFile } from 'node:fs/promises';
import { TpmvscError } from '../../common/errors.js';
import { AttestationError } from '../../attestation/attestation_error.js';
import { certificatesFromPem } from '../../attestation/certificate_builder.js';
import { verifyAttestation } from '../../attestation/verify.js';
import { writeLine, type CliIo } from '../cli_io.js';


export const VERIFY_ATTESTATION_HELP = `Usage: tpmvscmgr verify-attestation --ca CA.pem SLOT_CERT.pem AIK_CERT.pem [--json]
       tpmvscmgr verify-attestation --self-issued SLOT_CERT.pem AIK_CERT.pem [--json]

Verifies a key attestation of a TPM virtual smart card: SLOT_CERT (from ATTEST, e.g.
yubico-piv-tool -a attest -s 9a) signed by the card's AIK, AIK_CERT (object 5FFF01, e.g.
yubico-piv-tool -a read-certificate -s f9) signed by the CA (tpmvsc-ca's ca.pem), and the
TPM's TPM2_Certify evidence in SLOT_CERT. For a card created with /attestation AIK_ONLY the AIK
certificate is self-issued: use --self-issued (it proves the key is in the same TPM as that
AIK, not which TPM). Files may be PEM or DER. Exit 0: verified; 1: not verified; 2: usage.
`;

interface VerifyArguments {
  ca: string | undefined;
  selfIssued: boolean;
  json: boolean;
  files: string[];
}

function usage(detail: string): TpmvscError {
  return new TpmvscError('USAGE', `${detail} (see tpmvscmgr verify-attestation --help)`);
}

function parse(argv: readonly string[]): VerifyArguments | 'help' {
  const result: VerifyArguments = { ca: undefined, selfIssued: false, json: false, files: [] };
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    const lower = token.toLowerCase();
    if (lower === '--help' || lower === '-h' || lower === '/?') return 'help';
    if (lower === '--ca' || lower === '/ca') {
      const value = argv[++i];
      if (value === undefined) throw usage('--ca needs a file');
      if (result.ca !== undefined) throw usage('--ca is given more than once');
      result.ca = value;
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

export async function runVerifyAttestation(argv: readonly string[], io: CliIo): Promise<void> {
  const parsed = parse(argv);
  if (parsed === 'help') {
    io.stdout.write(VERIFY_ATTESTATION_HELP);
    return;
  }
  const slotCertificate = await certificate(parsed.files[0]!, 'slot certificate');
  const aikCertificate = await certificate(parsed.files[1]!, 'AIK certificate');
  const caCertificate = parsed.ca === undefined ? aikCertificate : await certificate(parsed.ca, 'CA certificate');
  const report = verifyAttestation({ slotCertificate, aikCertificate, caCertificate });
  if (parsed.json) {
    writeLine(io.stdout, JSON.stringify({ ok: true, ...report }));
    return;
  }
  for (const line of report.checks) writeLine(io.stdout, `ok  ${line}`);
  writeLine(io.stdout, `verified: key in slot ${report.slot.toString(16)} of card ${report.serial} was generated in a TPM and cannot leave it`);
}
