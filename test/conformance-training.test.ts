/**
 * Training conformance: every op of the training interface, forward and backward, on every backend against the
 * reference backend (llama.cpp's test-backend-ops idea), run the way training runs them: through the autograd tape,
 * whose backward seeds each output with the same random gradient. The reference's own backward is checked against
 * float64 finite differences in train-gradcheck.test.ts. Tolerance for float32 accumulation in another order:
 *   |backend − reference| ≤ 1e-5 · √(reduction length) · (|reference| + rms(reference))
 * And the list of which implementation runs each op on each backend.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import type { Routing, Tensor } from '../src/core/backend.js';
import type { TrainingBackend } from '../src/core/training.js';
import { createRng } from '../src/core/rng.js';
import { Tape } from '../src/autograd/tape.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { NATIVE_EXCEPTIONS, NativeBackend } from '../src/backends/native/index.js';
import { announceSkip, backendCases } from './backends.js';
import { runTape, type Input } from './tape-run.js';

const reference = new ReferenceBackend();


function randoms(seed: number, n: number, scale = 1): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: n }, () => (rng() * 2 - 1) * scale);
}

let seeds = 100;
const input = (shape: number[], scale = 1): Input => ({ values: randoms(seeds++, shape.reduce((a, b) => a * b, 1), scale), shape });

/** Forward and backward of `build` on a backend: the output, and every input's gradient for the seeded dOut. */
function run(backend: TrainingBackend, inputs: readonly Input[], build: (tape: Tape, leaves: Tensor[]) => Tensor): Float32Array[] {
  return runTape(backend, inputs, build, (n) => randoms(7, n));
}

function assertClose(actual: Float32Array, expected: Float32Array, reduction: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let squares = 0;
  for (const v of expected) squares += v * v;
  const rms = Math.sqrt(squares / Math.max(1, expected.length));
  const scale = 1e-5 * Math.sqrt(reduction);
  for (let i = 0; i < actual.length; i++) {
    const error = Math.abs(actual[i]! - expected[i]!);
    if (!(error <= scale * (Math.abs(expected[i]!) + rms))) assert.fail(`${what}: element ${i}: ${actual[i]} vs ${expected[i]} (error ${error})`);
  }
}

function compare(backend: TrainingBackend, what: string, reduction: number, inputs: readonly Input[], build: (tape: Tape, leaves: Tensor[]) => Tensor): void {
  const [mine, theirs] = [run(backend, inputs, build), run(reference, inputs, build)];
  mine.forEach((values, i) => assertClose(values, theirs[i]!, reduction, i === 0 ? `${what}: output` : `${what}: gradient of input ${i - 1}`));
}

for (const target of backendCases.filter((b) => b.name !== 'reference')) {
  describe(`training conformance: ${target.name} vs reference, forward and backward`, { skip: announceSkip(target.skip) }, () => {
    const backend = target.skip ? reference : target.create();

    it('embedding (repeated ids), matmul, rmsnorm, rope', () => {
      compare(backend, 'embedding', 6, [input([50, 24])], (t, [table]) => t.embedding(table!, Int32Array.of(0, 49, 7, 7, 3, 7)));
      for (const [tokens, inDim, outDim] of [[5, 16, 9], [37, 96, 70], [300, 64, 128]] as const) {
        compare(backend, `matmul ${tokens}×${inDim}→${outDim}`, Math.max(tokens, inDim, outDim), [input([tokens, inDim]), input([outDim, inDim])], (t, [x, w]) => t.matmul(x!, w!));
      }
      compare(backend, 'rmsnorm', 96 * 33, [input([33, 96]), input([96])], (t, [x, w]) => t.rmsnorm(x!, w!, 1e-5));
      compare(backend, 'rope', 1, [input([5, 3 * 16])], (t, [x]) => t.rope(x!, Int32Array.of(0, 1, 7, 300, 2), { heads: 3, headDim: 16, theta: 10000 }));
    });

    it('add, scale, rows, concatRows', () => {
      compare(backend, 'add', 1, [input([3, 5]), input([3, 5])], (t, [a, b]) => t.add(a!, b!));
      compare(backend, 'scale', 1, [input([3, 5])], (t, [a]) => t.scale(a!, -0.3));
      compare(backend, 'rows', 1, [input([6, 5])], (t, [a]) => t.rows(a!, 2, 3));
      compare(backend, 'concatRows', 1, [input([2, 5]), input([1, 5])], (t, [a, b]) => t.concatRows([a!, b!, a!]));
    });

    // Sequences up to 512 tokens keep their probabilities for the backward; a longer one has them recomputed.
    for (const [lengths, heads, kvHeads, headDim] of [[[37, 64], 4, 2, 16], [[256], 4, 4, 64], [[3, 5, 1], 2, 1, 128], [[600, 7], 2, 1, 16]] as const) {
      it(`causal attention without a cache: sequences of ${lengths.join(', ')}, ${heads} heads / ${kvHeads} kv × ${headDim}`, () => {
        const tokens = lengths.reduce((a, b) => a + b, 0);
        const sequences = lengths.map((n) => ({ tokens: n, start: 0 }));
        compare(backend, 'attention', Math.max(...lengths) + headDim, [input([tokens, heads * headDim]), input([tokens, kvHeads * headDim]), input([tokens, kvHeads * headDim])],
          (t, [q, k, v]) => t.attention({ q: q!, k: k!, v: v!, sequences, layer: 0, heads, kvHeads, headDim }));
      });
    }

    const routings = [
      { topK: 4, normTopKProb: false },
      { topK: 4, normTopKProb: true },
      { topK: 4, normTopKProb: false, mode: 'expert_choice' as const, capacity: 10 },
    ];
    for (const opts of routings) {
      it(`router (${opts.mode ?? 'token_choice'}${opts.normTopKProb ? ', norm_topk_prob' : ''}): same choices, probabilities and weights`, () => {
        const logits = input([40, 16], 3);
        const ids = (b: TrainingBackend) => {
          const x = b.zeros(logits.shape);
          b.write(x, logits.values);
          const r = b.router(x, opts);
          return [Array.from(r.expertIds), Array.from(r.tokenIds)];
        };
        assert.deepEqual(ids(backend), ids(reference), 'same assignments');
        compare(backend, 'router probs', 16, [logits], (t, [x]) => t.router(x!, opts).probs);
        compare(backend, 'router weights', 16, [logits], (t, [x]) => t.router(x!, opts).weights);
      });

      it(`grouped SwiGLU experts (${opts.mode ?? 'token_choice'}): input, routing-weight and expert weight gradients`, () => {
        const [tokens, hidden, ffn, experts] = [40, 48, 40, 16];
        const probe = reference.zeros([tokens, experts]);
        reference.write(probe, randoms(3, tokens * experts, 3));
        const decided = reference.router(probe, opts);
        const expertInputs = Array.from({ length: 3 * experts }, (_, i) => input(i < 2 * experts ? [ffn, hidden] : [hidden, ffn], 0.3));
        compare(backend, 'experts', Math.max(tokens, hidden, ffn), [input([tokens, hidden]), input([decided.expertIds.length]), ...expertInputs], (t, [x, w, ...p]) => {
          const routing: Routing = { ...decided, probs: w!, weights: w! };
          return t.experts(x!, { gate: p.slice(0, experts), up: p.slice(experts, 2 * experts), down: p.slice(2 * experts) }, routing);
        });
      });
    }

    it('cross-entropy (ignored targets), load-balancing loss, router z-loss', () => {
      const targets = Int32Array.from({ length: 33 }, (_, i) => (i % 7 === 3 ? -1 : (i * 37) % 200));
      compare(backend, 'crossEntropy', 200, [input([33, 200], 4)], (t, [x]) => t.crossEntropy(x!, targets));
      const weights = Float64Array.from({ length: 33 }, (_, i) => ((i * 13) % 9) / 4 - 1); // negative, zero and positive
      compare(backend, 'weightedCrossEntropy', 33 * 200, [input([33, 200], 4)], (t, [x]) => t.weightedCrossEntropy(x!, targets, () => weights));
      const counts = Float64Array.from({ length: 16 }, (_, e) => (e * 5) % 11);
      compare(backend, 'loadBalancingLoss', 40 * 16, [input([40, 16])], (t, [p]) => t.loadBalancingLoss(p!, counts, 0.07));
      compare(backend, 'routerZLoss', 40 * 16, [input([40, 16], 3)], (t, [x]) => t.routerZLoss(x!, 0.03));
    });

    it('AdamW (three steps, a clipping scale, decay on and off) and the sum of squares', () => {
      const state = (b: TrainingBackend) => {
        const tensors = [true, false].map((decay, i) => {
          const make = (values: Float32Array) => {
            const t = b.zeros([values.length]);
            b.write(t, values);
            return t;
          };
          return { value: make(randoms(40 + i, 1000)), grad: make(randoms(50 + i, 1000, 0.01)), m: b.zeros([1000]), v: b.zeros([1000]), decay };
        });
        for (let step = 1; step <= 3; step++) b.adamw(tensors, { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step, gradScale: 0.5 });
        return { tensors: tensors.flatMap((t) => [t.value, t.m, t.v].map((x) => b.toFloat32(x).slice())), sum: b.sumOfSquares(tensors.map((t) => t.grad)) };
      };
      const [mine, theirs] = [state(backend), state(reference)];
      mine.tensors.forEach((values, i) => assertClose(values, theirs.tensors[i]!, 1, `adamw tensor ${i}`));
      assert.ok(Math.abs(mine.sum - theirs.sum) <= 1e-5 * theirs.sum, `sum of squares ${mine.sum} vs ${theirs.sum}`);
    });
  });
}

describe('which implementation runs each op', () => {
  it('native: every op natively except the listed exceptions (printed)', { skip: announceSkip(backendCases[1]!.skip) }, () => {
    const backend = backendCases[1]!.create() as NativeBackend;
    const table = backend.implementations();
    for (const [op, how] of table) console.log(`# native ${op}: ${how}`);
    for (const [op, how] of table) if (how !== 'native' && how !== 'host copy') assert.ok(NATIVE_EXCEPTIONS.has(op), `${op} runs ${how} but is not a listed exception`);
    // No op of training runs TypeScript inside the native backend (float32 weights, as training has).
    const training = ['matmul', 'rmsnorm', 'rope', 'attention', 'router', 'experts', 'add', 'crossEntropy', 'weightedCrossEntropy', 'loadBalancingLoss', 'routerZLoss', 'scale',
      'attentionForward', 'expertsForward', 'crossEntropyForward', 'weightedCrossEntropyForward', 'accumulate', 'accumulateRows', 'embeddingBackward', 'matmulBackward', 'rmsnormBackward',
      'ropeBackward', 'attentionBackward', 'routerBackward', 'expertsBackward', 'crossEntropyBackward', 'weightedCrossEntropyBackward', 'loadBalancingBackward', 'routerZBackward', 'sumOfSquares', 'adamw'];
    for (const op of training) assert.equal(table.get(op), 'native', op);
  });
});

describe('lower instruction sets', () => {
  // The kernels dispatch on the CPU (AVX-512 here); OLMOE_SIMD forces the AVX2 and baseline versions, so this file
  // runs again in a child process with each and must pass there too.
  for (const simd of ['avx2', 'scalar']) {
    it(`the whole file passes with OLMOE_SIMD=${simd}`, { skip: process.env.OLMOE_SIMD ? 'already forced' : announceSkip(backendCases[1]!.skip) }, () => {
      const env: NodeJS.ProcessEnv = { ...process.env, OLMOE_SIMD: simd };
      delete env.NODE_TEST_CONTEXT; // a top-level run of its own, reporting to its stdout
      const child = spawnSync(process.execPath, ['--test', fileURLToPath(import.meta.url)], { env, encoding: 'utf8' });
      assert.equal(child.status, 0, child.stdout.split('\n').filter((l) => /not ok|error/.test(l)).slice(0, 10).join('\n'));
      assert.match(child.stdout, /# pass [1-9]/);
    });
  }
});
