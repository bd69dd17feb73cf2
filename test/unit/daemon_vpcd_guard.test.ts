import test from 'ava';
import { TpmvscError } from '../../common/errors.js';
import { guardRecordPath } from '../../daemon/vpcd_guard_record.js';
import { describeRange, guardRuleset, guardTableName, readerPortRange } from '../../daemon/vpcd_guard.js';

const ranges: Array<{ name: string; basePort: number; readers: number; want: { first: number; last: number } }> = [
  { name: 'the default pool: 10 readers from 470', basePort: 470, readers: 10, want: { first: 470, last: 479 } },
  { name: 'an odd pool still has its last block\'s second port', basePort: 470, readers: 3, want: { first: 470, last: 473 } },
  { name: 'one reader: a block of two', basePort: 35963, readers: 1, want: { first: 35963, last: 35964 } },
  { name: 'the largest pool', basePort: 470, readers: 16, want: { first: 470, last: 485 } },
  { name: 'never past port 65535', basePort: 65535, readers: 1, want: { first: 65535, last: 65535 } },
];

for (const row of ranges) {
  test(`readerPortRange: ${row.name}`, (t) => {
    t.deepEqual(readerPortRange(row.basePort, row.readers), row.want);
  });
}

test('one table per range, named after it', (t) => {
  t.is(guardTableName({ first: 470, last: 479 }), 'inet tpmvsc_vpcd_470_479');
  t.is(describeRange({ first: 470, last: 479 }), 'ports 470-479');
  t.is(describeRange({ first: 65535, last: 65535 }), 'port 65535');
  t.is(guardRecordPath('/run/tpmvsc', { first: 470, last: 479 }), '/run/tpmvsc/vpcd-guard-470-479.json');
});

test('the ruleset replaces the table in one transaction: connect only as root or the daemon, send from the ports only as root', (t) => {
  t.is(
    guardRuleset({ first: 470, last: 479 }, [998, 0]),
    [
      'table inet tpmvsc_vpcd_470_479',
      'delete table inet tpmvsc_vpcd_470_479',
      'table inet tpmvsc_vpcd_470_479 {',
      '  chain output {',
      '    type filter hook output priority filter; policy accept;',
      '    tcp dport 470-479 fib daddr type local meta skuid != { 0, 998 } reject with tcp reset',
      '    tcp sport 470-479 fib daddr type local meta skuid != 0 drop',
      '  }',
      '}',
      '',
    ].join('\n'),
  );
  // Root is always let through (pcscd); a root daemon adds nothing.
  t.regex(guardRuleset({ first: 470, last: 471 }, [0]), /meta skuid != \{ 0 \} reject/);
});

test('a bad range or uid never reaches nft', (t) => {
  t.throws(() => guardRuleset({ first: 0, last: 1 }, [0]), { instanceOf: TpmvscError });
  t.throws(() => guardRuleset({ first: 480, last: 470 }, [0]), { instanceOf: TpmvscError });
  t.throws(() => guardRuleset({ first: 470, last: 65536 }, [0]), { instanceOf: TpmvscError });
  t.throws(() => guardRuleset({ first: 470, last: 471 }, [-1]), { instanceOf: TpmvscError });
  t.throws(() => guardRuleset({ first: 470, last: 471 }, [1.5]), { instanceOf: TpmvscError });
});
