/**
 * Loading the C++ addon built by `npm install` (native/, node-gyp). Absent or broken, the caller falls back to
 * the reference backend; $OLMOE_NATIVE_ADDON points at another build (tests use it to simulate a missing one).
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

type Floats = Float32Array;
type Weights = Float32Array | Uint16Array | Uint8Array;

export interface NativeAddon {
  simdLevel(): string;
  /** Whether the decode kernels prefetch their weight streams in software (native/src/simd.h stream_prefetch; OLMOE_PREFETCH). */
  streamPrefetch(): boolean;
  /** The many-token kernel for weights of this DTYPE_CODES code: 'amx-int8', 'avx512-vnni-16rows', 'avx2-16rows', 'avx512-vnni', 'integer-dot' or 'float-tiles'. */
  quantGemmKernel(dtype: number): string;
  /** kind 0 q4_k, 1 q5_k, 2 q6_k: blocks × 256 values into out (bitwise src/core/quant.ts's quantizeReference). */
  quantizeK(kind: number, values: Float32Array, blocks: number, out: Uint8Array): void;
  threads(): number;
  setThreads(threads: number): void;
  mapTensor(path: string, offset: number, length: number): ArrayBuffer;
  matmul(x: Floats, tokens: number, inDim: number, w: Weights, dtype: number, outDim: number, out: Floats): void;
  /** The dtype code weights of this code are repacked to for this CPU (native/src/packed.h: q4_0, q4_k and q6_k at the AVX2 and AVX-512 levels without AMX; OLMOE_PACK=0 declines), else the code. */
  packedType(dtype: number): number;
  /** rows × cols weights of dtype code 4 (q4_0), 5 (q4_k) or 7 (q6_k), rows % 16 == 0, in their packed layout: a view into a chunk shared with other packed weights. */
  packWeight(dtype: number, bytes: Uint8Array, rows: number, cols: number): Uint8Array;
  /** Unmaps the whole pages of a view into a mapped file (they map again when read); false for other memory. */
  releasePages(view: Uint8Array): boolean;
  /** Index of the first NaN or ±∞ of values, −1 if none. */
  firstNonFinite(values: Float32Array): number;
  /** Rows `ids` of a table view into a mapped file, read from the file (no page of the mapping touched) and widened from the table's dtype code into out (float32, ids × width); false for other memory or an id outside. */
  embedRows(table: Uint8Array, rowBytes: number, dtype: number, ids: Int32Array, out: Float32Array): boolean;
  /** c[m, n] = op(a)[m, k] · op(b)[k, n], or c += that; op transposes (a stored [k, m], b stored [n, k]) when set. */
  gemm(transA: boolean, transB: boolean, m: number, n: number, k: number, a: Floats, b: Floats, c: Floats, accumulate: boolean, bf16?: boolean): void;
  /** matmul of x by each weight (at most 8: one dtype code, or one each) into the out of the same index ([tokens, out.length ÷ tokens]). */
  matmuls(x: Floats, tokens: number, inDim: number, dtype: number | readonly number[], weights: Weights[], outs: Floats[]): void;
  /** The arrays' data addresses, for experts (the caller keeps the arrays alive as long as the table). */
  weightTable(arrays: Weights[]): ArrayBuffer;
  experts(
    x: Floats, tokens: number, hidden: number, ffn: number, topK: number, dtype: number,
    gates: ArrayBuffer, ups: ArrayBuffer, downs: ArrayBuffer, expertIds: Int32Array, weights: Floats, out: Floats,
    /** The downs' dtype when it differs (both quantized, SIMD level above scalar). */
    downDtype?: number,
  ): void;
  /** keys, values: the KV cache's bytes in kvType (a DTYPE_CODES code: f32, f16 or q8_0) or float32 rows. */
  attention(q: Floats, keys: Floats | Uint8Array, values: Floats | Uint8Array, kvType: number, tokens: number, start: number, heads: number, kvHeads: number, headDim: number, out: Floats): void;
  /** count rows of width floats rounded to kvType (native/src/kv-cache.h) into out's bytes. */
  kvStore(rows: Floats, count: number, width: number, kvType: number, out: Uint8Array): void;
  rmsnorm(x: Floats, rows: number, width: number, weight: Floats, eps: number, out: Floats): void;
  rope(x: Floats, tokens: number, heads: number, headDim: number, positions: Int32Array, invFreq: Floats, out: Floats): void;
  add(a: Floats, b: Floats, out: Floats): void;
  /** Step plans (native/src/step-plan.h): the recordable calls after planBegin are kept until planEnd → the plan. */
  planBegin(): void;
  planEnd(): unknown;
  /**
   * The plan's calls again, `shift` positions on (a RangeError outside what its cache buffers hold); → its step count.
   * With a profile (2 values a step) each step is timed: its seconds added to [2i], the bytes it reads to [2i + 1].
   */
  planRun(plan: unknown, shift: number, profile?: Float64Array): number;
  /** Each step's kind: 'matmul', 'experts', 'attention', 'kv store', 'rmsnorm', 'add', 'rope' or 'router'. */
  planKinds(plan: unknown): string[];
  /** Zeroed memory (the KV cache), freed by `release` or when collected. */
  allocate(bytes: number): ArrayBuffer;
  /** Frees memory from `allocate` now and detaches its buffer (its views read as empty); false for other buffers. */
  release(buffer: ArrayBuffer): boolean;
  /** Memory from `allocate` grown to `bytes` (its contents kept, the rest zero, the old buffer detached); null for other buffers. */
  resize(buffer: ArrayBuffer, bytes: number): ArrayBuffer | null;
  /** Faults in the whole pages inside a view of allocated memory in one call; false where the kernel cannot. */
  populate(view: Uint8Array): boolean;
  /** Bytes/s reading `bytes` of memory with the pool's threads, best of `repeats` (0: could not allocate). */
  measureReadBandwidth(bytes: number, repeats: number, keep?: boolean): number;
  /** FP32 FLOP/s of register-only FMA chains on the pool's threads at the kernels' SIMD level, best of `repeats`. */
  measureFp32Peak(repeats: number): number;
  // training (native/src/train-bindings.cc; gradients are added into the arrays given, null: not computed)
  // A `fresh` accumulator holds no values yet: the kernel writes it instead of adding.
  matmulBackward(x: Floats, w: Floats, dy: Floats, tokens: number, inDim: number, outDim: number, dx: Floats | null, dw: Floats | null, dxFresh: boolean, bf16?: boolean): void;
  rmsnormBackward(x: Floats, weight: Floats, dy: Floats, rows: number, width: number, eps: number, dx: Floats | null, dw: Floats | null, dxFresh: boolean): void;
  ropeRotate(x: Floats, tokens: number, heads: number, headDim: number, positions: Int32Array, invFreq: Floats, inverse: boolean, accumulate: boolean, out: Floats): void;
  axpy(factor: number, x: Floats, y: Floats, fresh?: boolean): void;
  embeddingBackward(ids: Int32Array, dy: Floats, width: number, dTable: Floats, rows: number): void;
  routerForward(logits: Floats, tokens: number, experts: number, topK: number, normTopK: boolean, expertChoice: boolean, capacity: number,
    probs: Floats, expertIds: Int32Array, tokenIds: Int32Array, weights: Floats): void;
  routerBackward(logits: Floats, tokens: number, experts: number, topK: number, normTopK: boolean, expertChoice: boolean, capacity: number,
    probs: Floats, expertIds: Int32Array, tokenIds: Int32Array, weights: Floats, dProbs: Floats | null, dWeights: Floats | null, dLogits: Floats, fresh: boolean): void;
  expertsForward(x: Floats, tokens: number, hidden: number, ffn: number, gates: Floats[], ups: Floats[], downs: Floats[], expertIds: Int32Array,
    tokenIds: Int32Array, weights: Floats, order: Int32Array, gatePre: Floats, upPre: Floats, y: Floats, out: Floats, bf16?: boolean): void;
  expertsBackward(x: Floats, tokens: number, hidden: number, ffn: number, gates: Floats[], ups: Floats[], downs: Floats[], expertIds: Int32Array,
    tokenIds: Int32Array, weights: Floats, order: Int32Array, gatePre: Floats, upPre: Floats, y: Floats, dy: Floats, dx: Floats | null,
    dWeights: Floats | null, dGates: Floats[] | null, dUps: Floats[] | null, dDowns: Floats[] | null, dxFresh: boolean, dWeightsFresh: boolean, bf16?: boolean): void;
  attentionForward(q: Floats, k: Floats, v: Floats, lengths: Int32Array, heads: number, kvHeads: number, headDim: number, lse: Floats, out: Floats): void;
  attentionBackward(q: Floats, k: Floats, v: Floats, lengths: Int32Array, heads: number, kvHeads: number, headDim: number, lse: Floats, out: Floats,
    dOut: Floats, dq: Floats, dk: Floats, dv: Floats, dqFresh: boolean, dkFresh: boolean, dvFresh: boolean): void;
  crossEntropyForward(logits: Floats, tokens: number, vocab: number, targets: Int32Array, lse: Floats): number;
  crossEntropyBackward(logits: Floats, tokens: number, vocab: number, targets: Int32Array, lse: Floats, scale: number, dLogits: Floats, fresh: boolean): void;
  weightedCrossEntropyBackward(logits: Floats, tokens: number, vocab: number, targets: Int32Array, lse: Floats, scale: number, weights: Floats, dLogits: Floats, fresh: boolean): void;
  loadBalancingForward(probs: Floats, tokens: number, experts: number, counts: Float64Array, scale: number): number;
  loadBalancingBackward(tokens: number, experts: number, counts: Float64Array, factor: number, dProbs: Floats, fresh: boolean): void;
  routerZForward(logits: Floats, tokens: number, experts: number, scale: number): number;
  routerZBackward(logits: Floats, tokens: number, experts: number, factor: number, dLogits: Floats, fresh: boolean): void;
  /** How bf16 training products run here: 'amx-bf16' (tile unit), 'avx512-bf16' (vdpbf16ps) or 'fp32-fma' (rounded operands). */
  trainGemmBf16Kernel(): string;
  /** out[i] = x[i] rounded to the nearest bfloat16, ties to even (the training GEMM's operand rounding). */
  roundBf16(x: Floats, out: Floats): void;
  /** FLOP/s of the bf16 kernel's instruction (AMX tdpbf16ps or vdpbf16ps) on the pool's threads, operands in registers (0: none). */
  measureBf16Peak(repeats: number): number;
  adamw(values: Floats[], grads: Floats[], ms: Floats[], vs: Floats[], decays: Uint8Array, lr: number, beta1: number, beta2: number, eps: number,
    weightDecay: number, step: number, gradScale: number): void;
  sumOfSquares(arrays: Floats[]): number;
}

/** dist/src/backends/native → the package root, where native/build/Release/ holds the addon. */
const packageRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', '..');
export const DEFAULT_ADDON_PATH = join(packageRoot, 'native', 'build', 'Release', 'olmoe_native.node');

let cached: { addon?: NativeAddon; problem?: string } | undefined;

/** The addon, or why it is unavailable. */
export function loadAddon(): { addon?: NativeAddon; problem?: string } {
  if (cached) return cached;
  const path = process.env.OLMOE_NATIVE_ADDON || DEFAULT_ADDON_PATH;
  if (!existsSync(path)) return (cached = { problem: `${path} does not exist (the build failed or was skipped at install)` });
  try {
    return (cached = { addon: createRequire(import.meta.url)(path) as NativeAddon });
  } catch (error) {
    return (cached = { problem: `${path} does not load: ${(error as Error).message}` });
  }
}
