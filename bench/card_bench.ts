/**
 * Signatures per second through a whole tpmvsc card (PC/SC client -> pcscd -> vpcd ->
 * tpmvscd -> PIV applet -> TPM vault -> swtpm) next to raw TPM2_Sign on the same swtpm
 * with an equivalent key (same template family, an authValue, the library's salted
 * session), measured in the same run. Goal: the card reaches at least 0.7x of raw.
 *
 *   npx tsx bench/card_bench.ts        (or via bench/index.ts: runCardBench())
 *
 * Keys live in 9E (card authentication: no PIN needed), ECC P-256 first, then RSA-2048.
 * The PC/SC client keeps one connection (the `pcsclite` binding in this process).
 * The last line bounds what any card could reach on this machine: raw / (raw + floor), the
 * floor being one APDU answered from memory through the same client, pcscd and vpcd.
 */
import { createHash } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { mutualAuthenticate, DEFAULT_ADMIN_KEY_HEX } from '../test/helpers/applet_harness.js';
import { openPcsc, type PcscConnection } from '../test/helpers/pcsc_client.js';
import { startStack } from '../test/helpers/stack.js';
import { Tpm, TPM_ALG, TPM_ECC, eccKeyTemplate, rsaKeyTemplate } from '../tpm/index.js';

const READER = 'TPM Virtual Smart Card 0 00 00';
const DIGEST = createHash('sha256').update('tpmvsc card bench').digest();

interface Rate {
  opsPerSec: number;
  msPerOp: number;
}

async function rate(seconds: number, op: () => Promise<unknown>): Promise<Rate> {
  for (let i = 0; i < 10; i++) await op(); // warm-up: self-tests, caches, JIT
  const t0 = process.hrtime.bigint();
  const until = t0 + BigInt(Math.round(seconds * 1e9));
  let n = 0;
  while (process.hrtime.bigint() < until) {
    await op();
    n++;
  }
  const ns = Number(process.hrtime.bigint() - t0);
  return { opsPerSec: (n * 1e9) / ns, msPerOp: ns / 1e6 / n };
}

/** Sends hex, returns hex, following 61xx with GET RESPONSE (short APDUs answer in parts). */
function hexSender(connection: PcscConnection): (hex: string) => Promise<string> {
  return async (hex) => {
    let response = (await connection.transmit(Buffer.from(hex.replace(/\s+/g, ''), 'hex'))).toString('hex');
    let data = '';
    while (response.length >= 4 && response.slice(-4, -2) === '61') {
      data += response.slice(0, -4);
      response = (await connection.transmit(Buffer.from(`00c00000${response.slice(-2)}`, 'hex'))).toString('hex');
    }
    return data + response;
  };
}

function expectOk(what: string, response: string): string {
  if (!response.endsWith('9000')) throw new Error(`${what} answered ${response.slice(-4)}`);
  return response;
}

/*
 * GENERAL AUTHENTICATE sign (SP 800-73-4 part 2, 3.2.4):
 *   00 87 <alg> 9E Lc  7C L  82 00  81 L <input>  Le
 * ECDSA P-256: alg 11, input = the 32-byte digest (short APDU).
 * RSA-2048: alg 07, input = the 256-byte PKCS#1 v1.5 block (extended APDU: 00 Lc1 Lc2 ... 00 00).
 */
function ecdsaSignCommand(): string {
  return `0087119e267c24820081 20${DIGEST.toString('hex')}00`;
}

function rsaSignCommand(): string {
  // EMSA-PKCS1-v1_5: 00 01 FF.. 00 DigestInfo(SHA-256) digest
  const digestInfo = Buffer.concat([Buffer.from('3031300d060960864801650304020105000420', 'hex'), DIGEST]);
  const block = Buffer.concat([Buffer.from([0, 1]), Buffer.alloc(256 - 3 - digestInfo.length, 0xff), Buffer.from([0]), digestInfo]);
  return `008707 9e 00010a 7c820106 8200 81820100 ${block.toString('hex')} 0000`;
}

async function measureCard(seconds: number): Promise<{ ecc: Rate; rsa: Rate; getData: Rate; stack: Awaited<ReturnType<typeof startStack>> }> {
  const stack = await startStack({ readers: 1 });
  try {
    const created = await stack.cli(['create', '/name', 'Bench', '/AdminKey', 'DEFAULT', '/PIN', 'DEFAULT', '/PUK', 'DEFAULT', '/generate']);
    if (created.code !== 0) throw new Error(`tpmvscmgr create failed: ${created.stderr}`);
    stack.pcscd.useInThisProcess();
    const client = openPcsc();
    try {
      await client.waitForReader(READER, 10_000);
      await client.waitForCard(READER, true, 10_000);
      const connection = await client.connect(READER);
      const send = hexSender(connection);
      expectOk('SELECT', await send('00a4040009a00000030800001000'));
      await mutualAuthenticate(send, DEFAULT_ADMIN_KEY_HEX, '03');
      // The card's own floor: an APDU answered from memory, through the same client, pcscd and vpcd.
      const getData = await rate(seconds, async () => expectOk('GET DATA', await send('00cb3fff055c035fc10200')));
      expectOk('GENERATE P-256 in 9E', await send('0047009e05ac03800111'));
      const ecc = await rate(seconds, async () => expectOk('ECDSA sign', await send(ecdsaSignCommand())));
      expectOk('GENERATE RSA-2048 in 9E', await send('0047009e05ac03800107'));
      const rsa = await rate(seconds, async () => expectOk('RSA sign', await send(rsaSignCommand())));
      await connection.disconnect('reset');
      return { ecc, rsa, getData, stack };
    } finally {
      client.close();
    }
  } catch (error) {
    await stack.stop();
    throw error;
  }
}

async function measureRaw(tcti: string, seconds: number): Promise<{ ecc: Rate; rsa: Rate }> {
  const tpm = await Tpm.open({ tcti });
  try {
    const auth = createHash('sha256').update('bench key auth').digest();
    const srk = await tpm.storageRoot();
    const eccKey = await tpm.load(srk, await tpm.create(srk, eccKeyTemplate(TPM_ECC.NIST_P256), { userAuth: auth }));
    const ecc = await rate(seconds, () => tpm.sign(eccKey, DIGEST, { scheme: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256 }, { auth }));
    await tpm.flushContext(eccKey.handle);
    const rsaKey = await tpm.load(srk, await tpm.create(srk, rsaKeyTemplate(2048), { userAuth: auth }));
    const rsa = await rate(seconds, () => tpm.sign(rsaKey, DIGEST, { scheme: TPM_ALG.RSASSA, hash: TPM_ALG.SHA256 }, { auth }));
    await tpm.flushContext(rsaKey.handle);
    return { ecc, rsa };
  } finally {
    await tpm.close();
  }
}

export async function runCardBench(seconds = 3): Promise<void> {
  const { ecc, rsa, getData, stack } = await measureCard(seconds);
  try {
    // swtpm serves one client: the daemon goes first, then the raw client gets the same swtpm
    await stack.stopDaemon();
    const raw = await measureRaw(stack.swtpm.tcti, seconds);
    const row = (name: string, card: Rate, baseline: Rate): string => {
      const ratio = card.opsPerSec / baseline.opsPerSec;
      return `  ${name.padEnd(16)} ${card.opsPerSec.toFixed(0).padStart(7)} ${card.msPerOp.toFixed(2).padStart(8)}   ${baseline.opsPerSec.toFixed(0).padStart(7)} ${baseline.msPerOp.toFixed(2).padStart(8)}   ${ratio.toFixed(2)}x ${ratio >= 0.7 ? 'ok' : 'BELOW GOAL 0.7x'}`;
    };
    console.log(`Card signatures vs raw TPM2_Sign (${stack.swtpm.tcti}, ${seconds} s per row)`);
    console.log(`  ${'operation'.padEnd(16)} ${'card/s'.padStart(7)} ${'ms'.padStart(8)}   ${'raw/s'.padStart(7)} ${'ms'.padStart(8)}   ratio`);
    console.log(row('ECDSA P-256', ecc, raw.ecc));
    console.log(row('RSA-2048 PKCS#1', rsa, raw.rsa));
    console.log(`  card floor: GET DATA from memory through the same path ${getData.msPerOp.toFixed(2)} ms (${getData.opsPerSec.toFixed(0)}/s)`);
    // A card can't sign faster than its floor plus the TPM's own signature: that bounds the ratio
    // whatever the daemon does (client, pcscd and vpcd costs are in the floor, not ours to cut).
    const bound = (baseline: Rate): string => (baseline.msPerOp / (baseline.msPerOp + getData.msPerOp)).toFixed(2);
    console.log(`  best ratio a zero-cost card could reach here, raw / (raw + floor): ECDSA ${bound(raw.ecc)}x, RSA ${bound(raw.rsa)}x`);
  } finally {
    await stack.stop();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  await runCardBench();
}
