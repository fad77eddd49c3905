/**
 * The training losses and their backward rules (spec §3.8), and the optimizer step (PyTorch's AdamW with
 * clip_grad_norm_'s scaling), in plain loops over the backend's precision.
 * Dimension legend: T tokens, V vocab, E experts.
 */
import type { Tensor } from '../../core/backend.js';
import { IGNORE_TARGET, type AdamWStep, type AdamWTensors, type SavedState, type TokenWeights } from '../../core/training.js';
import { activation, allocFor, asRef, checkShapes, floats, roundingOf, showShape, type Floats, type RefTensor } from './tensor.js';

export function rowLogSumExp(values: Floats, at: number, width: number): number {
  let max = -Infinity;
  for (let i = 0; i < width; i++) max = Math.max(max, values[at + i]!);
  let sum = 0;
  for (let i = 0; i < width; i++) sum += Math.exp(values[at + i]! - max);
  return max + Math.log(sum);
}

/** Targets inside the vocabulary or IGNORE_TARGET, one per logits row; returns how many count. */
export function checkTargets(logits: Tensor, targets: Int32Array): number {
  const vocab = asRef(logits).cols;
  checkShapes('crossEntropy', asRef(logits).rows === targets.length, () => `logits ${showShape(logits)} for ${targets.length} targets`);
  const bad = targets.findIndex((id) => id >= vocab || (id < 0 && id !== IGNORE_TARGET));
  checkShapes('crossEntropy', bad < 0, () => `target ${targets[bad]} outside the vocabulary of ${vocab}`);
  return targets.reduce((n, id) => n + (id === IGNORE_TARGET ? 0 : 1), 0);
}

/** Mean over counted targets of logsumexp(row) − row[target] (0 when none counts). */
export function crossEntropy(logits: Tensor, targets: Int32Array): RefTensor {
  const counted = checkTargets(logits, targets);
  const [values, vocab] = [floats(logits), asRef(logits).cols];
  let total = 0;
  targets.forEach((target, t) => {
    if (target !== IGNORE_TARGET) total += rowLogSumExp(values, t * vocab, vocab) - values[t * vocab + target]!;
  });
  const out = allocFor(1, logits);
  out[0] = counted ? total / counted : 0;
  return activation(out, [1]);
}

export function crossEntropyForward(logits: Tensor, targets: Int32Array): { out: RefTensor; saved: SavedState } {
  return { out: crossEntropy(logits, targets), saved: { op: 'crossEntropy' } };
}

/** dLogits += dLoss / counted · (softmax(row) − onehot(target)) on counted rows. */
export function crossEntropyBackward(args: { logits: Tensor; targets: Int32Array; dLoss: Tensor; dLogits: Tensor }): void {
  const counted = checkTargets(args.logits, args.targets);
  const [values, grad, vocab] = [floats(args.logits), floats(args.dLogits), asRef(args.logits).cols];
  const scale = floats(args.dLoss)[0]! / Math.max(counted, 1);
  args.targets.forEach((target, t) => {
    if (target === IGNORE_TARGET) return;
    const lse = rowLogSumExp(values, t * vocab, vocab);
    for (let i = 0; i < vocab; i++) grad[t * vocab + i]! += scale * Math.exp(values[t * vocab + i]! - lse);
    grad[t * vocab + target]! -= scale;
  });
}

/** What the weighted cross-entropy's backward needs: the weights its forward computed. */
interface WeightedCrossEntropyState extends SavedState {
  readonly weights: Float64Array;
}

/** Per-token −log softmax(row)[target] (0 at IGNORE_TARGET), in float64. */
function tokenNll(logits: Tensor, targets: Int32Array): Float64Array {
  checkTargets(logits, targets);
  const [values, vocab] = [floats(logits), asRef(logits).cols];
  return Float64Array.from(targets, (target, t) => (target === IGNORE_TARGET ? 0 : rowLogSumExp(values, t * vocab, vocab) - values[t * vocab + target]!));
}

/** The host weights of `weightsOf`, checked: one finite number per target. */
export function tokenWeights(weightsOf: TokenWeights, nll: Float64Array, targets: Int32Array): Float64Array {
  const weights = Float64Array.from(weightsOf(nll));
  checkShapes('weightedCrossEntropy', weights.length === targets.length, () => `${weights.length} weights for ${targets.length} targets`);
  const bad = weights.findIndex((w) => !Number.isFinite(w));
  checkShapes('weightedCrossEntropy', bad < 0, () => `weight ${weights[bad]} at token ${bad} is not finite`);
  targets.forEach((target, t) => target === IGNORE_TARGET && (weights[t] = 0));
  return weights;
}

export function weightedCrossEntropyForward(logits: Tensor, targets: Int32Array, weightsOf: TokenWeights): { out: RefTensor; saved: WeightedCrossEntropyState } {
  const nll = tokenNll(logits, targets);
  const weights = tokenWeights(weightsOf, nll, targets);
  let total = 0;
  nll.forEach((value, t) => (total += weights[t]! * value));
  const out = allocFor(1, logits);
  out[0] = total;
  return { out: activation(out, [1]), saved: { op: 'weightedCrossEntropy', weights } };
}

export function weightedCrossEntropy(logits: Tensor, targets: Int32Array, weightsOf: TokenWeights): RefTensor {
  return weightedCrossEntropyForward(logits, targets, weightsOf).out;
}

/** dLogits[t] += dLoss · w_t · (softmax(row_t) − onehot(target_t)). */
export function weightedCrossEntropyBackward(args: { logits: Tensor; targets: Int32Array; saved: SavedState; dLoss: Tensor; dLogits: Tensor }): void {
  const { weights } = args.saved as WeightedCrossEntropyState;
  const [values, grad, vocab] = [floats(args.logits), floats(args.dLogits), asRef(args.logits).cols];
  const dLoss = floats(args.dLoss)[0]!;
  args.targets.forEach((target, t) => {
    if (target === IGNORE_TARGET || weights[t] === 0) return;
    const scale = dLoss * weights[t]!;
    const lse = rowLogSumExp(values, t * vocab, vocab);
    for (let i = 0; i < vocab; i++) grad[t * vocab + i]! += scale * Math.exp(values[t * vocab + i]! - lse);
    grad[t * vocab + target]! -= scale;
  });
}

/** scale · Σ_e counts[e] · mean_t probs[t, e]. */
export function loadBalancingLoss(probs: Tensor, counts: Float64Array, scale: number): RefTensor {
  const [p, tokens, width] = [floats(probs), asRef(probs).rows, asRef(probs).cols];
  checkShapes('loadBalancingLoss', counts.length === width, () => `${counts.length} counts for probs ${showShape(probs)}`);
  let total = 0;
  for (let t = 0; t < tokens; t++) for (let e = 0; e < width; e++) total += counts[e]! * p[t * width + e]!;
  const out = allocFor(1, probs);
  out[0] = (scale * total) / tokens;
  return activation(out, [1]);
}

export function loadBalancingBackward(args: { probs: Tensor; counts: Float64Array; scale: number; dLoss: Tensor; dProbs: Tensor }): void {
  const [tokens, width] = [asRef(args.probs).rows, asRef(args.probs).cols];
  const grad = floats(args.dProbs);
  const factor = (floats(args.dLoss)[0]! * args.scale) / tokens;
  for (let t = 0; t < tokens; t++) for (let e = 0; e < width; e++) grad[t * width + e]! += factor * args.counts[e]!;
}

/** scale · Σ_t logsumexp(logits_t)². */
export function routerZLoss(logits: Tensor, scale: number): RefTensor {
  const [values, tokens, width] = [floats(logits), asRef(logits).rows, asRef(logits).cols];
  let total = 0;
  for (let t = 0; t < tokens; t++) total += rowLogSumExp(values, t * width, width) ** 2;
  const out = allocFor(1, logits);
  out[0] = scale * total;
  return activation(out, [1]);
}

/** d/dlogit_te of scale · lse_t² = scale · 2 · lse_t · softmax_te. */
export function routerZBackward(args: { logits: Tensor; scale: number; dLoss: Tensor; dLogits: Tensor }): void {
  const [values, grad, tokens, width] = [floats(args.logits), floats(args.dLogits), asRef(args.logits).rows, asRef(args.logits).cols];
  for (let t = 0; t < tokens; t++) {
    const lse = rowLogSumExp(values, t * width, width);
    const factor = floats(args.dLoss)[0]! * args.scale * 2 * lse;
    for (let e = 0; e < width; e++) grad[t * width + e]! += factor * Math.exp(values[t * width + e]! - lse);
  }
}

export function sumOfSquares(xs: readonly Tensor[]): number {
  let total = 0;
  for (const x of xs) for (const value of floats(x)) total += value * value;
  return total;
}

/**
 * PyTorch's AdamW: decay first (p ← p·(1 − lr·wd)), then p ← p − lr·m̂/(√v̂ + ε) with m̂ = m/(1 − β1ᵗ),
 * v̂ = v/(1 − β2ᵗ). Each element is computed in float64 and rounded once when stored (moments of the
 * parameter's precision, as PyTorch keeps fp32 state); the gradient is first scaled (clipping) and rounded.
 */
export function adamw(params: readonly AdamWTensors[], s: AdamWStep): void {
  const correction1 = 1 - s.beta1 ** s.step;
  const sqrtCorrection2 = Math.sqrt(1 - s.beta2 ** s.step);
  const stepSize = s.lr / correction1;
  for (const p of params) {
    const [data, grad, m, v] = [floats(p.value), floats(p.grad), floats(p.m), floats(p.v)];
    const round = roundingOf(grad);
    const keep = p.decay ? 1 - s.lr * s.weightDecay : 1;
    for (let j = 0; j < data.length; j++) {
      const g = s.gradScale === 1 ? grad[j]! : round(grad[j]! * s.gradScale);
      m[j] = s.beta1 * m[j]! + (1 - s.beta1) * g;
      v[j] = s.beta2 * v[j]! + (1 - s.beta2) * g * g;
      data[j] = data[j]! * keep - (stepSize * m[j]!) / (Math.sqrt(v[j]!) / sqrtCorrection2 + s.eps);
    }
  }
}
