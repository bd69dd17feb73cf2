/**
 * create's warnings for the well-known secrets (/AdminKey, /PIN, /PUK DEFAULT): Windows allows
 * them and so do we, but here every local account can reach the card (pcscd's socket is open to
 * all users), so a well-known secret is a key anyone can use. One line each, naming the fix.
 */
import type { CreateCommand } from './parse_arguments.js';

const WHO = 'anyone who can reach the card (every local account: pcscd\'s socket is open to all)';

/** The warnings for this create command, in the order admin key, PIN, PUK; empty when none applies. */
export function wellKnownSecretWarnings(command: Pick<CreateCommand, 'adminKey' | 'pin' | 'puk'>): string[] {
  const warnings: string[] = [];
  if (command.adminKey === 'DEFAULT') {
    // With a PUK the admin key cannot unblock the PIN (Windows' rule): it still manages the keys.
    const harm =
      command.puk === null
        ? 'can reset its PIN with that key and then use the owner\'s keys'
        : 'can replace or delete its keys and certificates with that key';
    warnings.push(`warning: /AdminKey DEFAULT is the well-known key 0102...0708: ${WHO} ${harm}; use /AdminKey RANDOM or PROMPT`);
  }
  if (command.pin === 'DEFAULT') {
    warnings.push(
      `warning: /PIN DEFAULT is the well-known PIN 12345678: ${WHO} can use the card's keys with it; ` +
        'use /PIN PROMPT, or change it before the card holds a key (yubico-piv-tool -a change-pin)',
    );
  }
  if (command.puk === 'DEFAULT') {
    warnings.push(
      `warning: /PUK DEFAULT is the well-known PUK 12345678: ${WHO} can set a new PIN with it and use the card's keys; ` +
        'use /PUK PROMPT, or change it (yubico-piv-tool -a change-puk)',
    );
  }
  return warnings;
}
