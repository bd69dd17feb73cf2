/**
 * A swtpm state provisioned like a real TPM: EK key pairs and EK certificates in NV, made by
 * swtpm_setup with swtpm_localca (a test-owned root + intermediate CA created with certtool).
 *
 *   const ca = await createLocalCa(dir);                  // the "TPM manufacturer"
 *   const stateDir = await provisionEkState(dir, ca);     // pass to startSwtpm({ stateDir })
 *   ca.rootsDir                                           // its root + intermediate PEMs (for tpmvsc-ca --ek-roots)
 */
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface LocalCa {
  dir: string;
  /** Config for swtpm_localca. */
  config: string;
  /** Folder holding only the root and intermediate certificates (PEM). */
  rootsDir: string;
}

/** An empty swtpm_localca state; the root + intermediate are created by the first provisioning. */
export async function createLocalCa(parent: string, name = 'manufacturer'): Promise<LocalCa> {
  const dir = join(parent, name);
  await mkdir(dir, { recursive: true });
  const config = join(dir, 'swtpm-localca.conf');
  await writeFile(
    config,
    [`statedir = ${dir}`, `signingkey = ${join(dir, 'signkey.pem')}`, `issuercert = ${join(dir, 'issuercert.pem')}`, `certserial = ${join(dir, 'certserial')}`, ''].join('\n'),
  );
  return { dir, config, rootsDir: join(dir, 'roots') };
}

/** A new swtpm state directory with RSA-2048 and ECC P-384 EKs and their certificates in NV. */
export async function provisionEkState(parent: string, ca: LocalCa): Promise<string> {
  const work = await mkdtemp(join(parent, 'tpm-'));
  const stateDir = join(work, 'state');
  const certsDir = join(work, 'ek-certs');
  await mkdir(stateDir);
  await mkdir(certsDir);
  const options = join(work, 'options');
  await writeFile(options, '--platform-manufacturer tpmvsc-test\n--platform-version 2.1\n--platform-model swtpm\n');
  const setupConf = join(work, 'swtpm_setup.conf');
  await writeFile(
    setupConf,
    [`create_certs_tool = /usr/bin/swtpm_localca`, `create_certs_tool_config = ${ca.config}`, `create_certs_tool_options = ${options}`, 'active_pcr_banks = sha256', ''].join('\n'),
  );
  await run('swtpm_setup', ['--tpm2', '--tpmstate', stateDir, '--create-ek-cert', '--config', setupConf, '--write-ek-cert-files', certsDir, '--overwrite'], { timeout: 60_000 });
  await mkdir(ca.rootsDir, { recursive: true });
  await copyFile(join(ca.dir, 'swtpm-localca-rootca-cert.pem'), join(ca.rootsDir, 'root.pem'));
  await copyFile(join(ca.dir, 'issuercert.pem'), join(ca.rootsDir, 'intermediate.pem'));
  return stateDir;
}
