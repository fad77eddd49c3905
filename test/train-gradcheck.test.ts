// The reference backend's backward of every op, through the autograd tape, against central finite differences in
// float64 (the law a gradient must obey); the auxiliary losses against their closed forms computed here
// independently (spec §3.8); and the whole model's gradient, every parameter, for every variant.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Routing, Tensor } from '../src/core/backend.js';
import { Tape } from '../src/autograd/tape.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { floats } from '../src/backends/reference/tensor.js';
import { TrainModel, type RoutingMode } from '../src/train/model.js';
import { parseConfig } from '../src/model/config.js';
import { createRng } from '../src/core/rng.js';
import { centralDifference } from './finite-difference.js';

const backend = new ReferenceBackend({ precision: 'f64' });
const rng = createRng(7);
const normal = (n: number, std = 1): Float64Array =>
  Float64Array.from({ length: n }, () => std * Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng()));

interface Input {
  data: Float64Array;
  shape: number[];
}

function tensorOf(values: Float64Array, shape: readonly number[]): Tensor {
  const t = backend.zeros(shape);
  backend.write(t, values);
  return t;
}

/** Σ r ⊙ op(inputs) with r random: its gradient checks every output element's dependence on every input. */
function projected(inputs: Input[], build: (tape: Tape, leaves: Tensor[]) => Tensor, r: { values?: Float64Array }, withGrad: boolean) {
  const tape = new Tape(backend, { grad: withGrad });
  const leaves = inputs.map((input) => tape.param(tensorOf(input.data, input.shape), backend.zeros(input.shape)));
  const out = build(tape, leaves);
  const values = floats((out as unknown as { value: Tensor }).value);
  r.values ??= normal(values.length);
  if (withGrad) tape.backwardWith(out, tensorOf(r.values, out.shape));
  let loss = 0;
  values.forEach((v, i) => (loss += v * r.values![i]!));
  return { loss, leaves: withGrad ? leaves.map((l) => floats((l as unknown as { grad: Tensor }).grad)) : [] };
}

/** ‖analytic − numeric‖ / ‖analytic + numeric‖ per input, numeric by central differences (h = 1e-5), must be < 1e-6. */
function gradCheck(name: string, inputs: Input[], build: (tape: Tape, leaves: Tensor[]) => Tensor): void {
  const r: { values?: Float64Array } = {};
  const analytic = projected(inputs, build, r, true).leaves;
  inputs.forEach((input, i) => {
    const numeric = new Float64Array(input.data.length);
    for (let j = 0; j < input.data.length; j++) numeric[j] = centralDifference(input.data, j, () => projected(inputs, build, r, false).loss);
    const error = relativeError(analytic[i]!, numeric);
    assert.ok(error < 1e-6, `${name}: input ${i} relative error ${error.toExponential(2)}`);
  });
}

function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    diff += (a[i]! - b[i]!) ** 2;
    sum += (Math.abs(a[i]!) + Math.abs(b[i]!)) ** 2;
  }
  return sum === 0 ? 0 : Math.sqrt(diff / sum);
}

const input = (shape: number[], std = 1): Input => ({ data: normal(shape.reduce((a, b) => a * b, 1), std), shape });

test('embedding: gradient scatter-adds into the rows read (repeated ids included)', () => {
  gradCheck('embedding', [input([5, 3])], (tape, [table]) => tape.embedding(table!, Int32Array.of(2, 0, 2, 3)));
});

test('matmul: input and weight gradients', () => {
  gradCheck('matmul', [input([4, 5]), input([3, 5])], (tape, [x, w]) => tape.matmul(x!, w!));
});

test('rmsnorm: input and gain gradients', () => {
  gradCheck('rmsnorm', [input([3, 6]), input([6])], (tape, [x, w]) => tape.rmsnorm(x!, w!, 1e-5));
});

test('rope: gradient is the inverse rotation', () => {
  gradCheck('rope', [input([3, 8])], (tape, [x]) => tape.rope(x!, Int32Array.of(0, 1, 7), { heads: 2, headDim: 4, theta: 10000 }));
});

test('add, scale, rows and concatRows', () => {
  gradCheck('add', [input([2, 3]), input([2, 3])], (tape, [a, b]) => tape.add(a!, b!));
  gradCheck('scale', [input([2, 3])], (tape, [a]) => tape.scale(a!, -0.7));
  gradCheck('rows', [input([4, 3])], (tape, [a]) => tape.rows(a!, 1, 2));
  gradCheck('concatRows', [input([1, 3]), input([2, 3])], (tape, [a, b]) => tape.concatRows([a!, b!, a!]));
});

test('cross-entropy: mean over counted tokens, ignored targets excluded', () => {
  const targets = Int32Array.of(1, -1, 4, 0);
  gradCheck('crossEntropy', [input([4, 5])], (tape, [logits]) => tape.crossEntropy(logits!, targets));
  const value = floats(backend.crossEntropy(tensorOf(Float64Array.of(1, 2, 3, 0, 0, 0), [2, 3]), Int32Array.of(2, 0)))[0]!;
  const expected = (Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)) - 3 + Math.log(3)) / 2;
  assert.ok(Math.abs(value - expected) < 1e-12, `${value} vs ${expected}`);
});

test('causal attention with grouped key/value heads over two sequences of different lengths; the future is masked', () => {
  const [heads, kvHeads, headDim] = [4, 2, 2];
  const sequences = [{ tokens: 3, start: 0 }, { tokens: 2, start: 0 }];
  const args = (q: Tensor, k: Tensor, v: Tensor) => ({ q, k, v, sequences, layer: 0, heads, kvHeads, headDim });
  gradCheck('attention', [input([5, 8]), input([5, 4]), input([5, 4])], (tape, [q, k, v]) => tape.attention(args(q!, k!, v!)));
  // The first position of each sequence attends only to itself: its output is its own value row.
  const v = normal(5 * 4);
  const out = floats(backend.attention(args(tensorOf(normal(40), [5, 8]), tensorOf(normal(20), [5, 4]), tensorOf(v, [5, 4]))));
  for (const row of [0, 3]) for (let h = 0; h < 4; h++) for (let d = 0; d < 2; d++) assert.ok(Math.abs(out[row * 8 + h * 2 + d]! - v[row * 4 + Math.floor(h / 2) * 2 + d]!) < 1e-12);
});

test('router: softmax probabilities and the chosen (renormalized) weights, token and expert choice', () => {
  for (const opts of [{ topK: 2, normTopKProb: false }, { topK: 2, normTopKProb: true }, { topK: 2, normTopKProb: false, mode: 'expert_choice' as const, capacity: 2 }]) {
    gradCheck(`router probs ${JSON.stringify(opts)}`, [input([3, 5])], (tape, [x]) => tape.router(x!, opts).probs);
    gradCheck(`router weights ${JSON.stringify(opts)}`, [input([3, 5])], (tape, [x]) => tape.router(x!, opts).weights);
  }
});

test('grouped SwiGLU experts: input, routing-weight and every expert weight gradient (token and expert choice)', () => {
  const [T, D, F, E] = [5, 4, 3, 3];
  for (const opts of [{ topK: 2, normTopKProb: false }, { topK: 2, normTopKProb: false, mode: 'expert_choice' as const, capacity: 3 }]) {
    const decided = backend.router(tensorOf(normal(T * E), [T, E]), opts);
    const assignments = decided.expertIds.length;
    const expertInputs = Array.from({ length: 3 * E }, (_, i) => input(i < 2 * E ? [F, D] : [D, F], 0.7));
    gradCheck(`experts ${opts.mode ?? 'token_choice'}`, [input([T, D]), input([assignments]), ...expertInputs], (tape, [x, w, ...p]) => {
      const routing: Routing = { ...decided, weights: w! };
      return tape.experts(x!, { gate: p.slice(0, E), up: p.slice(E, 2 * E), down: p.slice(2 * E) }, routing);
    });
  }
});

test('load-balancing and z-loss equal their closed forms and pass the gradient check', () => {
  const [T, E, K, L] = [4, 3, 2, 2];
  const logits = normal(T * E);
  const probs = new Float64Array(T * E);
  for (let t = 0; t < T; t++) {
    const z = [0, 1, 2].reduce((s, e) => s + Math.exp(logits[t * E + e]!), 0);
    for (let e = 0; e < E; e++) probs[t * E + e] = Math.exp(logits[t * E + e]!) / z;
  }
  const counts = Float64Array.of(3, 1, 4); // T·K = 8 slots
  // MB-OLMOE: lb = (E · 0.01) / (L · T · K) · Σ_e c[e] · mean_t p[t, e];  z = 0.001 · Σ_t lse_t² / (L · T · K)
  let lb = 0;
  for (let e = 0; e < E; e++) lb += (counts[e]! * [0, 1, 2, 3].reduce((s, t) => s + probs[t * E + e]!, 0)) / T;
  lb *= (E * 0.01) / (L * T * K);
  let z = 0;
  for (let t = 0; t < T; t++) z += Math.log([0, 1, 2].reduce((s, e) => s + Math.exp(logits[t * E + e]!), 0)) ** 2;
  z *= 0.001 / (L * T * K);
  const scalar = (t: Tensor) => floats(t)[0]!;
  assert.ok(Math.abs(scalar(backend.loadBalancingLoss(tensorOf(probs, [T, E]), counts, (0.01 * E) / (L * T * K))) - lb) < 1e-15);
  assert.ok(Math.abs(scalar(backend.routerZLoss(tensorOf(logits, [T, E]), 0.001 / (L * T * K))) - z) < 1e-15);
  // A perfectly balanced router (uniform p, equal counts) costs exactly the weight per layer / L.
  const balanced = scalar(backend.loadBalancingLoss(tensorOf(new Float64Array(T * E).fill(1 / E), [T, E]), new Float64Array(E).fill((T * K) / E), (0.01 * E) / (L * T * K)));
  assert.ok(Math.abs(balanced - 0.01 / L) < 1e-15);
  gradCheck('loadBalancingLoss', [{ data: probs, shape: [T, E] }], (tape, [p]) => tape.loadBalancingLoss(p!, counts, 0.3));
  gradCheck('routerZLoss', [{ data: logits, shape: [T, E] }], (tape, [x]) => tape.routerZLoss(x!, 0.3));
});

function tinyConfig(extra: Record<string, unknown> = {}) {
  return parseConfig({
    model_type: 'olmoe', vocab_size: 11, hidden_size: 8, intermediate_size: 3, num_hidden_layers: 2, num_attention_heads: 2,
    num_key_value_heads: 2, num_experts: 4, num_experts_per_tok: 2, max_position_embeddings: 16, rms_norm_eps: 1e-5, ...extra,
  });
}

const VARIANTS: readonly [string, RoutingMode, Record<string, unknown>][] = [
  ['token choice', 'token_choice', {}],
  ['token choice, norm_topk_prob', 'token_choice', { norm_topk_prob: true }],
  ['expert choice', 'expert_choice', {}],
  ['token choice + shared expert', 'token_choice', { shared_expert_intermediate_size: 5 }],
  ['dense (one expert, top-1)', 'token_choice', { num_experts: 1, num_experts_per_tok: 1 }],
  ['grouped-query attention (4 heads, 2 kv heads)', 'token_choice', { num_attention_heads: 4, num_key_value_heads: 2 }],
];

for (const [label, routing, extra] of VARIANTS) {
  test(`whole model (${label}): CE + LBL + z-loss gradient of every parameter`, () => {
    const model = new TrainModel({ config: tinyConfig(extra), routing, capacityFactor: 1 }, backend);
    model.initialize((values) => values.set(normal(values.length, 0.5)));
    const batch = { tokens: Int32Array.of(1, 5, 3, 9, 2, /* row 2 */ 4, 4, 0, 10, 7), sequences: 2, targets: Int32Array.of(5, 3, -1, 2, 4, 0, 10, 7) };
    const weights = { loadBalancing: 0.5, routerZ: 0.5 }; // large, so the auxiliary gradients are visible
    const tape = new Tape(backend);
    tape.backward(model.forward(tape, batch, weights).loss);
    const lossAt = () => floats(model.forward(backend, batch, weights).loss)[0]!; // float64 (result.total is read back as float32)
    for (const param of model.params) {
      const values = floats(param.value);
      const numeric = new Float64Array(values.length);
      for (let j = 0; j < values.length; j++) numeric[j] = centralDifference(values, j, lossAt);
      const error = relativeError(floats(param.grad), numeric);
      assert.ok(error < 1e-6, `${param.name}: relative error ${error.toExponential(2)}`);
    }
  });
}

// Last in the file: it draws from the shared generator, and the whole-model checks above keep their draws.
test('weighted cross-entropy: Σ w_t · nll_t, weights from the forward\'s own per-token values, ignored targets excluded', () => {
  const targets = Int32Array.of(1, -1, 4, 0);
  const weights = Float64Array.of(0.7, 5, -1.3, 0.25); // the ignored target's weight must count nothing
  gradCheck('weightedCrossEntropy', [input([4, 5])], (tape, [logits]) => tape.weightedCrossEntropy(logits!, targets, () => weights));
  // The values weightsOf sees are −log softmax at the targets, computed here independently.
  let seen: Float64Array | null = null;
  const logits = Float64Array.of(1, 2, 3, 0, 0, 0);
  const value = floats(backend.weightedCrossEntropy(tensorOf(logits, [2, 3]), Int32Array.of(2, 0), (nll) => ((seen = nll.slice()), [2, -0.5])))[0]!;
  const nll = [Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)) - 3, Math.log(3)];
  assert.ok(seen && Math.abs(seen[0]! - nll[0]!) < 1e-12 && Math.abs(seen[1]! - nll[1]!) < 1e-12, `nll ${seen}`);
  assert.ok(Math.abs(value - (2 * nll[0]! - 0.5 * nll[1]!)) < 1e-12, `${value}`);
  assert.throws(() => backend.weightedCrossEntropy(tensorOf(logits, [2, 3]), Int32Array.of(2, 0), () => [1]), /1 weights for 2 targets/);
  assert.throws(() => backend.weightedCrossEntropy(tensorOf(logits, [2, 3]), Int32Array.of(2, 0), () => [1, NaN]), /not finite/);
});
