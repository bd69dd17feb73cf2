/**
 * Hierarchy passwords set the way admins set them: with tpm2-tools against a test's swtpm.
 * swtpm serves one client at a time, so close any Tpm on it before calling these.
 *
 *   await setHierarchyPassword(swtpm.tcti, 'owner', 'ownerpass');   // tpm2_changeauth -c owner
 */
import { runProgram } from './stack.js';

export type Hierarchy = 'owner' | 'endorsement' | 'lockout';

async function tpm2(tool: string, args: string[]): Promise<void> {
  const result = await runProgram(tool, args, { timeoutMs: 30_000 });
  if (result.code !== 0) throw new Error(`${tool} failed (${result.code}): ${result.stderr.trim()}`);
}

/** tpm2_changeauth -c HIERARCHY NEW, from an empty password. */
export async function setHierarchyPassword(tcti: string, hierarchy: Hierarchy, password: string): Promise<void> {
  await tpm2('tpm2_changeauth', ['-T', tcti, '-c', hierarchy, password]);
}

/** tpm2_dictionarylockout -c -p PASSWORD: clears the DA counter; fails while the lockout hierarchy is locked out. */
export function clearDictionaryLockout(tcti: string, lockoutPassword: string): Promise<{ code: number; stderr: string }> {
  return runProgram('tpm2_dictionarylockout', ['-T', tcti, '-c', '-p', lockoutPassword], { timeoutMs: 30_000 });
}
