/** What the card vaults leave in a TPM, read with tpm2-tools (swtpm takes one client: stop the daemon first). */
import { runProgram, type Stack } from './stack.js';

/** Persistent handles (0x811563xx) and NV indices (0x011563xx) of the vault. */
export async function vaultTpmObjects(stack: Stack): Promise<string[]> {
  const found: string[] = [];
  for (const kind of ['handles-persistent', 'handles-nv-index']) {
    const { stdout } = await runProgram('tpm2_getcap', ['-T', stack.swtpm.tcti, kind]);
    found.push(...stdout.split('\n').map((line) => line.replace(/^-\s*/, '').trim()).filter((h) => /^0x(811563|0?11563)/i.test(h)));
  }
  return found;
}
