/**
 * Causal self-attention over a KV cache, one head at a time (spec §3.4).
 * Dimension legend: T new tokens, S cached positions, H query heads, Hkv key/value heads, Hd head dim.
 */
import type { AttentionArgs, KVCache, KVCacheOptions } from '../../core/backend.js';
import { InputError, ResourceError } from '../../core/errors.js';
import { activation, checkShapes, f32, showShape, type RefTensor } from './tensor.js';

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

export function attention(args: AttentionArgs): RefTensor {
  const { cache, tokens } = storeKeysValues(args);
  const query = f32(args.q);
  const out = new Float32Array(query.length);
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < args.heads; h++) attendOne(args, cache, t, h, out);
  }
  return activation(out, [tokens, args.heads * args.headDim]);
}

/** Check shapes and write the new keys and values at [start, start+T) of the layer's cache. */
export function storeKeysValues(args: AttentionArgs): { cache: RefKVCache; tokens: number } {
  checkShapes('attention', args.cache instanceof RefKVCache, () => 'the KV cache was not made by this backend');
  const cache = args.cache as RefKVCache;
  const query = f32(args.q);
  const tokens = query.length / (args.heads * args.headDim);
  const fits = [f32(args.k).length, f32(args.v).length].every((n) => n === tokens * cache.width);
  checkShapes('attention', Number.isInteger(tokens) && fits,
    () => `q ${showShape(args.q)}, k ${showShape(args.k)}, v ${showShape(args.v)} do not fit ${args.heads} heads, ${cache.width / args.headDim} kv heads × ${args.headDim}`);
  cache.reserve(args.start + tokens);
  cache.keys[args.layer]!.set(f32(args.k), args.start * cache.width);
  cache.values[args.layer]!.set(f32(args.v), args.start * cache.width);
  return { cache, tokens };
}

/** One query row of one head: scores over positions 0..start+t, softmax, weighted sum of values. */
function attendOne(args: AttentionArgs, cache: RefKVCache, t: number, head: number, out: Float32Array): void {
  const { headDim, heads, kvHeads } = args;
  const query = f32(args.q);
  const keys = cache.keys[args.layer]!;
  const values = cache.values[args.layer]!;
  const kvHead = Math.floor(head / (heads / kvHeads)); // grouped-query: consecutive heads share a kv head
  const queryBase = (t * heads + head) * headDim;
  const positions = args.start + t + 1;
  const scale = 1 / Math.sqrt(headDim);
  const scores = new Float64Array(positions);
  let max = -Infinity;
  for (let s = 0; s < positions; s++) {
    const keyBase = s * cache.width + kvHead * headDim;
    let score = 0;
    for (let d = 0; d < headDim; d++) score += query[queryBase + d]! * keys[keyBase + d]!;
    scores[s] = score * scale;
    if (scores[s]! > max) max = scores[s]!;
  }
  let total = 0;
  for (let s = 0; s < positions; s++) total += scores[s] = Math.exp(scores[s]! - max);
  for (let d = 0; d < headDim; d++) {
    let sum = 0;
    for (let s = 0; s < positions; s++) sum += scores[s]! * values[s * cache.width + kvHead * headDim + d]!;
    out[queryBase + d] = sum / total;
  }
}
