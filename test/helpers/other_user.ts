/**
 * Another local account, as the attacker of the end-to-end tests: runs a program as uid nobody
 * (gid nogroup, no supplementary groups) against the stack's own pcscd. That pcscd lives in a
 * private mount namespace (pcscd.ts), whose /run/pcscd/pcscd.comm is mode 0666 like Debian's:
 * nsenter (root) only enters that namespace, and setpriv drops to nobody before the program
 * starts, so the program has exactly what any local user has on a real machine.
 */
import { runProgram, type CommandResult, type Stack } from './stack.js';

export function runAsNobody(stack: Stack, program: string, args: string[], options: { input?: string } = {}): Promise<CommandResult> {
  const env: NodeJS.ProcessEnv = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: '/nonexistent', LANG: 'C.UTF-8' };
  return runProgram(
    'nsenter',
    [`--mount=/proc/${stack.pcscd.namespacePid}/ns/mnt`, '--', 'setpriv', '--reuid=nobody', '--regid=nogroup', '--clear-groups', '--', program, ...args],
    { env, cwd: '/', ...options },
  );
}
