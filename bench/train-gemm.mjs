#!/usr/bin/env node
// Training's GEMM shapes: GFLOP/s of the native packed-panel kernel (addon.gemm) against the previous path
// (operands transposed in JS, the inference addon.matmul computing x·wᵀ, accumulation in JS) in the same run.
// Each cell: GFLOP/s of the median and of the fastest of --reps timed calls after one warm-up call (the machine
// is shared: the fastest shows what the kernel can do, the median what a busy machine gives), and with --cpu the
// GFLOP per second of process CPU time (all threads; spinning at barriers counts), which other processes on the
// cores disturb less than wall time.
//   node bench/train-gemm.mjs [--threads 2] [--reps 5] [--only lm-head] [--new-only]
// Dimension legend: C[M, N] = op(A)[M, K] · op(B)[K, N]; tA/tB: A stored [K, M], B stored [N, K].
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const addon = createRequire(import.meta.url)(join(root, 'native', 'build', 'Release', 'olmoe_native.node'));
const args = process.argv.slice(2);
const flag = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
const threads = Number(flag('--threads', '2'));
const reps = Number(flag('--reps', '5'));
const only = flag('--only', '');
const newOnly = args.includes('--new-only');
const cpu = args.includes('--cpu');
addon.setThreads(threads);

const SHAPES = [
  { name: 'linear fwd [2048×256]·[256×256]ᵀ', m: 2048, n: 256, k: 256 },
  { name: 'weight grad [256×2048]ᵀ·[2048×256]', m: 256, n: 256, k: 2048 },
  { name: 'expert [600×256]·[256×512]', m: 600, n: 512, k: 256 },
  { name: 'expert [300×512]·[512×256]', m: 300, n: 256, k: 512 },
  { name: 'expert [50×256]·[256×128]', m: 50, n: 128, k: 256 },
  { name: 'expert grad [128×600]ᵀ·[600×256]', m: 128, n: 256, k: 600 },
  { name: 'attention scores [256×64]·[64×256]', m: 256, n: 256, k: 64 },
  { name: 'attention values [256×256]·[256×64]', m: 256, n: 64, k: 256 },
  { name: 'lm-head [2048×256]·[256×8192]ᵀ', m: 2048, n: 8192, k: 256 },
];

function random(length) {
  const out = new Float32Array(length);
  let state = 12345;
  for (let i = 0; i < length; i++) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    out[i] = state / 2 ** 32 - 0.5;
  }
  return out;
}

/** src [rows, cols] → dst [cols, rows], in cache-sized tiles (the previous NativeBackend.gemmF32's helper). */
function transpose(src, rows, cols, dst) {
  const tile = 32;
  for (let r0 = 0; r0 < rows; r0 += tile) {
    for (let c0 = 0; c0 < cols; c0 += tile) {
      const [r1, c1] = [Math.min(rows, r0 + tile), Math.min(cols, c0 + tile)];
      for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) dst[c * rows + r] = src[r * cols + c];
    }
  }
  return dst;
}

/** The previous path: x [M, K] and w [N, K] materialised by JS transposes, then addon.matmul, += in JS. */
function oldGemm({ m, n, k, a, b, c, transA, transB, accumulate }, scratch) {
  const x = transA ? transpose(a, k, m, scratch.a) : a.subarray(0, m * k);
  const w = transB ? b.subarray(0, n * k) : transpose(b, k, n, scratch.b);
  const out = accumulate ? scratch.c : c.subarray(0, m * n);
  addon.matmul(x, m, k, w, 0, n, out);
  if (accumulate) for (let i = 0; i < m * n; i++) c[i] += out[i];
}

function newGemm({ m, n, k, a, b, c, transA, transB, accumulate }) {
  addon.gemm(transA, transB, m, n, k, a, b, c, accumulate);
}

/** GFLOP/s of the median and of the fastest call. */
function time(fn, flops) {
  fn();
  const ms = [];
  const cpuStart = process.cpuUsage();
  for (let r = 0; r < reps; r++) {
    const start = process.hrtime.bigint();
    fn();
    ms.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  const cpuUsed = process.cpuUsage(cpuStart);
  ms.sort((x, y) => x - y);
  const median = ms[Math.floor(ms.length / 2)];
  return { gflops: flops / median / 1e6, best: flops / ms[0] / 1e6, perCpu: (reps * flops) / (cpuUsed.user + cpuUsed.system) / 1e3 };
}

console.log(`simd ${addon.simdLevel()}, ${addon.threads()} threads, ${reps} calls; GFLOP/s median/best${cpu ? '/per CPU-second' : ''}`);
console.log(['shape', 'op', 'old', 'new', 'speed-up'].join('\t'));
for (const shape of SHAPES.filter((s) => s.name.includes(only))) {
  const { m, n, k } = shape;
  const [a, b, c] = [random(m * k), random(k * n), new Float32Array(m * n)];
  const scratch = { a: new Float32Array(m * k), b: new Float32Array(n * k), c: new Float32Array(m * n) };
  const flops = 2 * m * n * k;
  for (const [transA, transB] of [[false, true], [false, false], [true, false], [true, true]]) {
    const call = { m, n, k, a, b, c, transA, transB, accumulate: transA };  // weight gradients accumulate
    const op = `${transA ? 'tA' : 'A'}·${transB ? 'tB' : 'B'}${call.accumulate ? ' +=' : ''}`;
    const fresh = time(() => newGemm(call), flops);
    const old = newOnly ? undefined : time(() => oldGemm(call, scratch), flops);
    const cell = (r) => (r ? `${r.gflops.toFixed(1)}/${r.best.toFixed(1)}${cpu ? `/${r.perCpu.toFixed(1)}` : ''}` : '-');
    console.log([shape.name, op, cell(old), cell(fresh), old ? `${(fresh.gflops / old.gflops).toFixed(1)}×` : '-'].join('\t'));
  }
}
