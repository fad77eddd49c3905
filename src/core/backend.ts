/**
 * The Backend interface: the model-level ops a compute backend implements. The model calls only these,
 * over opaque tensors it cannot read; every backend is checked op by op against the reference backend.
 *
 * Dimension legend: T tokens, D hidden, In/Out matmul sides, H query heads, Hkv key/value heads,
 * Hd head dim, E experts, K experts per token, F expert FFN width, V vocab.
 */
import type { DType } from './dtype.js';

/** A tensor owned by a backend. Row-major; weights are [Out, In] as in PyTorch Linear. */
export interface Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
}

/**
 * A weight as stored in a checkpoint (little-endian bytes of its dtype), handed to a backend once at load time.
 * A backend that maps files uses `file` and `offset`; one that copies calls `read()`.
 */
export interface WeightSource {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly byteLength: number;
  /** The file holding the bytes at `offset`, when they come from a file. */
  readonly file?: string;
  readonly offset?: number;
  read(): Promise<Uint8Array>;
}

/** A weight held in memory (tests, converted or generated weights). */
export function weightFromBytes(name: string, dtype: DType, shape: readonly number[], bytes: Uint8Array): WeightSource {
  return { name, dtype, shape, byteLength: bytes.byteLength, read: async () => bytes };
}

/** Keys and values of every layer for one sequence, stored after RoPE (spec §3.4). */
export interface KVCache {
  readonly layers: number;
  /** The most positions it can hold. */
  readonly capacity: number;
  /**
   * Positions it holds storage for now. Storage grows as tokens are stored (at least doubling, at most to
   * `capacity`), so a cache sized for a long context costs memory only for the tokens that arrive.
   */
  readonly allocated: number;
  /** Tokens whose keys and values are stored; the model advances it after each forward. */
  length: number;
}

export interface KVCacheOptions {
  layers: number;
  capacity: number;
  kvHeads: number;
  headDim: number;
  /** Positions to allocate up front (default 0: storage grows from the first tokens stored). */
  reserve?: number;
}

export interface RopeOptions {
  heads: number;
  headDim: number;
  theta: number;
}

export interface AttentionArgs {
  q: Tensor; // [T, H·Hd], after QK-norm and RoPE
  k: Tensor; // [T, Hkv·Hd]
  v: Tensor; // [T, Hkv·Hd]
  cache: KVCache;
  layer: number;
  /** Position of the first of the T tokens; keys/values are written at [start, start+T). */
  start: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

export interface RouterOptions {
  topK: number;
  normTopKProb: boolean;
}

/** Routing decisions for T tokens, on the host: the model hands them to observers and to `experts`. */
export interface Routing {
  readonly tokens: number;
  readonly numExperts: number;
  readonly topK: number;
  /** [T, E] router logits x·gateᵀ (for the z-loss and analysis). */
  readonly logits: Float32Array;
  /** [T, E] softmax over all experts, float32 (spec §3.6). */
  readonly probs: Float32Array;
  /** [T, K] chosen experts, by probability descending, ties to the lower index. */
  readonly expertIds: Int32Array;
  /** [T, K] weights applied to the chosen experts' outputs (renormalized only when normTopKProb). */
  readonly weights: Float32Array;
}

/** Per-expert SwiGLU weights of one layer: gate and up [F, D], down [D, F], E of each. */
export interface ExpertWeights {
  readonly gate: readonly Tensor[];
  readonly up: readonly Tensor[];
  readonly down: readonly Tensor[];
}

export interface Backend {
  readonly name: string;
  /** Take a checkpoint tensor as a weight. Must keep the stored dtype (no whole-model widening to f32). */
  weight(source: WeightSource): Promise<Tensor>;
  fromFloat32(data: Float32Array, shape: readonly number[]): Tensor;
  toFloat32(x: Tensor): Float32Array;

  /** table [V, D], ids [T] → [T, D] */
  embedding(table: Tensor, ids: Int32Array): Tensor;
  /** x [T, In] · w[Out, In]ᵀ → [T, Out] */
  matmul(x: Tensor, w: Tensor): Tensor;
  /** x [T, N] normalized over N, times weight [N] (spec §3.1). */
  rmsnorm(x: Tensor, weight: Tensor, eps: number): Tensor;
  /** NeoX (rotate-half) rotary embedding of x [T, heads·Hd] at the given absolute positions (spec §3.5). */
  rope(x: Tensor, positions: Int32Array, opts: RopeOptions): Tensor;
  /** Element-wise clamp to [-limit, limit] (config clip_qkv). */
  clamp(x: Tensor, limit: number): Tensor;
  createKVCache(opts: KVCacheOptions): KVCache;
  /** Append k, v to the cache, then causal softmax(q·kᵀ/√Hd)·v over the cache → [T, H·Hd]. */
  attention(args: AttentionArgs): Tensor;
  /** x [T, D] · gate[E, D]ᵀ → softmax (float32) → top-k (spec §3.6). */
  router(x: Tensor, gate: Tensor, opts: RouterOptions): Routing;
  /** Σ_k weight_k · down(silu(gate·x) ⊙ up·x) over the routed experts → [T, D]. */
  experts(x: Tensor, weights: ExpertWeights, routing: Routing): Tensor;
  add(a: Tensor, b: Tensor): Tensor;
  /** Rows [start, start+count) of x [T, N]. */
  rows(x: Tensor, start: number, count: number): Tensor;
  /**
   * Training's products on host float32 arrays: C (+)= op(A) · op(B). Optional: without it, training uses its
   * own reference kernel (src/train/kernels.ts).
   */
  gemmF32?(args: GemmF32Args): void;
}

/** C[M, N] = op(A)[M, K] · op(B)[K, N], or C += that when accumulate; op transposes when the flag is set. */
export interface GemmF32Args {
  readonly m: number;
  readonly n: number;
  readonly k: number;
  /** [M, K], or [K, M] when transA. */
  readonly a: Float32Array;
  /** [K, N], or [N, K] when transB. */
  readonly b: Float32Array;
  readonly c: Float32Array;
  readonly transA?: boolean;
  readonly transB?: boolean;
  readonly accumulate?: boolean;
}
