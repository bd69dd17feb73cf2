/**
 * `npm run bench`: every benchmark of the project, each printing its numbers next to a
 * baseline measured in the same run on the same machine (never a timed test).
 * Run one with `npm run bench -- tpm` (names: tpm, vpcd, card, pkcs11).
 */
interface Benchmark {
  name: string;
  description: string;
  run: () => Promise<void>;
}

const benchmarks: Benchmark[] = [
  {
    name: 'tpm',
    description: 'TPM client: ops/s through salted sessions vs the raw swtpm round-trip floor',
    run: async () => (await import('./tpm_bench.js')).runTpmBench(),
  },
  {
    name: 'vpcd',
    description: 'APDU round trip through pcscd + vpcd vs a minimal card',
    run: async () => (await import('./vpcd_bench.js')).runVpcdBench(),
  },
  {
    name: 'card',
    description: 'ECDSA P-256 / RSA-2048 signatures per second through a card vs raw TPM2_Sign on the same swtpm',
    run: async () => (await import('./card_bench.js')).runCardBench(),
  },
  {
    name: 'pkcs11',
    description: 'one pkcs11-tool --sign process: OpenSC + our card vs tpm2-pkcs11 on the same swtpm',
    run: async () => (await import('./pkcs11_bench.js')).runPkcs11Bench(),
  },
];

const wanted = process.argv.slice(2);
for (const benchmark of benchmarks) {
  if (wanted.length > 0 && !wanted.includes(benchmark.name)) continue;
  console.log(`\n== ${benchmark.name}: ${benchmark.description}`);
  await benchmark.run();
}
