/**
 * tpmvscmgr's help: the usage documentation. `tpmvscmgr /?` prints the overview and the
 * sections every command shares (options, /machine, PIN and PUK rules, exit codes) once;
 * `tpmvscmgr <command> /?` prints that command's own part and points to the overview.
 */
import {
  DEFAULT_PIN, DEFAULT_PUK, PIV_CLIENT_SET_MIN_LENGTH, PIV_SECRET_MAX_LENGTH, POLICY_MIN_LENGTH_BOUND, WINDOWS_SECRET_MIN_LENGTH,
} from '../common/pin_rules.js';
import type { CommandName } from './parse_arguments.js';

const EXIT_CODES = `Exit codes:
  0  success
  1  other failure (the daemon could not create the card, internal error)
  2  invalid command line or request (the message names the fix)
  3  not permitted: run as root or as a member of the tpmvsc group
  4  the tpmvscd daemon is not running: the message names the socket tried and how its daemon
     starts (systemctl start tpmvscd, or npm start in the repository)
  5  the TPM is missing, failing, in dictionary-attack lockout, or refused a hierarchy password
     (tpmvscd --endorsement-auth-file)
  6  the limit on the number of smart card readers has been reached (the message says how to
     get more readers)
  7  no virtual smart card has that instance ID
  8  not supported yet
  9  a PIN, PUK or admin key was rejected by the policy or the card
  10 /machine: the computer cannot be reached or logged in to over SSH (unknown host, connection
     refused, SSH login refused)
  11 /machine: tpmvsc is not installed on that computer (no tpmvscmgr on its PATH)
  130 interrupted (Ctrl-C); a card being created is rolled back (also on a /machine)`;

const OPTIONS = `Options of every command:
  /json, --json          print one JSON object on stdout
  /socket <path>         the daemon's control socket (default: $TPMVSC_SOCKET or /run/tpmvsc/control.sock;
                         npm start's daemon listens on ~/.local/share/tpmvsc/control.sock)

Switches are case-insensitive and may also be written with -- (/AdminKey = --adminkey).`;

const MACHINE = `/machine <machine name> (create, destroy, list, status, unblock): runs the command on another
computer over SSH, through that computer's own tpmvscmgr. The name is what ssh accepts as a
destination: host, user@host, ssh://user@host:port or a Host of ~/.ssh/config ($TPMVSC_SSH_CONFIG
names another ssh_config file). ssh asks for its own password or passphrase on the terminal;
PROMPT secrets are asked here and sent only inside the SSH channel. The SSH user must be root or
a member of the tpmvsc group there. Output, errors and exit codes are the target's; /socket names
the target's socket. Ctrl-C during a create rolls the card back on the target.`;

const MAX = PIV_SECRET_MAX_LENGTH;
const SET_MIN = PIV_CLIENT_SET_MIN_LENGTH;
const SECRETS = `PINs and PUKs (the one difference from Windows' tpmvscmgr: the length range PIV clients handle).
PIV clients (OpenSC, yubico-piv-tool, ykman, browsers, ssh) send a PIN or PUK padded to ${MAX} bytes
and no longer, so a longer one could never be entered: it is refused here. Windows' minimums stay:
  PIN without /pinpolicy  exactly ${WINDOWS_SECRET_MIN_LENGTH} characters (Windows' minimum ${WINDOWS_SECRET_MIN_LENGTH} meets PIV's maximum ${MAX})
  PIN with /pinpolicy     minlen..maxlen characters, ${POLICY_MIN_LENGTH_BOUND} <= minlen <= maxlen <= ${MAX}, maxlen >= ${SET_MIN}
  PUK                     exactly ${WINDOWS_SECRET_MIN_LENGTH} characters
All of them printable ASCII. A PIN of ${POLICY_MIN_LENGTH_BOUND} or ${SET_MIN - 1} characters logs in with OpenSC and
yubico-piv-tool, but PIV clients set no PIN shorter than ${SET_MIN} (change-pin, unblock-pin) and ykman
takes none: hence maxlen >= ${SET_MIN}, so the PIN can always be changed and unblocked with them.
Cards created by older versions, whose PIN or PUK may be longer, keep working: the card still
accepts the long value, and every new PIN or PUK has at most ${MAX} characters.
PROMPT reads from the terminal without echo and asks twice. When stdin is not a terminal, each
PROMPT reads one line from stdin, in the order admin key, PIN, PUK.`;

/** Where a command's help sends the reader for the shared sections. */
const SEE_OVERVIEW = 'Options of every command (/json, /socket), /machine, PIN and PUK rules and exit codes: tpmvscmgr /?';

const CREATE = `tpmvscmgr create [/quiet] /name <name> /AdminKey {DEFAULT | PROMPT | RANDOM}
    [/PIN {DEFAULT | PROMPT}] [/PUK {DEFAULT | PROMPT}] [/generate] [/machine <machine name>]
    [/pinpolicy [policy options]] [/attestation {AIK_AND_CERT | AIK_ONLY}]
    [/pinlifetime {<seconds> | UNLIMITED} [ONCE]] [/?]

Creates a TPM virtual smart card (a PIV card in a vpcd reader, keys sealed in the TPM) and prints
its instance ID, ROOT\\SMARTCARDREADER\\000n, as the last line on stdout.

  /quiet        no progress or warning lines on stderr (--json still lists the warnings)
  /name         required: the card's friendly name, 1 to 64 printable ASCII characters
  /AdminKey     required: the 24-byte 3DES administrator key
                  DEFAULT  010203040506070801020304050607080102030405060708
                  PROMPT   ask for 48 hexadecimal characters
                  RANDOM   24 random bytes, never shown: the card cannot be managed (a forgotten PIN
                           means destroy and create again)
  /PIN          DEFAULT  ${DEFAULT_PIN} (the default when /PIN is omitted)
                PROMPT   ask for a PIN: exactly ${WINDOWS_SECRET_MIN_LENGTH} printable ASCII characters, or the /pinpolicy bounds
  /PUK          DEFAULT  ${DEFAULT_PUK};  PROMPT  ask for exactly ${WINDOWS_SECRET_MIN_LENGTH} printable ASCII characters.
                Omitted: the card has no PUK and the PIN is unblocked with the admin key.
  /generate     provision the PIV data objects so middleware can enroll keys right away
  /pinpolicy    only with /PIN PROMPT; options:
                  minlen <n>     minimum PIN length, default ${WINDOWS_SECRET_MIN_LENGTH}, at least ${POLICY_MIN_LENGTH_BOUND}
                  maxlen <n>     maximum PIN length, default ${MAX}, from ${SET_MIN} to ${MAX} (Windows: up to 127;
                                 see "PINs and PUKs" in tpmvscmgr /?), minlen <= maxlen
                  uppercase | lowercase | digits | specialchars  ALLOWED | DISALLOWED | REQUIRED
                                 (default ALLOWED)
  /machine      create the card on another computer, over SSH
  /attestation  AIK_ONLY: the card gets its own attestation key (AIK), self-certified;
                AIK_AND_CERT: the AIK is certified by the attestation CA (tpmvscd --attestation-ca)
                (verify key attestations with: tpmvscmgr verify-attestation --help)
  /pinlifetime  how long the card keeps the PIN verified (not in Windows' tpmvscmgr). Every local
                account can reach the card, and while the PIN is verified anyone can use the
                owner's keys, so the card forgets it:
                  <seconds>  1 to 86400 after the VERIFY (OpenSC's long-lived clients, e.g.
                             ssh-agent, then send the PIN they cached again)
                  UNLIMITED  only power off, reset or logout end it (what real cards do)
                  ONCE       (after either) each VERIFY allows ONE private-key operation: another
                             account's signature right after the owner's needs the PIN
                Omitted: the daemon's default (tpmvscd --pin-lifetime, 30 s unless changed).

DEFAULT admin keys, PINs and PUKs are well known, and every local account can reach the card
(pcscd's socket is open to all users): create warns, one line on stderr for each DEFAULT, that
anyone can then use the card (a DEFAULT admin key without /PUK resets its PIN; with a /PUK it
replaces its keys) and names the fix: /AdminKey RANDOM or PROMPT, /PIN PROMPT, /PUK PROMPT.

Progress lines and warnings go to stderr (/quiet silences both); the instance ID (or, with /json,
{"instance", "reader", "warnings": [the warning lines]}) to stdout.

Example:
  tpmvscmgr create /name "VirtualSmartCardForCorpAccess" /AdminKey RANDOM /PIN PROMPT /generate`;

const DESTROY = `tpmvscmgr destroy [/quiet] /instance <device instance ID> [/machine <machine name>] [/?]

Securely deletes a virtual smart card: its keys are flushed from the TPM and its files removed.
It cannot be recovered.

  /quiet      no progress lines on stderr
  /instance   required: the instance ID printed by create, e.g. ROOT\\SMARTCARDREADER\\0000
  /machine    destroy the card on another computer, over SSH

Example:
  tpmvscmgr destroy /instance ROOT\\SMARTCARDREADER\\0000`;

const LIST = `tpmvscmgr list [/machine <machine name>] [/json]

Lists the virtual smart cards: instance ID, name, PC/SC reader, PUK, creation time.`;

const STATUS = `tpmvscmgr status [/instance <device instance ID>] [/machine <machine name>] [/json]

Shows the daemon (version, TPM, reader pool) and the state of every card, or of one card:
reader link, serial and GUID (as the card's CHUID holds it now), PIN and PUK tries left,
keys. The reader link is "in the reader" once vpcd has
asked the card's ATR over it; "connected, not served by vpcd" when another connection holds
the reader's port; otherwise "not in the reader" and why (e.g. pcscd down).`;

const UNBLOCK = `tpmvscmgr unblock [/quiet] /instance <device instance ID> /AdminKey {DEFAULT | PROMPT}
    [/PIN {DEFAULT | PROMPT}] [/machine <machine name>] [/?]

Unblocks the PIN of a card created without a PUK, as Windows' challenge/response unblock does:
tpmvscmgr proves the admin key to the card through PC/SC and sets a new PIN, which restores the
PIN tries. A card with a PUK is refused: unblock its PIN with the PUK (yubico-piv-tool -a unblock-pin).

  /instance   required: the card, e.g. ROOT\\SMARTCARDREADER\\0000
  /AdminKey   required: DEFAULT (010203...0708) or PROMPT (48 hexadecimal characters)
  /PIN        the new PIN: DEFAULT ${DEFAULT_PIN}, or PROMPT (${POLICY_MIN_LENGTH_BOUND} to ${MAX} characters, and the card's PIN policy)
  /machine    unblock the card on another computer, over SSH

Example:
  tpmvscmgr unblock /instance ROOT\\SMARTCARDREADER\\0000 /AdminKey PROMPT /PIN PROMPT`;

const OVERVIEW = `tpmvscmgr: manage TPM virtual smart cards (the tpmvscd daemon)

  tpmvscmgr create [/quiet] /name <name> /AdminKey {DEFAULT | PROMPT | RANDOM} [/PIN {DEFAULT | PROMPT}]
      [/PUK {DEFAULT | PROMPT}] [/generate] [/machine <machine name>] [/pinpolicy [policy options]]
      [/attestation {AIK_AND_CERT | AIK_ONLY}] [/pinlifetime {<seconds> | UNLIMITED} [ONCE]] [/?]
  tpmvscmgr destroy [/quiet] /instance <device instance ID> [/machine <machine name>] [/?]
  tpmvscmgr list [/machine <machine name>] [/json]
  tpmvscmgr status [/instance <device instance ID>] [/machine <machine name>] [/json]
  tpmvscmgr unblock [/quiet] /instance <device instance ID> /AdminKey {DEFAULT | PROMPT} [/PIN {DEFAULT | PROMPT}]
      [/machine <machine name>] [/?]
  tpmvscmgr verify-attestation {--ca CA.pem | --self-issued} SLOT_CERT.pem AIK_CERT.pem [--slot SLOT] [--serial N] [--json]

tpmvscmgr <command> /? shows the details of a command (verify-attestation --help for that one);
tpmvscmgr --version prints the version.
Only root and members of the tpmvsc group may manage cards.`;

const TOPICS: Record<CommandName, string> = { create: CREATE, destroy: DESTROY, list: LIST, status: STATUS, unblock: UNBLOCK };

/** The overview with every shared section, or one command's own part and a pointer to them. */
export function helpText(topic: CommandName | undefined): string {
  if (topic === undefined) return `${[OVERVIEW, OPTIONS, SECRETS, MACHINE, EXIT_CODES].join('\n\n')}\n`;
  return `${TOPICS[topic]}\n\n${SEE_OVERVIEW}\n`;
}
