// Every backward rule of the training tape against central finite differences in float64 (the law a gradient
// must obey), plus the auxiliary losses against their closed forms computed here independently (spec §3.8).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Tape, Var, type Floats } from '../src/train/autograd.js';
import { causalAttention } from '../src/train/attention.js';
import { referenceGemm } from '../src/train/kernels.js';
import { TrainModel } from '../src/train/model.js';
import { add, crossEntropy, embedding, linear, rmsnorm, rope, weightedSum } from '../src/train/ops.js';
import { experts, gather, loadBalancingLoss, normalizeGroups, routerZLoss, softmaxRows } from '../src/train/moe-ops.js';
import { expertChoice, tokenChoice } from '../src/train/routing.js';
import { parseConfig } from '../src/model/config.js';
import { createRng } from '../src/core/rng.js';
import { ropeInverseFrequencies } from '../src/core/rope.js';

const rng = createRng(7);
const normal = (n: number, std = 1): Float64Array =>
  Float64Array.from({ length: n }, () => std * Math.sqrt(-2 * Math.log(1 - rng())) * Math.cos(2 * Math.PI * rng()));

/** Σ r ⊙ value: a scalar whose gradient w.r.t. `value` is r, so every output element is tested. */
function project(tape: Tape, value: Var, r: Float64Array): Var {
  const data = tape.alloc(1);
  for (let i = 0; i < value.size; i++) data[0]! += r[i]! * value.data[i]!;
  const out = tape.output(data, [1], [value]);
  tape.record(out, (dy) => {
    const grad = tape.gradOf(value);
    for (let i = 0; i < value.size; i++) grad[i]! += r[i]! * dy[0]!;
  });
  return out;
}

interface Input {
  data: Float64Array;
  shape: number[];
}

/**
 * ‖analytic − numeric‖ / ‖analytic + numeric‖ per input, numeric by central differences (h = 1e-5), must be < 1e-6.
 * `build` maps leaf inputs to an output; a random projection makes it a scalar unless it already is one.
 */
function gradCheck(name: string, inputs: Input[], build: (tape: Tape, leaves: Var[]) => Var): void {
  let projection: Float64Array | null = null;
  const lossOf = (withGrad: boolean): { loss: number; leaves: Var[] } => {
    const tape = new Tape('f64', referenceGemm);
    const leaves = inputs.map((input) => (withGrad ? tape.leaf(input.data, input.shape) : tape.constant(input.data, input.shape)));
    const out = build(tape, leaves);
    projection ??= out.size === 1 ? Float64Array.of(1) : normal(out.size);
    const loss = project(tape, out, projection);
    if (withGrad) tape.backward(loss);
    return { loss: loss.item(), leaves };
  };
  const analytic = lossOf(true).leaves.map((leaf) => leaf.grad ?? new Float64Array(leaf.size));
  inputs.forEach((input, i) => {
    const numeric = new Float64Array(input.data.length);
    const h = 1e-5;
    for (let j = 0; j < input.data.length; j++) {
      const saved = input.data[j]!;
      input.data[j] = saved + h;
      const plus = lossOf(false).loss;
      input.data[j] = saved - h;
      const minus = lossOf(false).loss;
      input.data[j] = saved;
      numeric[j] = (plus - minus) / (2 * h);
    }
    const error = relativeError(analytic[i]!, numeric);
    assert.ok(error < 1e-6, `${name}: input ${i} relative error ${error.toExponential(2)}`);
  });
}

function relativeError(a: Floats, b: Floats): number {
  let diff = 0;
  let sum = 0;
  for (let i = 0; i < a.length; i++) {
    diff += (a[i]! - b[i]!) ** 2;
    sum += (Math.abs(a[i]!) + Math.abs(b[i]!)) ** 2;
  }
  return sum === 0 ? 0 : Math.sqrt(diff / sum);
}

test('embedding: gradient scatter-adds into the rows read (repeated ids included)', () => {
  const ids = Int32Array.of(2, 0, 2, 3);
  gradCheck('embedding', [{ data: normal(5 * 3), shape: [5, 3] }], (tape, [table]) => embedding(tape, table!, ids));
});

test('linear: input and weight gradients', () => {
  gradCheck('linear', [{ data: normal(4 * 5), shape: [4, 5] }, { data: normal(3 * 5), shape: [3, 5] }], (tape, [x, w]) => linear(tape, x!, w!));
});

test('rmsnorm: input and gain gradients', () => {
  gradCheck('rmsnorm', [{ data: normal(3 * 6), shape: [3, 6] }, { data: normal(6), shape: [6] }], (tape, [x, w]) => rmsnorm(tape, x!, w!, 1e-5));
});

test('rope: gradient is the inverse rotation', () => {
  const args = { positions: Int32Array.of(0, 1, 7), heads: 2, headDim: 4, inverseFrequencies: ropeInverseFrequencies(4, 10000) };
  gradCheck('rope', [{ data: normal(3 * 8), shape: [3, 8] }], (tape, [x]) => rope(tape, x!, args));
});

test('add and weightedSum', () => {
  gradCheck('add', [{ data: normal(6), shape: [2, 3] }, { data: normal(6), shape: [2, 3] }], (tape, [a, b]) => add(tape, a!, b!));
  gradCheck('weightedSum', [{ data: normal(1), shape: [1] }, { data: normal(1), shape: [1] }], (tape, [a, b]) => weightedSum(tape, [a!, b!], [0.5, -2]));
});

test('cross-entropy: mean over counted tokens, ignored targets excluded', () => {
  const targets = Int32Array.of(1, -1, 4, 0);
  gradCheck('crossEntropy', [{ data: normal(4 * 5), shape: [4, 5] }], (tape, [logits]) => crossEntropy(tape, logits!, targets));
  const tape = new Tape('f64', referenceGemm);
  const logits = Float64Array.of(1, 2, 3, 0, 0, 0);
  const value = crossEntropy(tape, tape.constant(logits, [2, 3]), Int32Array.of(2, 0)).item();
  const expected = (Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3)) - 3 + Math.log(3)) / 2;
  assert.ok(Math.abs(value - expected) < 1e-12, `${value} vs ${expected}`);
});

test('causal attention with grouped key/value heads: q, k, v gradients; the future is masked', () => {
  const shape = { sequences: 2, length: 3, heads: 4, kvHeads: 2, headDim: 2 };
  const rows = shape.sequences * shape.length;
  gradCheck('attention', [
    { data: normal(rows * 8), shape: [rows, 8] },
    { data: normal(rows * 4), shape: [rows, 4] },
    { data: normal(rows * 4), shape: [rows, 4] },
  ], (tape, [q, k, v]) => causalAttention(tape, q!, k!, v!, shape));
  // The first position of each sequence attends only to itself: its output is its own value row.
  const tape = new Tape('f64', referenceGemm);
  const v = normal(rows * 4);
  const out = causalAttention(tape, tape.constant(normal(rows * 8), [rows, 8]), tape.constant(normal(rows * 4), [rows, 4]), tape.constant(v, [rows, 4]), shape);
  for (const b of [0, 1]) for (let h = 0; h < 4; h++) for (let d = 0; d < 2; d++) {
    assert.ok(Math.abs(out.data[b * 3 * 8 + h * 2 + d]! - v[b * 3 * 4 + Math.floor(h / 2) * 2 + d]!) < 1e-12);
  }
});

test('router softmax, gather of the chosen probabilities, renormalisation', () => {
  gradCheck('softmaxRows', [{ data: normal(3 * 5), shape: [3, 5] }], (tape, [x]) => softmaxRows(tape, x!));
  const index = Int32Array.of(0, 4, 7, 7, 11);
  gradCheck('gather', [{ data: normal(12), shape: [12] }], (tape, [x]) => gather(tape, x!, index));
  gradCheck('normalizeGroups', [{ data: Float64Array.from(normal(6), (v) => 0.5 + Math.abs(v)), shape: [6] }], (tape, [x]) => normalizeGroups(tape, x!, 3));
});

test('grouped SwiGLU experts: input, routing-weight and every expert weight gradient', () => {
  const [T, D, F, E, K] = [5, 4, 3, 3, 2];
  const route = tokenChoice(Float64Array.from(normal(T * E), Math.abs), T, E, K);
  const expertInputs = Array.from({ length: 3 * E }, (_, i) => ({ data: normal(D * F, 0.7), shape: i < 2 * E ? [F, D] : [D, F] }));
  gradCheck('experts', [{ data: normal(T * D), shape: [T, D] }, { data: normal(T * K), shape: [T * K] }, ...expertInputs], (tape, [x, w, ...p]) =>
    experts(tape, x!, { gate: p.slice(0, E), up: p.slice(E, 2 * E), down: p.slice(2 * E) }, route.assignments, w!));
});

test('token choice picks the K most probable experts per token; expert choice the C most probable tokens per expert', () => {
  const probs = Float64Array.of(0.1, 0.6, 0.3, /* t1 */ 0.5, 0.2, 0.3, /* t2 */ 0.2, 0.2, 0.6);
  const tc = tokenChoice(probs, 3, 3, 2);
  assert.deepEqual([...tc.gatherIndex], [1, 2, 3, 5, 8, 6]); // t2 ties 0.2/0.2 → lower expert index 0
  assert.deepEqual(tc.assignments.tokens.map((l) => [...l]), [[1, 2], [0], [0, 1, 2]]);
  const ec = expertChoice(probs, 3, 3, 1);
  assert.deepEqual(ec.assignments.tokens.map((l) => [...l]), [[1], [0], [2]]);
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
  const tape = new Tape('f64', referenceGemm);
  assert.ok(Math.abs(loadBalancingLoss(tape, tape.constant(probs, [T, E]), counts, (0.01 * E) / (L * T * K)).item() - lb) < 1e-15);
  assert.ok(Math.abs(routerZLoss(tape, tape.constant(logits, [T, E]), 0.001 / (L * T * K)).item() - z) < 1e-15);
  // A perfectly balanced router (uniform p, equal counts) costs exactly the weight per layer / L.
  const uniform = new Float64Array(T * E).fill(1 / E);
  const balanced = loadBalancingLoss(tape, tape.constant(uniform, [T, E]), new Float64Array(E).fill((T * K) / E), (0.01 * E) / (L * T * K)).item();
  assert.ok(Math.abs(balanced - 0.01 / L) < 1e-15);
  gradCheck('loadBalancingLoss', [{ data: probs, shape: [T, E] }], (t, [p]) => loadBalancingLoss(t, p!, counts, 0.3));
  gradCheck('routerZLoss', [{ data: logits, shape: [T, E] }], (t, [x]) => routerZLoss(t, x!, 0.3));
});

function tinyConfig(extra: Record<string, unknown> = {}) {
  return parseConfig({
    model_type: 'olmoe', vocab_size: 11, hidden_size: 8, intermediate_size: 3, num_hidden_layers: 2, num_attention_heads: 2,
    num_key_value_heads: 2, num_experts: 4, num_experts_per_tok: 2, max_position_embeddings: 16, rms_norm_eps: 1e-5, ...extra,
  });
}

for (const [label, routing, extra] of [
  ['token choice', 'token_choice', {}],
  ['token choice, norm_topk_prob', 'token_choice', { norm_topk_prob: true }],
  ['expert choice', 'expert_choice', {}],
  ['token choice + shared expert', 'token_choice', { shared_expert_intermediate_size: 5 }],
] as const) {
  test(`whole model (${label}): CE + LBL + z-loss gradient of every parameter`, () => {
    const model = new TrainModel({ config: tinyConfig(extra), routing, capacityFactor: 1 }, 'f64');
    model.initialize((values) => values.set(normal(values.length, 0.5)));
    const tokens = Int32Array.of(1, 5, 3, 9, 2, /* row 2 */ 4, 4, 0, 10, 7);
    const weights = { loadBalancing: 0.5, routerZ: 0.5 }; // large, so the auxiliary gradients are visible
    const tape = new Tape('f64', referenceGemm);
    tape.backward(model.forward(tape, tokens, 2, weights).loss);
    const lossAt = () => model.forward(new Tape('f64', referenceGemm), tokens, 2, weights).loss.item();
    for (const param of model.params) {
      const numeric = new Float64Array(param.data.length);
      for (let j = 0; j < param.data.length; j++) {
        const saved = param.data[j]!;
        param.data[j] = saved + 1e-5;
        const plus = lossAt();
        param.data[j] = saved - 1e-5;
        const minus = lossAt();
        param.data[j] = saved;
        numeric[j] = (plus - minus) / 2e-5;
      }
      const error = relativeError(param.grad, numeric);
      assert.ok(error < 1e-6, `${param.name}: relative error ${error.toExponential(2)}`);
    }
  });
}
