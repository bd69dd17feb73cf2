/** `--version` of tpmvscmgr, tpmvscd and tpmvsc-ca: package.json's version, asked for alone. */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { asksForVersion, productVersion } from '../../common/product_version.js';

test('the version is package.json\'s', (t) => {
  const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  t.is(productVersion(), version);
  t.regex(productVersion(), /^\d+\.\d+\.\d+/);
});

test('--version, -V and /version, alone, ask for it', (t) => {
  for (const argv of [['--version'], ['-V'], ['-v'], ['/VERSION']]) t.true(asksForVersion(argv), argv.join(' '));
  for (const argv of [[], ['--version', 'x'], ['status'], ['/?']]) t.false(asksForVersion(argv), argv.join(' '));
});
