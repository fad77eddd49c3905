/**
 * Differentiable MoE ops (spec §3.6, §3.8): router softmax, the gather of the chosen experts' probabilities
 * (the gradient flows through the selected probabilities only), optional renormalisation, grouped SwiGLU
 * experts, and the two auxiliary losses of the training code the paper used (MB-OLMOE).
 * Dimension legend: T tokens, D hidden, E experts, K experts per token, F expert width, A assignments.
 */
import { InputError } from '../core/errors.js';
import type { Floats, Tape, Var } from './autograd.js';
import { rowLogSumExp } from './ops.js';

/** Row-wise softmax of router logits [T, E] → probabilities [T, E]. */
export function softmaxRows(tape: Tape, logits: Var): Var {
  const width = logits.shape[1]!;
  const data = tape.alloc(logits.size);
  for (let at = 0; at < logits.size; at += width) {
    const lse = rowLogSumExp(logits.data, at, width);
    for (let i = 0; i < width; i++) data[at + i] = Math.exp(logits.data[at + i]! - lse);
  }
  const out = tape.output(data, logits.shape, [logits]);
  tape.record(out, (dy) => {
    const dx = tape.gradOf(logits);
    for (let at = 0; at < logits.size; at += width) {
      let dot = 0;
      for (let i = 0; i < width; i++) dot += dy[at + i]! * data[at + i]!;
      for (let i = 0; i < width; i++) dx[at + i]! += data[at + i]! * (dy[at + i]! - dot);
    }
  });
  return out;
}

/** values[indices[a]] for each a → [A]. */
export function gather(tape: Tape, values: Var, indices: Int32Array): Var {
  const data = tape.alloc(indices.length);
  indices.forEach((index, a) => (data[a] = values.data[index]!));
  const out = tape.output(data, [indices.length], [values]);
  tape.record(out, (dy) => {
    const dx = tape.gradOf(values);
    indices.forEach((index, a) => (dx[index]! += dy[a]!));
  });
  return out;
}

/** Divide each consecutive group of `groupSize` values by the group's sum (norm_topk_prob). */
export function normalizeGroups(tape: Tape, values: Var, groupSize: number): Var {
  const data = tape.alloc(values.size);
  const sums = new Float64Array(values.size / groupSize);
  for (let g = 0; g < sums.length; g++) {
    for (let i = 0; i < groupSize; i++) sums[g]! += values.data[g * groupSize + i]!;
    for (let i = 0; i < groupSize; i++) data[g * groupSize + i] = values.data[g * groupSize + i]! / sums[g]!;
  }
  const out = tape.output(data, values.shape, [values]);
  tape.record(out, (dy) => {
    const dx = tape.gradOf(values);
    for (let g = 0; g < sums.length; g++) {
      let dot = 0;
      for (let i = 0; i < groupSize; i++) dot += dy[g * groupSize + i]! * data[g * groupSize + i]!;
      for (let i = 0; i < groupSize; i++) dx[g * groupSize + i]! += (dy[g * groupSize + i]! - dot) / sums[g]!;
    }
  });
  return out;
}

/**
 * Which tokens each expert processes and with which weight: expert e takes tokens `tokens[e][i]`, scaled by
 * `weights[weightIndex[e][i]]`. Token choice gives each token K entries; expert choice gives each expert C.
 */
export interface Assignments {
  readonly tokens: readonly Int32Array[];
  readonly weightIndex: readonly Int32Array[];
}

export interface ExpertParams {
  readonly gate: readonly Var[]; // E × [F, D]
  readonly up: readonly Var[]; // E × [F, D]
  readonly down: readonly Var[]; // E × [D, F]
}

interface ExpertActivations {
  x: Floats; // [n, D] the expert's tokens
  gate: Floats; // [n, F] before SiLU
  up: Floats; // [n, F]
  hidden: Floats; // [n, F] silu(gate) ⊙ up
  y: Floats; // [n, D] expert output before weighting
}

/** out[t] = Σ over t's assignments of weight · down(silu(gate·x_t) ⊙ up·x_t) → [T, D], experts in index order. */
export function experts(tape: Tape, x: Var, params: ExpertParams, assignments: Assignments, weights: Var): Var {
  const [tokens, width] = x.shape as [number, number];
  const ffn = params.gate[0]!.shape[0]!;
  if (assignments.tokens.length !== params.gate.length) throw new InputError(`experts: ${assignments.tokens.length} assignment lists for ${params.gate.length} experts`);
  const data = tape.alloc(tokens * width);
  const saved: (ExpertActivations | null)[] = assignments.tokens.map((list, e) => {
    if (list.length === 0) return null;
    const n = list.length;
    const act: ExpertActivations = { x: tape.alloc(n * width), gate: tape.alloc(n * ffn), up: tape.alloc(n * ffn), hidden: tape.alloc(n * ffn), y: tape.alloc(n * width) };
    list.forEach((t, i) => act.x.set(x.data.subarray(t * width, (t + 1) * width), i * width));
    tape.kernels.gemm({ m: n, n: ffn, k: width, a: act.x, b: params.gate[e]!.data, c: act.gate, transB: true });
    tape.kernels.gemm({ m: n, n: ffn, k: width, a: act.x, b: params.up[e]!.data, c: act.up, transB: true });
    for (let i = 0; i < n * ffn; i++) act.hidden[i] = silu(act.gate[i]!) * act.up[i]!;
    tape.kernels.gemm({ m: n, n: width, k: ffn, a: act.hidden, b: params.down[e]!.data, c: act.y, transB: true });
    const weightIndex = assignments.weightIndex[e]!;
    list.forEach((t, i) => {
      const w = weights.data[weightIndex[i]!]!;
      for (let d = 0; d < width; d++) data[t * width + d]! += w * act.y[i * width + d]!;
    });
    return act;
  });
  const inputs = [x, weights, ...params.gate, ...params.up, ...params.down];
  const out = tape.output(data, [tokens, width], inputs);
  tape.record(out, (dy) => saved.forEach((act, e) => act && expertBackward(tape, { x, weights, params, assignments, act, e, dy, width, ffn })));
  return out;
}

interface ExpertBackwardArgs {
  x: Var;
  weights: Var;
  params: ExpertParams;
  assignments: Assignments;
  act: ExpertActivations;
  e: number;
  dy: Floats;
  width: number;
  ffn: number;
}

function expertBackward(tape: Tape, args: ExpertBackwardArgs): void {
  const { x, weights, params, assignments, act, e, dy, width, ffn } = args;
  const list = assignments.tokens[e]!;
  const weightIndex = assignments.weightIndex[e]!;
  const n = list.length;
  const dWeights = weights.requiresGrad ? tape.gradOf(weights) : null;
  const dOut = tape.alloc(n * width); // d(expert output) = weight · dy[t]
  list.forEach((t, i) => {
    const w = weights.data[weightIndex[i]!]!;
    let dot = 0;
    for (let d = 0; d < width; d++) {
      dOut[i * width + d] = w * dy[t * width + d]!;
      dot += dy[t * width + d]! * act.y[i * width + d]!;
    }
    if (dWeights) dWeights[weightIndex[i]!]! += dot;
  });
  const [gate, up, down] = [params.gate[e]!, params.up[e]!, params.down[e]!];
  const dHidden = tape.alloc(n * ffn);
  tape.kernels.gemm({ m: n, n: ffn, k: width, a: dOut, b: down.data, c: dHidden }); // [n, F] = dOut · down
  if (down.requiresGrad) tape.kernels.gemm({ m: width, n: ffn, k: n, a: dOut, b: act.hidden, c: tape.gradOf(down), transA: true, accumulate: true });
  const dGate = tape.alloc(n * ffn);
  const dUp = tape.alloc(n * ffn);
  for (let i = 0; i < n * ffn; i++) {
    const g = act.gate[i]!;
    const sigmoid = 1 / (1 + Math.exp(-g));
    dUp[i] = dHidden[i]! * g * sigmoid;
    dGate[i] = dHidden[i]! * act.up[i]! * sigmoid * (1 + g * (1 - sigmoid)); // silu'(g)
  }
  if (gate.requiresGrad) tape.kernels.gemm({ m: ffn, n: width, k: n, a: dGate, b: act.x, c: tape.gradOf(gate), transA: true, accumulate: true });
  if (up.requiresGrad) tape.kernels.gemm({ m: ffn, n: width, k: n, a: dUp, b: act.x, c: tape.gradOf(up), transA: true, accumulate: true });
  if (!x.requiresGrad) return;
  const dx = tape.alloc(n * width);
  tape.kernels.gemm({ m: n, n: width, k: ffn, a: dGate, b: gate.data, c: dx });
  tape.kernels.gemm({ m: n, n: width, k: ffn, a: dUp, b: up.data, c: dx, accumulate: true });
  const dInput = tape.gradOf(x);
  list.forEach((t, i) => {
    for (let d = 0; d < width; d++) dInput[t * width + d]! += dx[i * width + d]!;
  });
}

function silu(z: number): number {
  return z / (1 + Math.exp(-z));
}

/**
 * Load-balancing loss of one layer as MB-OLMOE computes it (spec §3.8): scale · Σ_e count[e] · mean_t p[t, e];
 * the counts (how many top-k slots chose e) are constants, so the gradient flows through the mean probabilities.
 * The caller passes scale = weight · E / (L · T · K), which makes a perfectly balanced router cost `weight`.
 */
export function loadBalancingLoss(tape: Tape, probs: Var, counts: Float64Array, scale: number): Var {
  const [tokens, numExperts] = probs.shape as [number, number];
  const data = tape.alloc(1);
  for (let t = 0; t < tokens; t++) for (let e = 0; e < numExperts; e++) data[0]! += (scale * counts[e]! * probs.data[t * numExperts + e]!) / tokens;
  const out = tape.output(data, [1], [probs]);
  tape.record(out, (dy) => {
    const dp = tape.gradOf(probs);
    for (let t = 0; t < tokens; t++) for (let e = 0; e < numExperts; e++) dp[t * numExperts + e]! += (dy[0]! * scale * counts[e]!) / tokens;
  });
  return out;
}

/** Router z-loss of one layer (spec §3.8): scale · Σ_t logsumexp(logits_t)², scale = weight / (L · T · K). */
export function routerZLoss(tape: Tape, logits: Var, scale: number): Var {
  const [tokens, numExperts] = logits.shape as [number, number];
  const lse = new Float64Array(tokens);
  const data = tape.alloc(1);
  for (let t = 0; t < tokens; t++) {
    lse[t] = rowLogSumExp(logits.data, t * numExperts, numExperts);
    data[0]! += scale * lse[t]! ** 2;
  }
  const out = tape.output(data, [1], [logits]);
  tape.record(out, (dy) => {
    const dx = tape.gradOf(logits);
    for (let t = 0; t < tokens; t++) {
      const factor = dy[0]! * scale * 2 * lse[t]!;
      for (let e = 0; e < numExperts; e++) dx[t * numExperts + e]! += factor * Math.exp(logits.data[t * numExperts + e]! - lse[t]!);
    }
  });
  return out;
}
