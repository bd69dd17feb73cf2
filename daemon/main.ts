#!/usr/bin/env node
/**
 * tpmvscd: hosts every virtual smart card of this machine.
 *
 *   tpmvscd [--tcti T] [--state-dir D] [--socket S] [--vpcd HOST:PORT] [--readers N]
 *   tpmvscd register-readers --conf-dir DIR --driver-dir DIR [pool options]
 *
 * Logs go to stderr, one line per event, from diagnostics channels; never a secret.
 */
import { subscribe } from 'node:diagnostics_channel';
import { Tpm, TpmProtocolError, type TpmProtocolErrorCode } from '../tpm/index.js';
import { TpmvscError, EXIT } from '../common/errors.js';
import { asksForVersion, productVersion } from '../common/product_version.js';
import { CardDirectory } from './card_directory.js';
import { CardManager } from './card_manager.js';
import { ControlServer } from './control_server.js';
import { DAEMON_HELP, OWNER_AUTH_CREDENTIAL, parseDaemonArguments, type TpmPasswordSource, type RunConfig } from './config.js';
import { readTpmPassword } from './tpm_password_file.js';
import { registerReaders } from './reader_config.js';
import { applyLockoutPolicy } from './tpm_lockout_policy.js';

const LOG_CHANNELS = ['tpmvsc:cards', 'tpmvsc:control', 'tpmvsc:vpcd_link', 'tpmvsc:applet', 'tpmvsc:daemon'];

function log(line: string): void {
  process.stderr.write(`tpmvscd: ${line}\n`);
}

/** The SRK name is pinned at first use: a TPM presenting another one later is refused. */
async function openTpm(config: RunConfig, directory: CardDirectory, ownerAuth: Uint8Array | undefined): Promise<Tpm> {
  const pinned = await directory.readSetting<{ srkName: string }>('tpm.json');
  const expectedSrkName = pinned ? new Uint8Array(Buffer.from(pinned.srkName, 'hex')) : undefined;
  const tpm = await Tpm.open({
    tcti: config.tcti,
    ...(expectedSrkName ? { expectedSrkName } : {}),
    ...(ownerAuth ? { ownerAuth } : {}),
  });
  if (!pinned) {
    const name = await tpm.storageRootName();
    await directory.writeSetting('tpm.json', { srkName: Buffer.from(name).toString('hex') });
  }
  return tpm;
}

/** What to tell the admin when the owner hierarchy refused the daemon (never the password). */
function ownerAuthProblem(code: TpmProtocolErrorCode, file: TpmPasswordSource | undefined): string | undefined {
  const where = file ? `${file.path} (${file.source})` : 'the owner password file';
  switch (code) {
    case 'OWNER_AUTH_REQUIRED':
      return `the TPM's owner hierarchy has a password: give it with --owner-auth-file PATH (or the systemd credential ${OWNER_AUTH_CREDENTIAL})`;
    case 'OWNER_AUTH_REFUSED':
      return `the TPM's owner hierarchy has another password than the one in ${where}: put the one set with tpm2_changeauth -c owner in it`;
    case 'OWNER_AUTH_NOT_SET':
      return `an owner password is given in ${where} but the TPM's owner hierarchy has none: remove that setting`;
    default:
      return undefined;
  }
}

async function run(config: RunConfig): Promise<void> {
  for (const name of LOG_CHANNELS) {
    subscribe(name, (message) => log(`${name.slice('tpmvsc:'.length)} ${JSON.stringify(message)}`));
  }
  process.umask(0o077);
  const directory = new CardDirectory(config.stateDir);
  await directory.prepare();
  const ownerAuth = config.ownerAuthFile ? await readTpmPassword(config.ownerAuthFile) : undefined;
  if (ownerAuth && config.ownerAuthFile) log(`TPM owner password from ${config.ownerAuthFile.source}`);
  const endorsementAuth = config.endorsementAuthFile ? await readTpmPassword(config.endorsementAuthFile) : undefined;
  if (endorsementAuth && config.endorsementAuthFile) log(`TPM endorsement password from ${config.endorsementAuthFile.source}`);
  let tpm: Tpm;
  try {
    tpm = await openTpm(config, directory, ownerAuth);
  } catch (error) {
    if (error instanceof TpmProtocolError) {
      const detail = ownerAuthProblem(error.code, ownerAuth ? config.ownerAuthFile : undefined);
      if (detail) throw new TpmvscError('TPM_OWNER_AUTH', detail, { cause: error });
    }
    throw new TpmvscError('TPM_UNAVAILABLE', `${config.tcti}: ${(error as Error).message}`, { cause: error });
  }
  await applyLockoutPolicy(tpm, config.tpmLockout);
  const cards = new CardManager({
    tpm,
    tcti: config.tcti,
    directory,
    vpcdHost: config.vpcd.host,
    basePort: config.vpcd.port,
    readers: config.readers,
    friendlyName: config.readerName,
    readerNaming: config.readerNaming,
    version: productVersion(),
    attestationCa: config.attestationCa,
    endorsementAuth,
    ...(ownerAuth ? { vaultOptions: { ownerAuth } } : {}),
  });
  await cards.start();
  const control = new ControlServer({ socketPath: config.socketPath, cards, ...config.control });
  await control.listen();
  log(`ready: ${(await cards.list()).length} card(s), control socket ${config.socketPath}, TPM ${config.tcti}`);

  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log(`${signal}: stopping`);
    await control.close();
    await cards.stop();
    await tpm.close();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

async function main(): Promise<void> {
  if (asksForVersion(process.argv.slice(2))) {
    process.stdout.write(`tpmvscd ${productVersion()}\n`);
    return;
  }
  const config = parseDaemonArguments(process.argv.slice(2), process.env);
  switch (config.command) {
    case 'help':
      process.stdout.write(DAEMON_HELP);
      return;
    case 'register-readers': {
      const result = await registerReaders({
        confDir: config.confDir,
        driverDir: config.driverDir,
        readers: config.readers,
        basePort: config.vpcd.port,
        friendlyName: config.readerName,
        naming: config.readerNaming,
      });
      process.stdout.write(`${result.configFile}\n`);
      for (const reader of result.readers) process.stdout.write(`  ${reader.name}  (port ${reader.port})\n`);
      if (result.disabledStockConfig) process.stdout.write(`disabled stock ${result.disabledStockConfig}\n`);
      return;
    }
    case 'run':
      await run(config);
  }
}

main().catch((error: unknown) => {
  if (error instanceof TpmvscError) {
    log(error.message);
    process.exit(error.exitCode);
  }
  log(`fatal: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(EXIT.failure);
});
