/**
 * Router and experts of the sparse MoE block (spec §3.6; paper eq. 1).
 * Dimension legend: T tokens, D hidden, E experts, K experts per token, F expert FFN width.
 */
import type { ExpertWeights, Routing, RouterOptions, Tensor } from '../../core/backend.js';
import { indicesByValueDescending } from '../../core/sort.js';
import { matmul } from './ops.js';
import { activation, asRef, checkShapes, f32, showShape, type RefTensor } from './tensor.js';

/** logits = x·gateᵀ; probs = softmax over all E experts; top-K by probability, ties to the lower index. */
export function router(x: Tensor, gate: Tensor, opts: RouterOptions): Routing {
  return routeFromLogits(f32(matmul(x, gate)), asRef(gate).rows, opts);
}

/** Softmax and top-k of router logits [T, E] (shared with backends that compute the logits themselves). */
export function routeFromLogits(logits: Float32Array, numExperts: number, opts: RouterOptions): Routing {
  const tokens = logits.length / numExperts;
  const probs = new Float32Array(logits.length);
  const expertIds = new Int32Array(tokens * opts.topK);
  const weights = new Float32Array(tokens * opts.topK);
  for (let t = 0; t < tokens; t++) {
    softmaxRow(logits, probs, t * numExperts, numExperts);
    topK(probs.subarray(t * numExperts, (t + 1) * numExperts), opts.topK, expertIds.subarray(t * opts.topK));
    for (let k = 0; k < opts.topK; k++) weights[t * opts.topK + k] = probs[t * numExperts + expertIds[t * opts.topK + k]!]!;
    if (opts.normTopKProb) normalize(weights.subarray(t * opts.topK, (t + 1) * opts.topK));
  }
  return { tokens, numExperts, topK: opts.topK, logits, probs, expertIds, weights };
}

function softmaxRow(logits: Float32Array, out: Float32Array, offset: number, width: number): void {
  let max = -Infinity;
  for (let i = 0; i < width; i++) max = Math.max(max, logits[offset + i]!);
  let total = 0;
  for (let i = 0; i < width; i++) total += Math.exp(logits[offset + i]! - max);
  for (let i = 0; i < width; i++) out[offset + i] = Math.exp(logits[offset + i]! - max) / total;
}

/** Indices of the k largest values, descending; equal values keep ascending index order. */
export function topK(values: Float32Array, k: number, out: Int32Array): void {
  const order = indicesByValueDescending(values);
  for (let i = 0; i < k; i++) out[i] = order[i]!;
}

function normalize(values: Float32Array): void {
  let total = 0;
  for (const value of values) total += value;
  for (let i = 0; i < values.length; i++) values[i] = values[i]! / total;
}

/**
 * Σ_k w_k · down_e(silu(gate_e·x) ⊙ up_e·x). Tokens are grouped by expert and experts visited in ascending
 * id, so each token's output accumulates in the same order as HF's `index_add_` loop.
 */
export function experts(x: Tensor, weights: ExpertWeights, routing: Routing): RefTensor {
  const input = f32(x);
  const width = asRef(x).cols;
  checkShapes('experts', asRef(x).rows === routing.tokens, () => `x ${showShape(x)} but routing for ${routing.tokens} tokens`);
  const out = new Float32Array(input.length);
  for (const [expert, assignments] of groupByExpert(routing)) {
    const tokenRows = gatherRows(input, width, assignments.map((a) => a.token));
    const hidden = swiglu(f32(matmul(tokenRows, weights.gate[expert]!)), f32(matmul(tokenRows, weights.up[expert]!)));
    const ffnWidth = asRef(weights.gate[expert]!).rows;
    const y = f32(matmul(activation(hidden, [assignments.length, ffnWidth]), weights.down[expert]!)); // [n, D]
    assignments.forEach(({ token, weight }, i) => {
      for (let d = 0; d < width; d++) out[token * width + d] = out[token * width + d]! + Math.fround(y[i * width + d]! * weight);
    });
  }
  return activation(out, asRef(x).shape);
}

interface Assignment {
  token: number;
  weight: number;
}

function groupByExpert(routing: Routing): Map<number, Assignment[]> {
  const groups = new Map<number, Assignment[]>();
  for (let t = 0; t < routing.tokens; t++) {
    for (let k = 0; k < routing.topK; k++) {
      const expert = routing.expertIds[t * routing.topK + k]!;
      const list = groups.get(expert) ?? groups.set(expert, []).get(expert)!;
      list.push({ token: t, weight: routing.weights[t * routing.topK + k]! });
    }
  }
  return new Map([...groups].sort(([a], [b]) => a - b));
}

function gatherRows(input: Float32Array, width: number, tokens: number[]): RefTensor {
  const out = new Float32Array(tokens.length * width);
  tokens.forEach((token, i) => out.set(input.subarray(token * width, (token + 1) * width), i * width));
  return activation(out, [tokens.length, width]);
}

/** silu(g) ⊙ u, silu(z) = z·sigmoid(z). */
function swiglu(gate: Float32Array, up: Float32Array): Float32Array {
  const out = new Float32Array(gate.length);
  for (let i = 0; i < gate.length; i++) out[i] = (gate[i]! / (1 + Math.exp(-gate[i]!))) * up[i]!;
  return out;
}
