/**
 * The Backend interface: the model-level ops a compute backend implements. The model calls only these,
 * over opaque tensors it cannot read; every backend is checked op by op against the reference backend.
 * Training adds each op's backward and the optimizer (core/training.ts); autograd/ records a tape over them.
 *
 * Data comes back to the host in two places only, both synchronous today: `toFloat32` and the expert ids of a
 * `Routing`. A backend whose readback is asynchronous (WebGPU) makes exactly those two awaitable; every other
 * call only enqueues work on tensors the backend owns.
 *
 * Dimension legend: T tokens, D hidden, In/Out matmul sides, H query heads, Hkv key/value heads,
 * Hd head dim, E experts, K experts per token, C tokens per expert (expert choice), A assignments, F expert
 * FFN width, V vocab.
 */
import type { DType } from './dtype.js';
import { InputError } from './errors.js';

/** What a tensor holds: a checkpoint dtype (weights), 'f32' activations, or 'f64' (the gradient checks' reference). */
export type TensorDType = DType | 'f64';

/** A tensor owned by a backend. Row-major; weights are [Out, In] as in PyTorch Linear. */
export interface Tensor {
  readonly shape: readonly number[];
  readonly dtype: TensorDType;
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

/**
 * How a KV cache stores keys and values: 'f16' (the default, as llama.cpp's), 'q8_0' (GGUF blocks of 32 values and an
 * f16 scale: half of f16's bytes) or 'f32' (exact). Values are rounded once, when stored; attention reads them back.
 */
export type KVCacheType = 'f16' | 'q8_0' | 'f32';

export const KV_CACHE_TYPES: readonly KVCacheType[] = ['f16', 'q8_0', 'f32'];

export const DEFAULT_KV_CACHE_TYPE: KVCacheType = 'f16';

/** A user's cache type (flag or API option), checked: an unknown one is an error naming it and the choices. */
export function parseKVCacheType(value: unknown, what = 'kv cache type'): KVCacheType {
  if (KV_CACHE_TYPES.includes(value as KVCacheType)) return value as KVCacheType;
  throw new InputError(`${what}: ${JSON.stringify(value)} is not a KV cache type (choose ${KV_CACHE_TYPES.join(', ')})`);
}

/** Bytes one position takes in one layer's keys (or values): q8_0 pads a row of `width` values to whole blocks. */
export function kvRowBytes(type: KVCacheType, width: number): number {
  if (type === 'q8_0') return Math.ceil(width / 32) * 34;
  return width * (type === 'f16' ? 2 : 4);
}

/** Keys and values of every layer for one sequence, stored after RoPE (spec §3.4). */
export interface KVCache {
  readonly layers: number;
  /** How keys and values are stored. */
  readonly dtype: KVCacheType;
  /** Bytes one position takes in all layers, keys and values. */
  readonly bytesPerPosition: number;
  /** The most positions it can hold. */
  readonly capacity: number;
  /**
   * Positions it holds storage for now. Storage grows as tokens are stored (at least doubling, at most to
   * `capacity`), so a cache sized for a long context costs memory only for the tokens that arrive.
   */
  readonly allocated: number;
  /** Tokens whose keys and values are stored; the model advances it after each forward. */
  length: number;
  /**
   * Gives the storage back to the backend, which may hand it to a later cache (the native backend keeps it faulted in:
   * a fresh page's first touch is the costly part of storing a row). The cache is unusable afterwards.
   */
  release?(): void;
}

export interface KVCacheOptions {
  layers: number;
  capacity: number;
  kvHeads: number;
  headDim: number;
  /** Positions to allocate up front (default 0: storage grows from the first tokens stored). */
  reserve?: number;
  /** Storage of keys and values (default DEFAULT_KV_CACHE_TYPE). */
  dtype?: KVCacheType;
}

export interface RopeOptions {
  heads: number;
  headDim: number;
  theta: number;
}

/** One sequence of an attention call: its new tokens are the next `tokens` rows of q, k and v. */
export interface AttentionSequence {
  readonly tokens: number;
  /** Position of its first new token: keys/values are written at [start, start+tokens) of the cache. */
  readonly start: number;
  /** Keys and values of its earlier positions. Absent (training): start is 0 and it attends to its own tokens only. */
  readonly cache?: KVCache;
}

export interface AttentionArgs {
  q: Tensor; // [T, H·Hd], after QK-norm and RoPE
  k: Tensor; // [T, Hkv·Hd]
  v: Tensor; // [T, Hkv·Hd]
  /** The sequences whose new tokens q, k and v stack, in order (Σ tokens = T). */
  sequences: readonly AttentionSequence[];
  layer: number;
  heads: number;
  kvHeads: number;
  headDim: number;
}

/** Dropless token choice (each token its K most probable experts; spec §3.6) or expert choice (paper §4.1.5). */
export type RoutingMode = 'token_choice' | 'expert_choice';

export interface RouterOptions {
  topK: number;
  normTopKProb: boolean;
  /** Default token choice. */
  mode?: RoutingMode;
  /** Expert choice: tokens each expert takes (C). */
  capacity?: number;
}

/**
 * Routing decisions for T tokens as A assignments (expert, token, weight). Token choice: A = T·K, assignment
 * t·K + k is token t's k-th expert by probability (descending, ties to the lower index). Expert choice: A = E·C,
 * assignment e·C + c is expert e's c-th token by probability.
 */
export interface Routing {
  readonly tokens: number;
  readonly numExperts: number;
  readonly mode: RoutingMode;
  /** Token choice: K; expert choice: C (assignments per expert). */
  readonly perGroup: number;
  /** [T, E] softmax over all experts (float32, spec §3.6). */
  readonly probs: Tensor;
  /** [A] weight of each assignment: its probability, renormalized over the token's K when normTopKProb. */
  readonly weights: Tensor;
  /** [A] expert of each assignment (host: the model hands them to observers; a GPU backend reads them back). */
  readonly expertIds: Int32Array;
  /** [A] token of each assignment. */
  readonly tokenIds: Int32Array;
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
  /** Read a tensor back (the one data-returning call besides routing ids; async on a GPU backend). */
  toFloat32(x: Tensor): Float32Array;
  /**
   * Index of x's first NaN or ±∞ (its values in row-major order), −1 if none: the model's check of every pass's
   * logits, where the backend scans faster than a JavaScript loop over toFloat32 (a decode token's 50,304 logits on
   * the native backend: ~2 µs in cache against ~19; 20–30 against 30–95 µs in the model). Optional.
   */
  firstNonFinite?(x: Tensor): number;

  /** table [V, D], ids [T] → [T, D] */
  embedding(table: Tensor, ids: Int32Array): Tensor;
  /** x [T, In] · w[Out, In]ᵀ → [T, Out] */
  matmul(x: Tensor, w: Tensor): Tensor;
  /** matmul(x, w) for each weight, as one job where the backend can (the attention's q, k and v). Optional. */
  matmuls?(x: Tensor, weights: readonly Tensor[]): Tensor[];
  /** x [T, N] normalized over N, times weight [N] (spec §3.1). */
  rmsnorm(x: Tensor, weight: Tensor, eps: number): Tensor;
  /** NeoX (rotate-half) rotary embedding of x [T, heads·Hd] at the given absolute positions (spec §3.5). */
  rope(x: Tensor, positions: Int32Array, opts: RopeOptions): Tensor;
  /** Element-wise clamp to [-limit, limit] (config clip_qkv). */
  clamp(x: Tensor, limit: number): Tensor;
  createKVCache(opts: KVCacheOptions): KVCache;
  /** Per sequence: append k, v to its cache, then causal softmax(q·kᵀ/√Hd)·v over its positions → [T, H·Hd]. */
  attention(args: AttentionArgs): Tensor;
  /** Router logits [T, E] → softmax (float32) → top-k or expert choice (spec §3.6). */
  router(logits: Tensor, opts: RouterOptions): Routing;
  /** out[token_a] += weight_a · down(silu(gate·x) ⊙ up·x) of expert_a, per token in ascending expert id → [T, D]. */
  experts(x: Tensor, weights: ExpertWeights, routing: Routing): Tensor;
  add(a: Tensor, b: Tensor): Tensor;
  /** factor · x (a LoRA's scaling s in y = x·Wᵀ + s·x·Aᵀ·Bᵀ; the loss terms' weights in training). */
  scale(x: Tensor, factor: number): Tensor;
  /** Rows [start, start+count) of x [T, N]. */
  rows(x: Tensor, start: number, count: number): Tensor;
  /** The parts' rows stacked: [Σ n_i, N]. */
  concatRows(parts: readonly Tensor[]): Tensor;
  /**
   * Runs one inference pass whose intermediate tensors nothing keeps afterwards (routing observers copy what they
   * keep): the backend may reuse their storage for the next pass; the returned tensor stays. Optional.
   */
  scoped?(pass: () => Tensor): Tensor;
  /**
   * Within a `scoped` pass: the pass is done with these tensors (their last use has run, nothing holds them), so the
   * backend may hand their storage to the pass's next ops at once. Outside a pass, or not implemented: nothing.
   */
  retire?(...tensors: Tensor[]): void;
  /**
   * The caller is done with x (a pass's result it has read, a gradient accumulator after backward) and nothing reads it
   * again: the backend may hand its storage to a later op. Decode's logits are 200 KB a token: storage fresh from the
   * system costs a page fault per 4 KiB (~5 µs each on the virtual machines measured). Optional.
   */
  release?(x: Tensor): void;
  /**
   * Runs `pass` (one decode step: one token's embedding, the layers over `step.cache` from position `step.start`, the
   * head) within a `scoped` pass and records its work, so that `replayStep` can do the same work for a later token
   * without the model's code running again (the CUDA-graph idea). No plan where the pass did work a plan cannot
   * repeat. Optional.
   */
  recordStep?(step: { readonly cache: KVCache; readonly start: number }, pass: () => Tensor): { result: Tensor; plan?: StepPlan };
  /**
   * The recorded step for the token `ids[0]` at position `start` of `cache` (within a `scoped` pass): a new result
   * tensor, the cache written as the pass would, or null where this plan cannot serve it (another cache, or the
   * cache's storage moved since the recording): record again.
   */
  replayStep?(plan: StepPlan, ids: Int32Array, start: number, cache: KVCache): Tensor | null;
  /** Times every op of the replayed steps from now on (on: a fresh profile) or no more (off). Optional. */
  profileSteps?(on: boolean): void;
  /** Where the replayed steps' time went since profileSteps(true); null when profiling is off. */
  readStepProfile?(): StepProfile | null;
}

/** A decode step recorded by `Backend.recordStep`: opaque outside its backend. */
export interface StepPlan {
  readonly backend: string;
}

/**
 * Where replayed decode steps spent their time (Backend.profileSteps): per kind of op, summed over the profiled
 * tokens, in the order the ops first ran.
 */
export interface StepProfile {
  /** Decode steps profiled (replayed plans: a cache's first step runs the model's code and is not counted). */
  tokens: number;
  /** calls, seconds, and bytes of weights and KV cache read (KV rows written, for 'kv store'), over all tokens. */
  ops: { kind: string; calls: number; seconds: number; bytes: number }[];
}
