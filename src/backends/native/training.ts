/**
 * The native backend's router, training ops, losses and optimizer: shape checks here, the work in C++
 * (native/src/train-*.cc). Saved states hold what each forward kept for its backward.
 * Dimension legend: T tokens, D hidden, E experts, K top-k, C tokens per expert, A assignments, F expert width,
 * H heads, Hkv kv heads, Hd head dim, V vocab.
 */
import type { AttentionArgs, ExpertWeights, RopeOptions, Routing, RouterOptions, Tensor } from '../../core/backend.js';
import { IGNORE_TARGET, type AdamWStep, type AdamWTensors, type SavedState, type TokenWeights } from '../../core/training.js';
import { ropeInverseFrequencies } from '../../core/rope.js';
import { activation, asRef, checkShapes, f32, showShape, sizeOf, type RefTensor } from '../reference/tensor.js';
import { checkTargets, tokenWeights } from '../reference/losses.js';
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

/**
 * Storage given back for reuse, by length, the least recently used lengths dropped first beyond `limit` bytes.
 * A training step allocates the same sizes every step, and fresh memory costs page faults (measured ~0.1 s of kernel
 * time per OLMoE-mini step before this pool); decode allocates the same small activations every token.
 */
class BufferPool {
  private readonly free = new Map<number, Float32Array[]>(); // in order of last use
  private bytes = 0;

  constructor(private readonly limit: number) {}

  take(length: number): Float32Array | undefined {
    const list = this.free.get(length);
    const found = list?.pop();
    if (!found) return undefined;
    this.bytes -= found.byteLength;
    this.free.delete(length);
    if (list!.length > 0) this.free.set(length, list!);
    return found;
  }

  /**
   * The smallest array of `length` to `slack`·`length` values (that many, or a view of its first `length` lent from a
   * longer one: `lent` maps the view to it).
   */
  takeAtLeast(length: number, slack: number): Float32Array | undefined {
    let best: number | undefined;
    for (const size of this.free.keys()) if (size >= length && size <= slack * length && (best === undefined || size < best)) best = size;
    if (best === undefined) return undefined;
    const whole = this.take(best)!;
    if (best === length) return whole;
    const view = whole.subarray(0, length);
    lent.set(view, whole);
    return view;
  }

  give(array: Float32Array): void {
    if (array.length === 0 || array.byteLength > this.limit || this.free.get(array.length)?.includes(array)) return;
    for (const [length, list] of this.free) {
      if (this.bytes + array.byteLength <= this.limit) break;
      this.bytes -= length * 4 * list.length;
      this.free.delete(length);
    }
    const list = this.free.get(array.length) ?? [];
    this.free.delete(array.length);
    this.free.set(array.length, list);
    list.push(array);
    this.bytes += array.byteLength;
  }
}

/** What training gives back (gradients after backward, what a forward kept once its backward ran). */
const buffers = new BufferPool(2 ** 31);

/**
 * The small activations of the forward passes `scoped` ran, for the next pass: decode makes ~260 per token, and a new
 * ArrayBuffer each cost ~6 µs plus the garbage collections they caused (~1.2 ms of a 21 ms Q4_0 token on an AMD EPYC).
 * Only decode-sized ones (SCOPED_BYTES): a prompt's large activations go to the garbage collector as before, so
 * this pool never holds a prefill's worth; bounded, so prompts of many lengths cannot fill it.
 */
const activations = new BufferPool(2 ** 25);
const SCOPED_BYTES = 2 ** 18;
/**
 * Larger activations a pass retired (Backend.retire): one layer's worth of a prompt is reused by the next layer and
 * the next pass (~14 arrays of T × 2,048 floats for OLMoE-1B-7B: 56 MB at 512 tokens), bounded for prompts of many lengths.
 */
const retired = new BufferPool(2 ** 27);
/**
 * A retired array serves a later one of up to RETIRED_SLACK times fewer values: the token counts of prompt steps vary
 * (a server's batches, prompts of other lengths), and storage kept only for its exact length was new memory at each
 * new count. On the virtual machine measured (AMD EPYC, OLMoE-1B-7B Q4_0, 2 threads), a step of 8 prompts, 240 tokens
 * in all, took ~150 ms longer at its first count than at one seen before (its pages faulted in fresh at ~10 µs each).
 */
const RETIRED_SLACK = 2;
/** Views of a longer array lent by a pool (BufferPool.takeAtLeast) → that array, given back whole when retired. */
const lent = new WeakMap<Float32Array, Float32Array>();
/** The storage made by the pass `scoped` is running (undefined outside one). */
let scope: Set<Float32Array> | undefined;

/**
 * Runs one forward pass; afterwards the small activations it made go back for reuse, except the storage of its
 * result (`kept`). Nothing else may hold them after the pass (routing observers copy what they keep). A pass that
 * throws leaves its storage to the garbage collector.
 */
export function scoped<T>(pass: () => T, kept: (result: T) => ArrayBufferLike): T {
  if (scope) return pass(); // within another pass: that one gives the storage back
  const made = (scope = new Set());
  try {
    const result = pass();
    const keep = kept(result);
    for (const array of made) if (array.buffer !== keep) activations.give(array);
    return result;
  } finally {
    scope = undefined;
  }
}

/**
 * Float32 storage the kernel writes whole before anything reads it: a recycled buffer, or new memory that is not
 * zero-filled (Buffer.allocUnsafe), which for the activations and gradients of a training step saves a pass over
 * several hundred MB.
 */
export function uninitialized(length: number): Float32Array {
  if (length === 0) return new Float32Array(0);
  const small = scope !== undefined && length * 4 <= SCOPED_BYTES;
  let array = (small ? activations.take(length) : scope ? retired.takeAtLeast(length, RETIRED_SLACK) : undefined) ?? buffers.take(length);
  if (!array) {
    const bytes = Buffer.allocUnsafe(length * 4);
    array = bytes.byteOffset % 4 === 0 ? new Float32Array(bytes.buffer, bytes.byteOffset, length) : new Float32Array(length);
  }
  if (small && array.byteOffset === 0 && array.buffer.byteLength === array.byteLength) scope!.add(array);
  return array;
}

/**
 * Storage the running pass is done with (Backend.retire), for its next ops: a small activation leaves the pass's set
 * (given back now, not again at the end); a large one goes to `retired`, which `uninitialized` takes from, so a prompt's
 * layers reuse one layer's activations instead of faulting in fresh memory for each until the garbage collector runs
 * (and resident memory keeps the high-water mark of that). Outside a pass: nothing.
 */
export function retire(arrays: readonly Float32Array[]): void {
  if (!scope) return;
  for (const array of arrays) {
    const whole = lent.get(array);
    if (whole) {
      lent.delete(array); // retired once: a second retire must not give away what a later pass holds
      retired.give(whole);
      continue;
    }
    if (array.byteOffset !== 0 || array.buffer.byteLength !== array.byteLength) continue; // a view: its buffer may be shared
    if (scope.delete(array)) activations.give(array);
    else if (array.byteLength > SCOPED_BYTES) retired.give(array);
  }
}

/**
 * Storage the running pass made that something outlives it with (a recorded step plan), given whole or as a view:
 * never given back for reuse.
 */
export function claim(arrays: Iterable<unknown>): void {
  if (!scope) return;
  const held = new Set<ArrayBufferLike>();
  for (const array of arrays) if (ArrayBuffer.isView(array)) held.add(array.buffer);
  for (const array of scope) if (held.has(array.buffer)) scope.delete(array);
}

/** Give storage back for reuse: nothing may read or write it afterwards. */
export function recycle(...arrays: Float32Array[]): void {
  for (const array of arrays) {
    if (scope?.has(array)) continue; // the running pass gives it back
    if (array.byteOffset === 0 && array.buffer.byteLength === array.byteLength) buffers.give(array);
  }
}

/** Whether `t` is an accumulator from `empty` that no op has written yet (the op about to write it clears the mark). */
export function takeFresh(t: Tensor | null): boolean {
  if (!t) return false;
  const tensor = asRef(t);
  const fresh = tensor.unwritten;
  tensor.unwritten = false;
  return fresh;
}

/** An accumulator that a kernel can only add into: zeros first if it was never written. */
export function materialize(t: Tensor): Float32Array {
  const data = f32(t);
  if (takeFresh(t)) data.fill(0);
  return data;
}

export function router(addon: NativeAddon, logits: Tensor, opts: RouterOptions): Routing {
  const [tokens, experts] = [asRef(logits).rows, asRef(logits).cols];
  const mode = opts.mode ?? 'token_choice';
  const perGroup = mode === 'expert_choice' ? Math.min(opts.capacity ?? 1, tokens) : opts.topK;
  checkShapes('router', mode === 'expert_choice' || opts.topK <= experts, () => `top-${opts.topK} of ${experts} experts`);
  const assignments = mode === 'expert_choice' ? experts * perGroup : tokens * perGroup;
  const probs = uninitialized(tokens * experts);
  const [expertIds, tokenIds, weights] = [new Int32Array(assignments), new Int32Array(assignments), uninitialized(assignments)];
  addon.routerForward(f32(logits), tokens, experts, opts.topK, opts.normTopKProb, mode === 'expert_choice', perGroup, probs, expertIds, tokenIds, weights);
  return { tokens, numExperts: experts, mode, perGroup, probs: activation(probs, [tokens, experts]), weights: activation(weights, [assignments]), expertIds, tokenIds };
}

export function routerBackward(addon: NativeAddon, a: { routing: Routing; opts: RouterOptions; dProbs: Tensor | null; dWeights: Tensor | null; dLogits: Tensor }): void {
  const r = a.routing;
  const expertChoice = r.mode === 'expert_choice';
  addon.routerBackward(f32(r.probs), r.tokens, r.numExperts, expertChoice ? a.opts.topK : r.perGroup, a.opts.normTopKProb, expertChoice, expertChoice ? r.perGroup : 0,
    f32(r.probs), r.expertIds, r.tokenIds, f32(r.weights), dataOf(a.dProbs), dataOf(a.dWeights), f32(a.dLogits), takeFresh(a.dLogits));
}

/** Whether every expert weight is float32 (the training kernel's operands). */
export function float32Experts(weights: ExpertWeights): boolean {
  return [...weights.gate, ...weights.up, ...weights.down].every((t) => t.dtype === 'f32');
}

export function expertsForward(addon: NativeAddon, x: Tensor, weights: ExpertWeights, routing: Routing, bf16 = false): { out: RefTensor; saved: ExpertsState } {
  const [tokens, hidden] = [asRef(x).rows, asRef(x).cols];
  checkShapes('experts', tokens === routing.tokens && weights.gate.length === routing.numExperts, () => `x ${showShape(x)}, ${weights.gate.length} experts, routing for ${routing.tokens} tokens over ${routing.numExperts}`);
  const ffn = weights.gate[0]!.shape[0]!;
  const A = routing.expertIds.length;
  const saved: ExpertsState = { op: 'experts', order: new Int32Array(A), gatePre: uninitialized(A * ffn), upPre: uninitialized(A * ffn), y: uninitialized(A * hidden) };
  const out = uninitialized(tokens * hidden);
  const list = (ts: readonly Tensor[]) => ts.map(f32);
  addon.expertsForward(f32(x), tokens, hidden, ffn, list(weights.gate), list(weights.up), list(weights.down), routing.expertIds, routing.tokenIds, f32(routing.weights),
    saved.order, saved.gatePre, saved.upPre, saved.y, out, bf16);
  return { out: activation(out, asRef(x).shape), saved };
}

export function expertsBackward(addon: NativeAddon, a: {
  x: Tensor; weights: ExpertWeights; routing: Routing; saved: SavedState; dOut: Tensor; dx: Tensor | null; dRoutingWeights: Tensor | null; dWeights: ExpertWeights | null;
}, bf16 = false): void {
  const s = a.saved as ExpertsState;
  const [tokens, hidden] = [asRef(a.x).rows, asRef(a.x).cols];
  const ffn = a.weights.gate[0]!.shape[0]!;
  const list = (ts: readonly Tensor[]) => ts.map(f32);
  const d = a.dWeights;
  const accumulators = (ts: readonly Tensor[]) => ts.map(materialize);
  addon.expertsBackward(f32(a.x), tokens, hidden, ffn, list(a.weights.gate), list(a.weights.up), list(a.weights.down), a.routing.expertIds, a.routing.tokenIds,
    f32(a.routing.weights), s.order, s.gatePre, s.upPre, s.y, f32(a.dOut), dataOf(a.dx), dataOf(a.dRoutingWeights),
    d ? accumulators(d.gate) : null, d ? accumulators(d.up) : null, d ? accumulators(d.down) : null, takeFresh(a.dx), takeFresh(a.dRoutingWeights), bf16);
  recycle(s.gatePre, s.upPre, s.y); // kept for this backward only
}

export function attentionForward(addon: NativeAddon, args: AttentionArgs): { out: RefTensor; saved: AttentionState } {
  checkShapes('attention', args.sequences.every((s) => !s.cache && s.start === 0), () => 'training attends within each sequence (no KV cache, start 0)');
  const lengths = Int32Array.from(args.sequences, (s) => s.tokens);
  const tokens = lengths.reduce((a, b) => a + b, 0);
  checkShapes('attention', sizeOf(args.q) === tokens * args.heads * args.headDim && sizeOf(args.k) === tokens * args.kvHeads * args.headDim && sizeOf(args.v) === sizeOf(args.k),
    () => `q ${showShape(args.q)}, k ${showShape(args.k)}, v ${showShape(args.v)} for ${tokens} tokens, ${args.heads}/${args.kvHeads} heads × ${args.headDim}`);
  const lse = uninitialized(tokens * args.heads);
  const out = uninitialized(tokens * args.heads * args.headDim);
  addon.attentionForward(f32(args.q), f32(args.k), f32(args.v), lengths, args.heads, args.kvHeads, args.headDim, lse, out);
  return { out: activation(out, [tokens, args.heads * args.headDim]), saved: { op: 'attention', lse } };
}

export function attentionBackward(addon: NativeAddon, a: { args: AttentionArgs; saved: SavedState; out: Tensor; dOut: Tensor; dq: Tensor; dk: Tensor; dv: Tensor }): void {
  const { args } = a;
  const lengths = Int32Array.from(args.sequences, (s) => s.tokens);
  addon.attentionBackward(f32(args.q), f32(args.k), f32(args.v), lengths, args.heads, args.kvHeads, args.headDim, (a.saved as AttentionState).lse, f32(a.out), f32(a.dOut),
    f32(a.dq), f32(a.dk), f32(a.dv), takeFresh(a.dq), takeFresh(a.dk), takeFresh(a.dv));
  recycle((a.saved as AttentionState).lse);
}

export function crossEntropyForward(addon: NativeAddon, logits: Tensor, targets: Int32Array): { out: RefTensor; saved: CrossEntropyState } {
  const counted = checkTargets(logits, targets);
  const lse = uninitialized(targets.length);
  const sum = addon.crossEntropyForward(f32(logits), targets.length, asRef(logits).cols, targets, lse);
  return { out: activation(Float32Array.of(counted ? sum / counted : 0), [1]), saved: { op: 'crossEntropy', lse, counted } };
}

export function crossEntropyBackward(addon: NativeAddon, a: { logits: Tensor; targets: Int32Array; saved: SavedState; dLoss: Tensor; dLogits: Tensor }): void {
  const s = a.saved as CrossEntropyState;
  const scale = f32(a.dLoss)[0]! / Math.max(s.counted, 1);
  addon.crossEntropyBackward(f32(a.logits), a.targets.length, asRef(a.logits).cols, a.targets, s.lse, scale, f32(a.dLogits), takeFresh(a.dLogits));
  recycle(s.lse);
}

interface WeightedCrossEntropyState extends SavedState {
  readonly lse: Float32Array; // [T]
  readonly weights: Float32Array; // [T]
}

/** The log-sum-exp pass is the cross-entropy kernel's; nll_t = lse_t − logit[t, target] and the weighted sum on the host (O(T)). */
export function weightedCrossEntropyForward(addon: NativeAddon, logits: Tensor, targets: Int32Array, weightsOf: TokenWeights): { out: RefTensor; saved: WeightedCrossEntropyState } {
  checkTargets(logits, targets);
  const [values, vocab] = [f32(logits), asRef(logits).cols];
  const lse = uninitialized(targets.length);
  addon.crossEntropyForward(values, targets.length, vocab, targets, lse);
  const nll = Float64Array.from(targets, (target, t) => (target === IGNORE_TARGET ? 0 : lse[t]! - values[t * vocab + target]!));
  const weights = tokenWeights(weightsOf, nll, targets);
  let total = 0;
  nll.forEach((value, t) => (total += weights[t]! * value));
  return { out: activation(Float32Array.of(total), [1]), saved: { op: 'weightedCrossEntropy', lse, weights: Float32Array.from(weights) } };
}

export function weightedCrossEntropyBackward(addon: NativeAddon, a: { logits: Tensor; targets: Int32Array; saved: SavedState; dLoss: Tensor; dLogits: Tensor }): void {
  const s = a.saved as WeightedCrossEntropyState;
  addon.weightedCrossEntropyBackward(f32(a.logits), a.targets.length, asRef(a.logits).cols, a.targets, s.lse, f32(a.dLoss)[0]!, s.weights, f32(a.dLogits), takeFresh(a.dLogits));
  recycle(s.lse);
}

export function loadBalancingLoss(addon: NativeAddon, probs: Tensor, counts: Float64Array, scale: number): RefTensor {
  checkShapes('loadBalancingLoss', counts.length === asRef(probs).cols, () => `${counts.length} counts for probs ${showShape(probs)}`);
  return activation(Float32Array.of(addon.loadBalancingForward(f32(probs), asRef(probs).rows, asRef(probs).cols, counts, scale)), [1]);
}

export function loadBalancingBackward(addon: NativeAddon, a: { probs: Tensor; counts: Float64Array; scale: number; dLoss: Tensor; dProbs: Tensor }): void {
  const tokens = asRef(a.probs).rows;
  addon.loadBalancingBackward(tokens, asRef(a.probs).cols, a.counts, (f32(a.dLoss)[0]! * a.scale) / tokens, f32(a.dProbs), takeFresh(a.dProbs));
}

export function routerZLoss(addon: NativeAddon, logits: Tensor, scale: number): RefTensor {
  return activation(Float32Array.of(addon.routerZForward(f32(logits), asRef(logits).rows, asRef(logits).cols, scale)), [1]);
}

export function routerZBackward(addon: NativeAddon, a: { logits: Tensor; scale: number; dLoss: Tensor; dLogits: Tensor }): void {
  addon.routerZBackward(f32(a.logits), asRef(a.logits).rows, asRef(a.logits).cols, f32(a.dLoss)[0]! * a.scale, f32(a.dLogits), takeFresh(a.dLogits));
}

export function rmsnormBackward(addon: NativeAddon, a: { x: Tensor; weight: Tensor; eps: number; dOut: Tensor; dx: Tensor | null; dWeight: Tensor | null }): void {
  const x = asRef(a.x);
  checkShapes('rmsnorm', x.cols === sizeOf(a.weight), () => `x ${showShape(a.x)} does not match weight ${showShape(a.weight)}`);
  addon.rmsnormBackward(f32(a.x), f32(a.weight), f32(a.dOut), x.rows, x.cols, a.eps, dataOf(a.dx), a.dWeight ? materialize(a.dWeight) : null, takeFresh(a.dx));
}

/** Rotate x by +angle into `out` (forward), or by −angle into a gradient accumulator (written when fresh, else added). */
export function rope(addon: NativeAddon, x: Tensor, positions: Int32Array, opts: RopeOptions, out: Float32Array, inverse: boolean, accumulate: boolean): void {
  const input = asRef(x);
  checkShapes('rope', input.cols === opts.heads * opts.headDim && input.rows === positions.length, () => `x ${showShape(x)} is not [${positions.length}, ${opts.heads}·${opts.headDim}]`);
  addon.ropeRotate(f32(x), positions.length, opts.heads, opts.headDim, positions, inverseFrequencies(opts.headDim, opts.theta), inverse, accumulate, out);
}

/** ropeInverseFrequencies per (head dim, θ), computed once: 64 pow calls and an array were most of a decode step's rope. */
const frequencyTables = new Map<string, Float32Array>();
function inverseFrequencies(headDim: number, theta: number): Float32Array {
  const key = `${headDim}:${theta}`;
  let table = frequencyTables.get(key);
  if (!table) frequencyTables.set(key, (table = ropeInverseFrequencies(headDim, theta)));
  return table;
}

export function adamw(addon: NativeAddon, params: readonly AdamWTensors[], s: AdamWStep): void {
  const list = (key: 'value' | 'grad' | 'm' | 'v') => params.map((p) => materialize(p[key]));
  addon.adamw(list('value'), list('grad'), list('m'), list('v'), Uint8Array.from(params, (p) => (p.decay ? 1 : 0)), s.lr, s.beta1, s.beta2, s.eps, s.weightDecay, s.step, s.gradScale);
}
