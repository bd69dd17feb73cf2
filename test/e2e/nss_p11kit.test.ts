/**
 * NSS and p11-kit see the card: a fresh NSS database with the OpenSC module added by
 * modutil lists the card's certificates (certutil -L -h all), and p11-kit / p11tool
 * list the token.
 */
import test from 'ava';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startStack, type Stack } from '../helpers/stack.js';
import { OPENSC_MODULE, createDefaultCard, makeTestCa, mustSucceed, p11KitClientEnv, provisionSlot } from '../helpers/card_setup.js';

const READER = 'TPM Virtual Smart Card 0 00 00';
let stack: Stack | undefined;
let dir = '';

test.before(async () => {
  stack = await startStack({ readers: 2 });
  dir = await mkdtemp(join(tmpdir(), 'tpmvsc-nss-'));
  await createDefaultCard(stack, 'Nss');
  const ca = await makeTestCa(dir);
  await provisionSlot(stack, { reader: READER, slot: '9a', algorithm: 'RSA2048', subject: '/CN=nss holder', ca, dir, prefix: 'nss' });
  await provisionSlot(stack, { reader: READER, slot: '9c', algorithm: 'ECCP256', subject: '/CN=nss signer', ca, dir, prefix: 'nss' });
});

test.after.always(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test.serial('NSS: modutil adds OpenSC and certutil lists the card certificates', async (t) => {
  const db = `sql:${join(dir, 'nssdb')}`;
  await mkdir(join(dir, 'nssdb'));
  mustSucceed(await stack!.run('certutil', ['-N', '-d', db, '--empty-password']), 'certutil -N');
  const before = await stack!.run('certutil', ['-L', '-h', 'all', '-d', db]);
  t.false(before.stdout.includes('nss holder'), 'nothing from the card before the module is added');
  mustSucceed(await stack!.run('modutil', ['-add', 'opensc', '-libfile', OPENSC_MODULE, '-dbdir', db, '-force']), 'modutil -add');
  const modules = mustSucceed(await stack!.run('modutil', ['-list', '-dbdir', db]), 'modutil -list');
  t.regex(modules.stdout, /opensc/);
  t.regex(modules.stdout, /token: nss holder/, modules.stdout);
  const listing = mustSucceed(await stack!.run('certutil', ['-L', '-h', 'all', '-d', db]), 'certutil -L');
  t.regex(listing.stdout, /nss holder:Certificate for PIV Authentication/, listing.stdout);
  t.regex(listing.stdout, /nss holder:Certificate for Digital Signature/, listing.stdout);
});

test.serial('p11-kit and p11tool list the token', async (t) => {
  // Debian registers OpenSC with p11-kit (/usr/share/p11-kit/modules/opensc-pkcs11.module),
  // and tpm2-pkcs11 too: p11KitClientEnv keeps that one out of the real HOME and off any TPM.
  const env = await p11KitClientEnv(dir);
  const listed = await stack!.run('p11-kit', ['list-modules'], { env });
  t.is(listed.code, 0, listed.stderr);
  t.regex(listed.stdout, /opensc-pkcs11: opensc-pkcs11\.so[\s\S]*token: nss holder/, listed.stdout);
  const tokens = mustSucceed(await stack!.run('p11tool', ['--provider', OPENSC_MODULE, '--list-tokens'], { env }), 'p11tool --list-tokens');
  t.regex(tokens.stdout, /Label: nss holder/);
  t.regex(tokens.stdout, /URL: pkcs11:model=PKCS%2315%20emulated;manufacturer=piv_II;serial=[0-9a-f]+;token=nss%20holder/);
});
