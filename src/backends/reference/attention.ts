/**
 * Causal self-attention, one head of one query at a time (spec §3.4): over a KV cache (inference), or over a
 * sequence's own tokens (training), with its backward.
 * Dimension legend: T new tokens, S positions attended, H query heads, Hkv key/value heads, Hd head dim.
 */
import type { AttentionArgs, AttentionSequence, KVCache, KVCacheOptions, Tensor } from '../../core/backend.js';
import type { SavedState } from '../../core/training.js';
import { InputError, ResourceError } from '../../core/errors.js';
import { activation, allocFor, checkShapes, floats, showShape, sizeOf, type Floats, type RefTensor } from './tensor.js';

export class RefKVCache implements KVCache {
  length = 0;
  allocated = 0;
  keys: Float32Array[] = []; // per layer [allocated, Hkv·Hd]
  values: Float32Array[] = [];
  readonly layers: number;
  readonly capacity: number;
  readonly width: number;

  /** `allocate` provides zeroed float storage (the native backend uses huge-page memory). */
  constructor(
    opts: KVCacheOptions,
    private readonly allocate: (floats: number) => Float32Array = (floats) => new Float32Array(floats),
  ) {
    this.layers = opts.layers;
    this.capacity = opts.capacity;
    this.width = opts.kvHeads * opts.headDim;
    this.reserve(Math.min(opts.reserve ?? 0, opts.capacity));
  }

  /**
   * Storage for at least `positions` positions in every layer: at least double what is there (so a sequence of T
   * tokens is copied O(T) times in all), at most the capacity. What was stored moves to the new storage whole
   * (positions may be written before `length` is advanced).
   */
  reserve(positions: number): void {
    if (positions <= this.allocated) return;
    if (positions > this.capacity) throw new InputError(`KV cache holds ${this.capacity} positions; ${positions} needed`);
    const size = Math.min(this.capacity, Math.max(positions, 2 * this.allocated, MIN_POSITIONS));
    const grow = (old: Float32Array | undefined) => {
      const next = this.allocate(size * this.width);
      if (old) next.set(old);
      return next;
    };
    try {
      this.keys = Array.from({ length: this.layers }, (_, layer) => grow(this.keys[layer]));
      this.values = Array.from({ length: this.layers }, (_, layer) => grow(this.values[layer]));
    } catch (error) {
      if (error instanceof RangeError) throw new ResourceError(`a KV cache of ${size} positions × ${this.layers} layers`, 2 * this.layers * size * this.width * 4, error);
      throw error;
    }
    this.allocated = size;
  }
}

/** The smallest growth step, so the first decode tokens after a short prompt do not each reallocate. */
const MIN_POSITIONS = 16;

/** Where one sequence's keys and values are read: its cache's layer storage, or its own rows of k and v. */
interface KeyValues {
  keys: Floats;
  values: Floats;
  /** Row of position 0 in keys/values. */
  base: number;
  width: number;
}

export function attention(args: AttentionArgs): RefTensor {
  const tokens = checkArgs(args);
  const out = allocFor(tokens * args.heads * args.headDim, args.q, args.k, args.v);
  forEachSequence(args, (sequence, row, kv) => {
    for (let t = 0; t < sequence.tokens; t++) for (let h = 0; h < args.heads; h++) attendOne(args, kv, row + t, sequence.start + t, h, out);
  });
  return activation(out, [tokens, args.heads * args.headDim]);
}

/** Training's forward: no cache, nothing kept (the reference backward recomputes the probabilities). */
export function attentionForward(args: AttentionArgs): { out: RefTensor; saved: SavedState } {
  checkShapes('attention', args.sequences.every((s) => !s.cache && s.start === 0), () => 'training attends within each sequence (no KV cache, start 0)');
  return { out: attention(args), saved: { op: 'attention' } };
}

function checkArgs(args: AttentionArgs): number {
  const width = args.heads * args.headDim;
  const kvWidth = args.kvHeads * args.headDim;
  const tokens = sizeOf(args.q) / width;
  const fits = Number.isInteger(tokens) && sizeOf(args.k) === tokens * kvWidth && sizeOf(args.v) === tokens * kvWidth;
  checkShapes('attention', fits && args.heads % args.kvHeads === 0, () => `q ${showShape(args.q)}, k ${showShape(args.k)}, v ${showShape(args.v)} do not fit ${args.heads} heads, ${args.kvHeads} kv heads × ${args.headDim}`);
  checkShapes('attention', args.sequences.reduce((n, s) => n + s.tokens, 0) === tokens, () => `sequences of ${args.sequences.map((s) => s.tokens).join(' + ')} tokens for ${tokens} rows`);
  for (const s of args.sequences) checkShapes('attention', s.cache instanceof RefKVCache || (!s.cache && s.start === 0), () => 'the KV cache was not made by this backend');
  return tokens;
}

/** Visit each sequence with its first row in q and where its keys and values are (stored into its cache first). */
export function forEachSequence(args: AttentionArgs, visit: (sequence: AttentionSequence, row: number, kv: KeyValues) => void): void {
  const kvWidth = args.kvHeads * args.headDim;
  const [k, v] = [floats(args.k), floats(args.v)];
  let row = 0;
  for (const sequence of args.sequences) {
    const own = { keys: k.subarray(row * kvWidth, (row + sequence.tokens) * kvWidth), values: v.subarray(row * kvWidth, (row + sequence.tokens) * kvWidth) };
    if (sequence.cache) storeKeysValues(sequence.cache as RefKVCache, args.layer, sequence.start, own);
    const cache = sequence.cache as RefKVCache | undefined;
    const kv = cache ? { keys: cache.keys[args.layer]!, values: cache.values[args.layer]!, base: 0, width: kvWidth } : { ...own, base: 0, width: kvWidth };
    visit(sequence, row, kv);
    row += sequence.tokens;
  }
}

/** Write the new keys and values at [start, start+T) of the layer's cache. */
export function storeKeysValues(cache: RefKVCache, layer: number, start: number, kv: { keys: Floats; values: Floats }): void {
  checkShapes('attention', kv.keys.length % cache.width === 0, () => `keys of ${kv.keys.length} values for a cache ${cache.width} wide`);
  cache.reserve(start + kv.keys.length / cache.width);
  cache.keys[layer]!.set(kv.keys, start * cache.width);
  cache.values[layer]!.set(kv.values, start * cache.width);
}

/** Softmax of one query row's scores over positions 0..position (scaled by 1/√Hd, max-subtracted). */
function probabilities(args: AttentionArgs, kv: KeyValues, row: number, position: number, head: number): Float64Array {
  const { headDim, heads, kvHeads } = args;
  const query = floats(args.q);
  const kvHead = Math.floor(head / (heads / kvHeads)); // grouped-query: consecutive heads share a kv head
  const queryBase = (row * heads + head) * headDim;
  const scale = 1 / Math.sqrt(headDim);
  const p = new Float64Array(position + 1);
  let max = -Infinity;
  for (let s = 0; s <= position; s++) {
    const keyBase = (kv.base + s) * kv.width + kvHead * headDim;
    let score = 0;
    for (let d = 0; d < headDim; d++) score += query[queryBase + d]! * kv.keys[keyBase + d]!;
    p[s] = score * scale;
    if (p[s]! > max) max = p[s]!;
  }
  let total = 0;
  for (let s = 0; s <= position; s++) total += p[s] = Math.exp(p[s]! - max);
  for (let s = 0; s <= position; s++) p[s]! /= total;
  return p;
}

function attendOne(args: AttentionArgs, kv: KeyValues, row: number, position: number, head: number, out: Floats): void {
  const { headDim, heads, kvHeads } = args;
  const p = probabilities(args, kv, row, position, head);
  const kvHead = Math.floor(head / (heads / kvHeads));
  for (let d = 0; d < headDim; d++) {
    let sum = 0;
    for (let s = 0; s <= position; s++) sum += p[s]! * kv.values[(kv.base + s) * kv.width + kvHead * headDim + d]!;
    out[(row * heads + head) * headDim + d] = sum;
  }
}

/**
 * With P the probabilities of a query row: dV += Pᵀ·dO; dP = dO·Vᵀ; dScore = P ⊙ (dP − Σ P·dP) / √Hd;
 * dQ += dScore·K; dK += dScoreᵀ·Q. Keys and values of a head are shared by its query-head group (GQA).
 */
export function attentionBackward(a: { args: AttentionArgs; dOut: Tensor; dq: Tensor; dk: Tensor; dv: Tensor }): void {
  const { args } = a;
  const { heads, kvHeads, headDim } = args;
  const [q, dO, dq, dk, dv] = [floats(args.q), floats(a.dOut), floats(a.dq), floats(a.dk), floats(a.dv)];
  const kvWidth = kvHeads * headDim;
  const scale = 1 / Math.sqrt(headDim);
  forEachSequence(args, (sequence, row, kv) => {
    for (let t = 0; t < sequence.tokens; t++) {
      for (let h = 0; h < heads; h++) {
        const p = probabilities(args, kv, row + t, t, h);
        const g = Math.floor(h / (heads / kvHeads));
        const qBase = ((row + t) * heads + h) * headDim;
        const dp = new Float64Array(t + 1);
        let dot = 0;
        for (let s = 0; s <= t; s++) {
          const vBase = (row + s) * kvWidth + g * headDim;
          for (let d = 0; d < headDim; d++) {
            dp[s]! += dO[qBase + d]! * kv.values[s * kvWidth + g * headDim + d]!;
            dv[vBase + d]! += p[s]! * dO[qBase + d]!;
          }
          dot += p[s]! * dp[s]!;
        }
        for (let s = 0; s <= t; s++) {
          const dScore = p[s]! * (dp[s]! - dot) * scale;
          const kBase = (row + s) * kvWidth + g * headDim;
          for (let d = 0; d < headDim; d++) {
            dq[qBase + d]! += dScore * kv.keys[s * kvWidth + g * headDim + d]!;
            dk[kBase + d]! += dScore * q[qBase + d]!;
          }
        }
      }
    }
  });
}

