/**
 * The product's version, from package.json (two folders up from this file, both in the
 * repository and in dist/), for `--version` and the daemon's status report.
 */
import { readFileSync } from 'node:fs';

let cached: string | undefined;

export function productVersion(): string {
  if (cached !== undefined) return cached;
  for (const relative of ['../package.json', '../../package.json']) {
    try {
      const text = readFileSync(new URL(relative, import.meta.url), 'utf8');
      const parsed = JSON.parse(text) as { name?: string; version?: string };
      if (parsed.name === 'tpmvsc' && typeof parsed.version === 'string') return (cached = parsed.version);
    } catch {
      // not there: try the next place
    }
  }
  return (cached = 'unknown');
}

/** Whether argv asks for the version (`--version`, `-V`, or Windows-style `/version`). */
export function asksForVersion(argv: readonly string[]): boolean {
  return argv.length === 1 && ['--version', '-v', '/version'].includes(argv[0]!.toLowerCase());
}
