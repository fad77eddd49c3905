// The native training GEMM (native/src/train-gemm.cc) against a float64 product computed here, in all four
// orientations, with and without accumulation, on shapes off the kernel's tiles and on subarray operands; its
// results bit-identical for 1 and 2 threads; and the training executor (the autograd tape over each backend)
// against the tiny fixture's independent golden logits.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { createRng } from '../src/core/rng.js';
import { Tape } from '../src/autograd/tape.js';
import { TrainModel } from '../src/train/model.js';
import { loadParams } from '../src/train/checkpoint.js';
import { parseConfig } from '../src/model/config.js';
import { loadAddon } from '../src/backends/native/addon.js';
import { announceSkip, backendCases, nativeSkip } from './backends.js';
import { tinyExpectedPath, tinyModelDir } from './helpers.js';

const rng = createRng(3);
const random = (n: number) => Float32Array.from({ length: n }, () => rng() * 2 - 1);

/** C = op(A)·op(B) in float64, written out index by index. */
function naive(m: number, n: number, k: number, a: Float32Array, b: Float32Array, transA: boolean, transB: boolean): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) sum += (transA ? a[p * m + i]! : a[i * k + p]!) * (transB ? b[j * k + p]! : b[p * n + j]!);
      c[i * n + j] = sum;
    }
  }
  return c;
}

interface GemmArgs { m: number; n: number; k: number; a: Float32Array; b: Float32Array; c: Float32Array; transA?: boolean; transB?: boolean; accumulate?: boolean }

{
  describe('native training GEMM', { skip: announceSkip(nativeSkip) }, () => {
    const addon = loadAddon().addon;
    const kernels = { gemm: (g: GemmArgs) => addon!.gemm(g.transA ?? false, g.transB ?? false, g.m, g.n, g.k, g.a, g.b, g.c, g.accumulate ?? false) };
    // Native tiles are 6×64 (AVX-512), 6×16 (AVX2) or 4×8 (scalar) over blocks of 256 summed indices: these shapes
    // cover partial tiles in both directions, one row, one column, k = 1, several K blocks with a ragged last one,
    // and products large enough to run on the thread pool.
    const shapes = [[3, 5, 7], [70, 33, 130], [1, 64, 256], [1, 1, 1], [1, 70, 300], [13, 65, 1], [200, 3, 300], [6, 64, 256], [97, 200, 520]] as const;
    for (const [m, n, k] of shapes) {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          it(`${m}×${k}·${k}×${n} transA=${transA} transB=${transB}, then accumulate`, () => {
            const [a, b] = [random(m * k), random(k * n)];
            const c = new Float32Array(m * n);
            kernels.gemm({ m, n, k, a, b, c, transA, transB });
            const expected = naive(m, n, k, a, b, transA, transB);
            c.forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-4 * Math.sqrt(k), `${i}: ${v} vs ${expected[i]}`));
            kernels.gemm({ m, n, k, a, b, c, transA, transB, accumulate: true });
            c.forEach((v, i) => assert.ok(Math.abs(v - 2 * expected[i]!) < 2e-4 * Math.sqrt(k), `accumulate ${i}`));
          });
        }
      }
    }
    it('subarray operands (non-zero byteOffset): reads and writes only their own ranges', () => {
      const [m, n, k] = [37, 75, 300];
      const [a, b] = [random(m * k + 9), random(k * n + 5)];
      const c = new Float32Array(m * n + 16).fill(7);
      const [aView, bView, cView] = [a.subarray(9), b.subarray(5, 5 + k * n), c.subarray(3, 3 + m * n)];
      for (const [transA, transB] of [[false, false], [true, true]] as const) {
        cView.fill(1);
        kernels.gemm({ m, n, k, a: aView, b: bView, c: cView, transA, transB, accumulate: true });
        const expected = naive(m, n, k, aView, bView, transA, transB);
        cView.forEach((v, i) => assert.ok(Math.abs(v - 1 - expected[i]!) < 1e-4 * Math.sqrt(k), `${i}: ${v} vs 1 + ${expected[i]}`));
        [...c.subarray(0, 3), ...c.subarray(3 + m * n)].forEach((v) => assert.equal(v, 7, 'outside the view'));
      }
    });
  });
}

describe('native training GEMM is deterministic', { skip: nativeSkip }, () => {
  // Exact training resume needs the same bits whatever the thread count: the kernel never splits the sum over K.
  it('the same bits with 1 and 2 threads in all four orientations, with accumulation', () => {
    const addon = loadAddon().addon!;
    const before = addon.threads();
    const [m, n, k] = [301, 203, 777];
    const [a, b, start] = [random(m * k), random(k * n), random(m * n)];
    try {
      for (const transA of [false, true]) {
        for (const transB of [false, true]) {
          const results = [1, 2].map((threads) => {
            addon.setThreads(threads);
            const c = start.slice();
            addon.gemm(transA, transB, m, n, k, a, b, c, true);
            return new Uint32Array(c.buffer);
          });
          assert.deepEqual(results[0], results[1], `transA=${transA} transB=${transB}`);
        }
      }
    } finally {
      addon.setThreads(before);
    }
  });
});

describe('native training step is deterministic', { skip: nativeSkip }, () => {
  // Exact resume on another thread count needs the same bits: every reduction runs in a fixed order.
  it('the same loss and gradients, bit for bit, with 1 and 2 threads (token and expert choice)', () => {
    const addon = loadAddon().addon!;
    const before = addon.threads();
    const config = parseConfig({
      model_type: 'olmoe', vocab_size: 300, hidden_size: 64, intermediate_size: 32, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2,
      num_experts: 8, num_experts_per_tok: 2, max_position_embeddings: 64, rms_norm_eps: 1e-5,
    });
    const tokens = Int32Array.from({ length: 3 * 41 }, (_, i) => (i * 37 + 11) % 300);
    try {
      for (const routing of ['token_choice', 'expert_choice'] as const) {
        const runs = [1, 2].map((threads) => {
          addon.setThreads(threads);
          const model = new TrainModel({ config, routing, capacityFactor: 1 }, backendCases[1]!.create());
          const rng = createRng(5);
          model.initialize((values) => values.forEach((_, i) => (values[i] = (rng() - 0.5) * 0.2)));
          const tape = new Tape(model.backend);
          const result = model.forward(tape, { tokens, sequences: 3 }, { loadBalancing: 0.01, routerZ: 0.001 });
          tape.backward(result.loss);
          return [Float32Array.of(result.total), ...model.params.map((p) => model.backend.toFloat32(p.grad))].map((a) => Array.from(new Uint32Array(a.slice().buffer)));
        });
        assert.deepEqual(runs[0], runs[1], routing);
      }
    } finally {
      addon.setThreads(before);
    }
  });
});

for (const target of backendCases) describe(`training executor = inference model (${target.name})`, { skip: announceSkip(target.skip) }, () => {
  it('the tiny fixture checkpoint gives the golden logits of the independent reference (float32) through the tape', () => {
    const expected = JSON.parse(readFileSync(tinyExpectedPath, 'utf8')) as { config: object; cases: { ids: number[]; logits: number[][] }[] };
    const config = parseConfig(expected.config);
    const model = new TrainModel({ config, routing: 'token_choice', capacityFactor: 1 }, target.create());
    loadParams(model, tinyModelDir);
    for (const { ids, logits } of expected.cases) {
      const tape = new Tape(model.backend);
      // One row of S + 1 ids: the logits of positions 0..S-1 come from the inputs ids[0..S-1]; the extra id is a dummy target.
      const result = model.forward(tape, { tokens: Int32Array.from([...ids, 0]), sequences: 1 }, { loadBalancing: 0.01, routerZ: 0.001 });
      const got = tape.toFloat32(result.logits);
      const vocab = config.vocabSize;
      let worst = 0;
      logits.forEach((row, t) => row.forEach((v, i) => (worst = Math.max(worst, Math.abs(v - got[t * vocab + i]!)))));
      assert.ok(worst < 1e-4, `max |Δlogit| ${worst}`);
    }
  });
});
