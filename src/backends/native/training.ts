/**
 * The native backend's router, training ops, losses and optimizer: shape checks here, the work in C++
 * (native/src/train-*.cc). Saved states hold what each forward kept for its backward.
 * Dimension legend: T tokens, D hidden, E experts, K top-k, C tokens per expert, A assignments, F expert width,
 * H heads, Hkv kv heads, Hd head dim, V vocab.
 */
import type { AttentionArgs, ExpertWeights, RopeOptions, Routing, RouterOptions, Tensor } from '../../core/backend.js';
import { IGNORE_TARGET, type AdamWStep, type AdamWTensors, type SavedState } from '../../core/training.js';
import { ropeInverseFrequencies } from '../../core/rope.js';
import { activation, asRef, checkShapes, f32, showShape, sizeOf, type RefTensor } from '../reference/tensor.js';
import type { NativeAddon } from './addon.js';

interface AttentionState extends SavedState {
  readonly lse: Float32Array; // [T, H]
}

interface ExpertsState extends SavedState {
  readonly order: Int32Array; // [A]
  readonly gatePre: Float32Array; // [A, F]
  readonly upPre: Float32Array; // [A, F]
  readonly y: Float32Array; // [A, D]
}

interface CrossEntropyState extends SavedState {
  readonly lse: Float32Array; // [T]
  readonly counted: number;
}

const dataOf = (t: Tensor | null): Float32Array | null => (t ? f32(t) : null);

export function router(addon: NativeAddon, logits: Tensor, opts: RouterOptions): Routing {
  const [tokens, experts] = [asRef(logits).rows, asRef(logits).cols];
  const mode = opts.mode ?? 'token_choice';
  const perGroup = mode === 'expert_choice' ? Math.min(opts.capacity ?? 1, tokens) : opts.topK;
  checkShapes('router', mode === 'expert_choice' || opts.topK <= experts, () => `top-${opts.topK} of ${experts} experts`);
  const assignments = mode === 'expert_choice' ? experts * perGroup : tokens * perGroup;
  const probs = new Float32Array(tokens * experts);
  const [expertIds, tokenIds, weights] = [new Int32Array(assignments), new Int32Array(assignments), new Float32Array(assignments)];
  addon.routerForward(f32(logits), tokens, experts, opts.topK, opts.normTopKProb, mode === 'expert_choice', perGroup, probs, expertIds, tokenIds, weights);
  return { tokens, numExperts: experts, mode, perGroup, probs: activation(probs, [tokens, experts]), weights: activation(weights, [assignments]), expertIds, tokenIds };
}

export function routerBackward(addon: NativeAddon, a: { routing: Routing; opts: RouterOptions; dProbs: Tensor | null; dWeights: Tensor | null; dLogits: Tensor }): void {
  const r = a.routing;
  const expertChoice = r.mode === 'expert_choice';
  addon.routerBackward(f32(r.probs), r.tokens, r.numExperts, expertChoice ? a.opts.topK : r.perGroup, a.opts.normTopKProb, expertChoice, expertChoice ? r.perGroup : 0,
    f32(r.probs), r.expertIds, r.tokenIds, f32(r.weights), dataOf(a.dProbs), dataOf(a.dWeights), f32(a.dLogits));
}

/** Whether every expert weight is float32 (the training kernel's operands). */
export function float32Experts(weights: ExpertWeights): boolean {
  return [...weights.gate, ...weights.up, ...weights.down].every((t) => t.dtype === 'f32');
}

export function expertsForward(addon: NativeAddon, x: Tensor, weights: ExpertWeights, routing: Routing): { out: RefTensor; saved: ExpertsState } {
  const [tokens, hidden] = [asRef(x).rows, asRef(x).cols];
  checkShapes('experts', tokens === routing.tokens && weights.gate.length === routing.numExperts, () => `x ${showShape(x)}, ${weights.gate.length} experts, routing for ${routing.tokens} tokens over ${routing.numExperts}`);
  const ffn = weights.gate[0]!.shape[0]!;
  const A = routing.expertIds.length;
  const saved: ExpertsState = { op: 'experts', order: new Int32Array(A), gatePre: new Float32Array(A * ffn), upPre: new Float32Array(A * ffn), y: new Float32Array(A * hidden) };
  const out = new Float32Array(tokens * hidden);
  const list = (ts: readonly Tensor[]) => ts.map(f32);
  addon.expertsForward(f32(x), tokens, hidden, ffn, list(weights.gate), list(weights.up), list(weights.down), routing.expertIds, routing.tokenIds, f32(routing.weights),
    saved.order, saved.gatePre, saved.upPre, saved.y, out);
  return { out: activation(out, asRef(x).shape), saved };
}

export function expertsBackward(addon: NativeAddon, a: {
  x: Tensor; weights: ExpertWeights; routing: Routing; saved: SavedState; dOut: Tensor; dx: Tensor | null; dRoutingWeights: Tensor | null; dWeights: ExpertWeights | null;
}): void {
  const s = a.saved as ExpertsState;
  const [tokens, hidden] = [asRef(a.x).rows, asRef(a.x).cols];
  const ffn = a.weights.gate[0]!.shape[0]!;
  const list = (ts: readonly Tensor[]) => ts.map(f32);
  const d = a.dWeights;
  addon.expertsBackward(f32(a.x), tokens, hidden, ffn, list(a.weights.gate), list(a.weights.up), list(a.weights.down), a.routing.expertIds, a.routing.tokenIds,
    f32(a.routing.weights), s.order, s.gatePre, s.upPre, s.y, f32(a.dOut), dataOf(a.dx), dataOf(a.dRoutingWeights),
    d ? list(d.gate) : null, d ? list(d.up) : null, d ? list(d.down) : null);
}

export function attentionForward(addon: NativeAddon, args: AttentionArgs): { out: RefTensor; saved: AttentionState } {
  checkShapes('attention', args.sequences.every((s) => !s.cache && s.start === 0), () => 'training attends within each sequence (no KV cache, start 0)');
  const lengths = Int32Array.from(args.sequences, (s) => s.tokens);
  const tokens = lengths.reduce((a, b) => a + b, 0);
  checkShapes('attention', sizeOf(args.q) === tokens * args.heads * args.headDim && sizeOf(args.k) === tokens * args.kvHeads * args.headDim && sizeOf(args.v) === sizeOf(args.k),
    () => `q ${showShape(args.q)}, k ${showShape(args.k)}, v ${showShape(args.v)} for ${tokens} tokens, ${args.heads}/${args.kvHeads} heads × ${args.headDim}`);
  const lse = new Float32Array(tokens * args.heads);
  const out = new Float32Array(tokens * args.heads * args.headDim);
  addon.attentionForward(f32(args.q), f32(args.k), f32(args.v), lengths, args.heads, args.kvHeads, args.headDim, lse, out);
  return { out: activation(out, [tokens, args.heads * args.headDim]), saved: { op: 'attention', lse } };
}

export function attentionBackward(addon: NativeAddon, a: { args: AttentionArgs; saved: SavedState; out: Tensor; dOut: Tensor; dq: Tensor; dk: Tensor; dv: Tensor }): void {
  const { args } = a;
  const lengths = Int32Array.from(args.sequences, (s) => s.tokens);
  addon.attentionBackward(f32(args.q), f32(args.k), f32(args.v), lengths, args.heads, args.kvHeads, args.headDim, (a.saved as AttentionState).lse, f32(a.out), f32(a.dOut),
    f32(a.dq), f32(a.dk), f32(a.dv));
}

function checkTargets(logits: Tensor, targets: Int32Array): number {
  const vocab = asRef(logits).cols;
  checkShapes('crossEntropy', asRef(logits).rows === targets.length, () => `logits ${showShape(logits)} for ${targets.length} targets`);
  const bad = targets.findIndex((id) => id >= vocab || (id < 0 && id !== IGNORE_TARGET));
  checkShapes('crossEntropy', bad < 0, () => `target ${targets[bad]} outside the vocabulary of ${vocab}`);
  return targets.reduce((n, id) => n + (id === IGNORE_TARGET ? 0 : 1), 0);
}

export function crossEntropyForward(addon: NativeAddon, logits: Tensor, targets: Int32Array): { out: RefTensor; saved: CrossEntropyState } {
  const counted = checkTargets(logits, targets);
  const lse = new Float32Array(targets.length);
  const sum = addon.crossEntropyForward(f32(logits), targets.length, asRef(logits).cols, targets, lse);
  return { out: activation(Float32Array.of(counted ? sum / counted : 0), [1]), saved: { op: 'crossEntropy', lse, counted } };
}

export function crossEntropyBackward(addon: NativeAddon, a: { logits: Tensor; targets: Int32Array; saved: SavedState; dLoss: Tensor; dLogits: Tensor }): void {
  const s = a.saved as CrossEntropyState;
  const scale = f32(a.dLoss)[0]! / Math.max(s.counted, 1);
  addon.crossEntropyBackward(f32(a.logits), a.targets.length, asRef(a.logits).cols, a.targets, s.lse, scale, f32(a.dLogits));
}

export function loadBalancingLoss(addon: NativeAddon, probs: Tensor, counts: Float64Array, scale: number): RefTensor {
  checkShapes('loadBalancingLoss', counts.length === asRef(probs).cols, () => `${counts.length} counts for probs ${showShape(probs)}`);
  return activation(Float32Array.of(addon.loadBalancingForward(f32(probs), asRef(probs).rows, asRef(probs).cols, counts, scale)), [1]);
}

export function loadBalancingBackward(addon: NativeAddon, a: { probs: Tensor; counts: Float64Array; scale: number; dLoss: Tensor; dProbs: Tensor }): void {
  const tokens = asRef(a.probs).rows;
  addon.loadBalancingBackward(tokens, asRef(a.probs).cols, a.counts, (f32(a.dLoss)[0]! * a.scale) / tokens, f32(a.dProbs));
}

export function routerZLoss(addon: NativeAddon, logits: Tensor, scale: number): RefTensor {
  return activation(Float32Array.of(addon.routerZForward(f32(logits), asRef(logits).rows, asRef(logits).cols, scale)), [1]);
}

export function routerZBackward(addon: NativeAddon, a: { logits: Tensor; scale: number; dLoss: Tensor; dLogits: Tensor }): void {
  addon.routerZBackward(f32(a.logits), asRef(a.logits).rows, asRef(a.logits).cols, f32(a.dLoss)[0]! * a.scale, f32(a.dLogits));
}

export function rmsnormBackward(addon: NativeAddon, a: { x: Tensor; weight: Tensor; eps: number; dOut: Tensor; dx: Tensor | null; dWeight: Tensor | null }): void {
  const x = asRef(a.x);
  checkShapes('rmsnorm', x.cols === sizeOf(a.weight), () => `x ${showShape(a.x)} does not match weight ${showShape(a.weight)}`);
  addon.rmsnormBackward(f32(a.x), f32(a.weight), f32(a.dOut), x.rows, x.cols, a.eps, dataOf(a.dx), dataOf(a.dWeight));
}

export function rope(addon: NativeAddon, x: Tensor, positions: Int32Array, opts: RopeOptions, out: Float32Array, inverseAccumulate: boolean): void {
  const input = asRef(x);
  checkShapes('rope', input.cols === opts.heads * opts.headDim && input.rows === positions.length, () => `x ${showShape(x)} is not [${positions.length}, ${opts.heads}·${opts.headDim}]`);
  addon.ropeRotate(f32(x), positions.length, opts.heads, opts.headDim, positions, ropeInverseFrequencies(opts.headDim, opts.theta), inverseAccumulate, out);
}

export function adamw(addon: NativeAddon, params: readonly AdamWTensors[], s: AdamWStep): void {
  const list = (key: 'value' | 'grad' | 'm' | 'v') => params.map((p) => f32(p[key]));
  addon.adamw(list('value'), list('grad'), list('m'), list('v'), Uint8Array.from(params, (p) => (p.decay ? 1 : 0)), s.lr, s.beta1, s.beta2, s.eps, s.weightDecay, s.step, s.gradScale);
}
