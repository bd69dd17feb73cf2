import test from 'ava';
import { DEFAULT_PIN_POLICY } from '../../common/control_protocol.js';
import { EXIT, TpmvscError, type ErrorCode } from '../../common/errors.js';
import { parseArguments, type CliCommand } from '../../cli/parse_arguments.js';

interface Row {
  name: string;
  argv: string[];
  want: Partial<CliCommand> | { code: ErrorCode; message: RegExp };
}

const DEFAULT_CREATE = {
  command: 'create',
  quiet: false,
  name: 'Card',
  adminKey: 'DEFAULT',
  pin: 'DEFAULT',
  puk: null,
  generate: false,
  pinPolicy: null,
  pinLifetime: null,
  machine: null,
  attestation: null,
  json: false,
  socketPath: undefined,
} as const;

const rows: Row[] = [
  // accepted
  {
    name: 'unblock with the admin key, new PIN prompted',
    argv: ['unblock', '/instance', 'root\\smartcardreader\\0002', '/adminkey', 'prompt', '/PIN', 'PROMPT'],
    want: { command: 'unblock', instance: 'ROOT\\SMARTCARDREADER\\0002', adminKey: 'PROMPT', pin: 'PROMPT', quiet: false },
  },
  { name: 'unblock: new PIN defaults to 12345678', argv: ['unblock', '/instance', 'ROOT\\SMARTCARDREADER\\0000', '/AdminKey', 'DEFAULT'], want: { pin: 'DEFAULT' } },
  { name: 'unblock needs /AdminKey', argv: ['unblock', '/instance', 'ROOT\\SMARTCARDREADER\\0000'], want: { code: 'USAGE', message: /unblock needs \/AdminKey DEFAULT or PROMPT/ } },
  { name: 'unblock has no RANDOM admin key', argv: ['unblock', '/instance', 'ROOT\\SMARTCARDREADER\\0000', '/AdminKey', 'RANDOM'], want: { code: 'USAGE', message: /\/AdminKey must be DEFAULT or PROMPT/ } },
  { name: 'unblock needs /instance', argv: ['unblock', '/AdminKey', 'DEFAULT'], want: { code: 'USAGE', message: /unblock needs \/instance/ } },
  { name: 'minimal create', argv: ['create', '/name', 'Card', '/AdminKey', 'DEFAULT'], want: DEFAULT_CREATE },
  {
    name: 'switches and keywords are case-insensitive, / and -- are equivalent',
    argv: ['CREATE', '--NAME', 'Card', '/adminkey', 'random', '--pin', 'Prompt', '/puk', 'default', '/Generate', '/QUIET', '--json'],
    want: { ...DEFAULT_CREATE, adminKey: 'RANDOM', pin: 'PROMPT', puk: 'DEFAULT', generate: true, quiet: true, json: true },
  },
  {
    name: 'pin policy as in Microsoft\'s example',
    argv: ['create', '/name', 'VirtualSmartCardForCorpAccess', '/PIN', 'PROMPT', '/pinpolicy', 'minlen', '4', 'maxlen', '8', '/AdminKey', 'DEFAULT', '/generate'],
    want: { name: 'VirtualSmartCardForCorpAccess', pin: 'PROMPT', generate: true, pinPolicy: { ...DEFAULT_PIN_POLICY, minLength: 4, maxLength: 8 } },
  },
  {
    name: 'pin policy character classes',
    argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'UPPERCASE', 'required', 'digits', 'DISALLOWED', 'specialchars', 'allowed', 'lowercase', 'Required'],
    want: { pinPolicy: { ...DEFAULT_PIN_POLICY, uppercase: 'REQUIRED', digits: 'DISALLOWED', lowercase: 'REQUIRED' } },
  },
  { name: 'empty /pinpolicy keeps the defaults', argv: ['create', '/name', 'C', '/AdminKey', 'PROMPT', '/PIN', 'PROMPT', '/pinpolicy'], want: { pinPolicy: DEFAULT_PIN_POLICY, adminKey: 'PROMPT' } },
  { name: '/machine parses (refused later as not supported)', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/machine', 'host1'], want: { machine: 'host1' } },
  { name: '/pinlifetime seconds', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/pinlifetime', '300'], want: { pinLifetime: { seconds: 300, once: false } } },
  { name: '/pinlifetime with ONCE, any case', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PinLifetime', '20', 'once'], want: { pinLifetime: { seconds: 20, once: true } } },
  { name: '/pinlifetime UNLIMITED', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '--pinlifetime', 'Unlimited'], want: { pinLifetime: { seconds: null, once: false } } },
  {
    name: '/pinlifetime after Windows\' /pinpolicy list leaves the policy as Windows parses it',
    argv: ['create', '/name', 'C', '/PIN', 'PROMPT', '/pinpolicy', 'minlen', '4', 'maxlen', '8', '/pinlifetime', '60', 'ONCE', '/AdminKey', 'DEFAULT'],
    want: { pinPolicy: { ...DEFAULT_PIN_POLICY, minLength: 4, maxLength: 8 }, pinLifetime: { seconds: 60, once: true } },
  },
  { name: '/pinlifetime without a value', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/pinlifetime'], want: { code: 'USAGE', message: /\/pinlifetime takes a number of seconds from 1 to 86400 or UNLIMITED, then optionally ONCE/ } },
  { name: '/pinlifetime 0', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/pinlifetime', '0'], want: { code: 'USAGE', message: /from 1 to 86400/ } },
  { name: '/pinlifetime too long', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/pinlifetime', '86401'], want: { code: 'USAGE', message: /from 1 to 86400/ } },
  { name: '/pinlifetime ONCE alone', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/pinlifetime', 'once'], want: { code: 'USAGE', message: /\/pinlifetime takes/ } },
  { name: '/pinlifetime with a stray word', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/pinlifetime', '30', 'twice'], want: { code: 'USAGE', message: /\/pinlifetime takes/ } },
  { name: '/attestation parses', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/attestation', 'aik_only'], want: { attestation: 'AIK_ONLY' } },
  { name: '--socket', argv: ['list', '--socket', '/tmp/x.sock'], want: { command: 'list', socketPath: '/tmp/x.sock', json: false } },
  { name: 'destroy canonicalises the instance', argv: ['destroy', '/instance', 'root\\smartcardreader\\0003'], want: { command: 'destroy', instance: 'ROOT\\SMARTCARDREADER\\0003', quiet: false, machine: null } },
  { name: 'status without instance', argv: ['status'], want: { command: 'status', instance: null } },
  { name: 'status with instance', argv: ['status', '/instance', 'ROOT\\SMARTCARDREADER\\0015'], want: { command: 'status', instance: 'ROOT\\SMARTCARDREADER\\0015' } },
  { name: '/? alone', argv: ['/?'], want: { command: 'help', topic: undefined } },
  { name: '--help alone', argv: ['--help'], want: { command: 'help', topic: undefined } },
  { name: '-h after a command', argv: ['destroy', '-h'], want: { command: 'help', topic: 'destroy' } },
  { name: '/? wins over other switches', argv: ['create', '/name', 'x', '/?'], want: { command: 'help', topic: 'create' } },
  { name: 'a name may contain spaces and start with /', argv: ['create', '/name', '/my card', '/AdminKey', 'DEFAULT'], want: { name: '/my card' } },

  // refused
  { name: 'no command', argv: [], want: { code: 'USAGE', message: /missing command/ } },
  { name: 'unknown command', argv: ['frobnicate'], want: { code: 'USAGE', message: /unknown command "frobnicate"/ } },
  { name: 'unknown switch', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/bogus'], want: { code: 'USAGE', message: /unknown switch \/bogus for create/ } },
  { name: 'switch of another command', argv: ['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0000', '/name', 'x'], want: { code: 'USAGE', message: /unknown switch \/name for destroy/ } },
  { name: 'stray word', argv: ['create', 'Card'], want: { code: 'USAGE', message: /unexpected argument "Card"/ } },
  { name: 'missing /name', argv: ['create', '/AdminKey', 'DEFAULT'], want: { code: 'USAGE', message: /create needs \/name/ } },
  { name: 'missing /AdminKey', argv: ['create', '/name', 'C'], want: { code: 'USAGE', message: /create needs \/AdminKey DEFAULT, PROMPT or RANDOM/ } },
  { name: '/name without value', argv: ['create', '/AdminKey', 'DEFAULT', '/name'], want: { code: 'USAGE', message: /\/name needs a value/ } },
  { name: '/name followed by a switch', argv: ['create', '/name', '/AdminKey', 'DEFAULT'], want: { code: 'USAGE', message: /\/name needs a value/ } },
  { name: 'name too long', argv: ['create', '/name', 'x'.repeat(65), '/AdminKey', 'DEFAULT'], want: { code: 'USAGE', message: /\/name must be 1 to 64 printable/ } },
  { name: 'name with a control character', argv: ['create', '/name', 'a\tb', '/AdminKey', 'DEFAULT'], want: { code: 'USAGE', message: /\/name must be/ } },
  { name: 'bad /AdminKey keyword (a hex key is never accepted in argv)', argv: ['create', '/name', 'C', '/AdminKey', '010203040506070801020304050607080102030405060708'], want: { code: 'USAGE', message: /^\/AdminKey must be DEFAULT, PROMPT or RANDOM$/ } },
  { name: 'bad /PIN keyword (a PIN is never accepted in argv)', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', '12345678'], want: { code: 'USAGE', message: /^\/PIN must be DEFAULT or PROMPT$/ } },
  { name: 'bad /PUK keyword', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PUK', 'RANDOM'], want: { code: 'USAGE', message: /^\/PUK must be DEFAULT or PROMPT$/ } },
  { name: 'duplicate switch', argv: ['create', '/name', 'C', '/name', 'D', '/AdminKey', 'DEFAULT'], want: { code: 'USAGE', message: /\/name is given more than once/ } },
  { name: '/pinpolicy without /PIN', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/pinpolicy', 'minlen', '4'], want: { code: 'USAGE', message: /\/pinpolicy is only valid with \/PIN PROMPT/ } },
  { name: '/pinpolicy with /PIN DEFAULT', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/pinpolicy'], want: { code: 'USAGE', message: /only valid with \/PIN PROMPT/ } },
  { name: 'minlen > maxlen', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'minlen', '8', 'maxlen', '7'], want: { code: 'USAGE', message: /minlen \(8\) must not exceed maxlen \(7\)/ } },
  { name: 'maxlen below 6 (no PIV client sets such a PIN)', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'minlen', '4', 'maxlen', '4'], want: { code: 'USAGE', message: /^\/pinpolicy maxlen must be an integer from 6 to 8: PIV clients set no PIN shorter than 6/ } },
  { name: 'minlen above 8', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'minlen', '10'], want: { code: 'USAGE', message: /^\/pinpolicy minlen must be an integer from 4 to 8: PIV clients send at most 8 bytes/ } },
  { name: 'minlen below 4', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'minlen', '3'], want: { code: 'USAGE', message: /^\/pinpolicy minlen must be an integer from 4 to 8$/ } },
  { name: 'maxlen above 8 (Windows allows 127)', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'maxlen', '12'], want: { code: 'USAGE', message: /^\/pinpolicy maxlen must be an integer from 6 to 8: PIV clients send at most 8 bytes \(yubico-piv-tool refuses longer ones, OpenSC answers CKR_PIN_LEN_RANGE\)$/ } },
  { name: 'maxlen 127', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'maxlen', '127'], want: { code: 'USAGE', message: /maxlen must be an integer from 6 to 8: PIV/ } },
  { name: 'minlen not a number', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'minlen', 'four'], want: { code: 'USAGE', message: /minlen needs a number/ } },
  { name: 'policy option without value', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'maxlen'], want: { code: 'USAGE', message: /maxlen needs a value/ } },
  { name: 'unknown policy option', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'symbols', 'REQUIRED'], want: { code: 'USAGE', message: /unknown \/pinpolicy option "symbols"/ } },
  { name: 'bad tri-state', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'digits', 'MAYBE'], want: { code: 'USAGE', message: /digits must be ALLOWED, DISALLOWED or REQUIRED/ } },
  { name: 'every class disallowed', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/PIN', 'PROMPT', '/pinpolicy', 'uppercase', 'DISALLOWED', 'lowercase', 'DISALLOWED', 'digits', 'DISALLOWED', 'specialchars', 'DISALLOWED'], want: { code: 'USAGE', message: /disallows every character class/ } },
  { name: 'bad /attestation', argv: ['create', '/name', 'C', '/AdminKey', 'DEFAULT', '/attestation', 'FULL'], want: { code: 'USAGE', message: /\/attestation must be AIK_AND_CERT or AIK_ONLY/ } },
  { name: 'destroy without /instance', argv: ['destroy'], want: { code: 'USAGE', message: /destroy needs \/instance/ } },
  { name: 'bad instance syntax', argv: ['destroy', '/instance', '0000'], want: { code: 'USAGE', message: /\/instance must be an instance ID like ROOT\\SMARTCARDREADER\\0000/ } },
  { name: 'instance beyond 16 readers', argv: ['destroy', '/instance', 'ROOT\\SMARTCARDREADER\\0016'], want: { code: 'USAGE', message: /0000 to 0015/ } },
  { name: 'list takes no /instance', argv: ['list', '/instance', 'ROOT\\SMARTCARDREADER\\0000'], want: { code: 'USAGE', message: /unknown switch \/instance for list/ } },
];

for (const row of rows) {
  test(`parseArguments: ${row.name}`, (t) => {
    if ('code' in row.want) {
      const want = row.want;
      const error = t.throws(() => parseArguments(row.argv), { instanceOf: TpmvscError });
      t.is(error?.code, want.code);
      t.regex(error?.detail ?? '', want.message);
      t.is(error?.exitCode, EXIT.usage);
    } else {
      t.like(parseArguments(row.argv), row.want as Record<string, unknown>);
    }
  });
}
