/**
 * ssh runs its command through the remote user's shell as ONE string, so every word we send
 * must reach the remote program unchanged whatever it contains. Single quotes make the POSIX
 * shells (sh, bash, dash, zsh, ksh) take everything literally except the single quote itself,
 * which is closed, written as \' and reopened:   it's  ->  'it'\''s'
 */

/** One word, quoted for a POSIX shell; safe words of plain characters stay readable. */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_\/.:=@%+,-]+$/.test(word)) return word;
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** A command line for a POSIX shell: each word quoted, joined by spaces. */
export function shellCommandLine(words: readonly string[]): string {
  return words.map(shellQuote).join(' ');
}
