/**
 * Child process of the "kill -9 between decrement and check" test (not a test file).
 * Opens the card given on stdin, makes the TPM's Unseal never answer, starts a PIN
 * check, prints "decremented" once the vault is waiting for the Unseal, and waits to be
 * killed. argv[2] = TCTI.
 */
import { Tpm } from '../../tpm/index.js';
import { TpmVault } from '../../vault/tpm_vault.js';

const chunks: Buffer[] = [];
for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
const state: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'));
const tpm = await Tpm.open({ tcti: process.argv[2]! });
const vault = await TpmVault.open(tpm, state);
// From here on the Unseal hangs: the vault has already written remaining-1 when it calls it.
tpm.unseal = () => {
  process.stdout.write('decremented\n');
  return new Promise<Uint8Array>(() => undefined);
};
void vault.verifyPin(new TextEncoder().encode('00000000'));
setInterval(() => undefined, 1000);
