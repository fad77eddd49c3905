#!/usr/bin/env node
// Training throughput of this checkout against a peer checkout (another build of olmoe, e.g. main before a change)
// on the same config, alternating in the same run: for each round and thread count, the peer's
// `olmoe train CONFIG --bench STEPS --threads T --json` then ours, each in its own process. Prints the median
// tokens/s of each, our speed-up over the peer, our 2-thread / 1-thread scaling, and our useful GFLOP/s beside the
// machine's FP32 peak measured by our bench in the same process. With --quiet-below P, each pair waits until the
// machine's CPUs are less than P % busy (other processes on a 2-core machine wreck 2-thread timings).
//   node bench/train-speed.mjs CONFIG --peer /work/main [--rounds 3] [--steps 2] [--threads 1,2] [--quiet-below 20]
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const flag = (name, fallback) => (args.includes(name) ? args.splice(args.indexOf(name), 2)[1] : fallback);
const peer = flag('--peer', undefined);
const rounds = Number(flag('--rounds', '3'));
const steps = flag('--steps', '2');
const threadCounts = flag('--threads', '1,2').split(',').map(Number);
const quietBelow = Number(flag('--quiet-below', '0'));
const config = args[0];
if (!config || !peer) throw new Error('usage: node bench/train-speed.mjs CONFIG --peer OTHER_CHECKOUT [--rounds 3] [--steps 2] [--threads 1,2] [--quiet-below 20]');

const checkouts = { peer: resolve(peer), ours: resolve(here, '..') };

function bench(root, threads) {
  const out = execFileSync(process.execPath, [join(root, 'dist', 'src', 'cli', 'main.js'), 'train', config, '--bench', steps, '--threads', String(threads), '--json'],
    { encoding: 'utf8', maxBuffer: 1 << 24 });
  return JSON.parse(out);
}

/** Fraction of CPU time busy machine-wide over `ms` (from /proc/stat). */
function busy(ms) {
  const sample = () => readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const a = sample();
  execFileSync('sleep', [String(ms / 1000)]);
  const b = sample();
  const d = b.map((v, i) => v - a[i]);
  const idle = d[3] + d[4];
  return 1 - idle / d.reduce((x, y) => x + y, 0);
}

function waitQuiet() {
  if (!quietBelow) return;
  for (let i = 0; i < 120 && busy(5000) * 100 >= quietBelow; i++);
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const results = { peer: new Map(), ours: new Map(), gflops: new Map(), peak: new Map() };
for (let round = 0; round < rounds; round++) {
  for (const threads of threadCounts) {
    waitQuiet();
    for (const who of ['peer', 'ours']) {
      const r = bench(checkouts[who], threads);
      (results[who].get(threads) ?? results[who].set(threads, []).get(threads)).push(r.tokensPerSecond);
      if (who === 'ours') {
        (results.gflops.get(threads) ?? results.gflops.set(threads, []).get(threads)).push(r.gflops);
        if (r.peakGflops) (results.peak.get(threads) ?? results.peak.set(threads, []).get(threads)).push(r.peakGflops);
      }
      console.error(`round ${round + 1}, ${threads} thread(s), ${who}: ${r.tokensPerSecond.toFixed(0)} tokens/s`);
    }
  }
}
console.log(`| threads | peer tokens/s | ours tokens/s | speed-up | ours GFLOP/s useful | FP32 peak GFLOP/s | share of peak |`);
console.log('|---|---|---|---|---|---|---|');
for (const threads of threadCounts) {
  const [p, o, g] = [median(results.peer.get(threads)), median(results.ours.get(threads)), median(results.gflops.get(threads))];
  const peak = results.peak.has(threads) ? median(results.peak.get(threads)) : NaN;
  console.log(`| ${threads} | ${p.toFixed(0)} | ${o.toFixed(0)} | ${(o / p).toFixed(2)}× | ${g.toFixed(1)} | ${peak.toFixed(0)} | ${((100 * g) / peak).toFixed(0)} % |`);
}
if (threadCounts.includes(1) && threadCounts.includes(2)) {
  const scaling = (who) => median(results[who].get(2)) / median(results[who].get(1));
  console.log(`\n2 threads / 1 thread: ours ${scaling('ours').toFixed(2)}×, peer ${scaling('peer').toFixed(2)}× (medians of ${rounds} rounds)`);
}
