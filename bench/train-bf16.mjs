#!/usr/bin/env node
// bf16 mixed precision against float32 on one training config: `olmoe train CONFIG --bench STEPS --threads T --json
// --precision P` for fp32 then bf16, alternating round after round, each in its own process (the machine is shared:
// alternation spreads other processes' load over both). Prints each precision's median tokens/s, the bf16 / fp32
// ratio, the useful GFLOP/s beside the FP32 peak and the bf16 kernel's peak, all measured in the same runs.
//   node bench/train-bf16.mjs CONFIG [--rounds 5] [--steps 3] [--threads 2]
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const cli = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'src', 'cli', 'main.js');
const args = process.argv.slice(2);
const flag = (name, fallback) => (args.includes(name) ? args.splice(args.indexOf(name), 2)[1] : fallback);
const rounds = Number(flag('--rounds', '5'));
const steps = flag('--steps', '3');
const threads = flag('--threads', '2');
const config = args[0];
if (!config) throw new Error('usage: node bench/train-bf16.mjs CONFIG [--rounds 5] [--steps 3] [--threads 2]');

const runs = { fp32: [], bf16: [] };
for (let round = 0; round < rounds; round++) {
  for (const precision of ['fp32', 'bf16']) {
    const out = execFileSync(process.execPath, [cli, 'train', config, '--bench', steps, '--threads', threads, '--json', '--precision', precision], { encoding: 'utf8', maxBuffer: 1 << 24 });
    const r = JSON.parse(out);
    runs[precision].push(r);
    console.log(`round ${round + 1} ${precision}: ${r.tokensPerSecond.toFixed(0)} tok/s, ${r.gflops.toFixed(1)} GFLOP/s useful, FP32 peak ${r.peakGflops?.toFixed(0)}` +
      (r.bf16PeakGflops ? `, ${r.bf16Kernel} peak ${r.bf16PeakGflops.toFixed(0)}` : ''));
  }
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const of = (precision, key) => median(runs[precision].map((r) => r[key]).filter((v) => v !== undefined));
const [fp32, bf16] = [of('fp32', 'tokensPerSecond'), of('bf16', 'tokensPerSecond')];
const peak = median([...runs.fp32, ...runs.bf16].map((r) => r.peakGflops));
console.log(`\nmedians of ${rounds} alternating rounds, ${threads} thread(s), ${steps} steps each:`);
console.log(`fp32: ${fp32.toFixed(0)} tok/s, ${of('fp32', 'gflops').toFixed(1)} GFLOP/s useful (${((100 * of('fp32', 'gflops')) / peak).toFixed(0)} % of the FP32 peak ${peak.toFixed(0)} GFLOP/s)`);
console.log(`bf16 (${runs.bf16[0].bf16Kernel ?? 'reference'}): ${bf16.toFixed(0)} tok/s, ${of('bf16', 'gflops').toFixed(1)} GFLOP/s useful` +
  (runs.bf16[0].bf16PeakGflops ? ` (${((100 * of('bf16', 'gflops')) / of('bf16', 'bf16PeakGflops')).toFixed(1)} % of the ${runs.bf16[0].bf16Kernel} peak ${of('bf16', 'bf16PeakGflops').toFixed(0)} GFLOP/s)` : ''));
console.log(`bf16 / fp32: ${(bf16 / fp32).toFixed(2)}×`);
