/**
 * The native backend: the ops in C++ with SIMD and a thread pool (native/src), weights memory-mapped from
 * safetensors files, not copied. Composition, not inheritance: each op below calls the addon, except the ones
 * `NATIVE_EXCEPTIONS` lists, which call the reference implementation on purpose (tensors share the reference
 * backend's host layout: float32 activations, weights in their stored dtype). A test prints and checks that list.
 */
import { availableParallelism } from 'node:os';
import type { AttentionArgs, ExpertWeights, KVCacheOptions, RopeOptions, Routing, RouterOptions, Tensor, WeightSource } from '../../core/backend.js';
import type { AdamWStep, AdamWTensors, OpImplementations, SavedState, TrainingBackend } from '../../core/training.js';
import { byteSize, isQuantized, type DType } from '../../core/dtype.js';
import { OlmoeError, ResourceError } from '../../core/errors.js';
import { ropeInverseFrequencies } from '../../core/rope.js';
import { ReferenceBackend } from '../reference/index.js';
import { RefKVCache, storeKeysValues } from '../reference/attention.js';
import { activation, asRef, checkShapes, f32, RefTensor, showShape, sizeOf, storageFor, type Storage } from '../reference/tensor.js';
import type { NativeAddon } from './addon.js';

/** The kernel's dtype enum (native/src/kernels.h). */
const DTYPE_CODES: Record<DType, number> = { f32: 0, bf16: 1, f16: 2, q8_0: 3, q4_0: 4, q4_k: 5, q5_k: 6, q6_k: 7 };

/**
 * The ops this backend runs in TypeScript, and why: each an explicit choice (ARCHITECTURE.md: never a silent
 * fallback). Data movement (rows, concatRows, write, fill) is a typed-array copy in either language.
 */
export const NATIVE_EXCEPTIONS: ReadonlyMap<string, string> = new Map([
  ['clamp', 'reference: clip_qkv is null in every OLMoE config; an element-wise clamp'],
  ['experts (mixed weight dtypes)', 'reference: one dtype per call in the kernel; rare mixed checkpoints'],
  ['experts (expert choice)', 'reference: the inference kernel takes K experts per token'],
  ['router', 'reference: softmax and top-k over [T, E] logits'],
  ['attentionBackward', 'reference'],
  ['expertsForward', 'reference'],
  ['expertsBackward', 'reference'],
  ['routerBackward', 'reference'],
  ['rmsnormBackward', 'reference'],
  ['ropeBackward', 'reference'],
  ['embeddingBackward', 'reference'],
  ['accumulate', 'reference'],
  ['accumulateRows', 'reference'],
  ['crossEntropy', 'reference'],
  ['crossEntropyForward', 'reference'],
  ['crossEntropyBackward', 'reference'],
  ['loadBalancingLoss', 'reference'],
  ['loadBalancingBackward', 'reference'],
  ['routerZLoss', 'reference'],
  ['routerZBackward', 'reference'],
  ['scale', 'reference'],
  ['sumOfSquares', 'reference'],
  ['adamw', 'reference'],
]);

export interface NativeOptions {
  /** Worker threads including the caller; default: $OLMOE_THREADS, else every core. */
  threads?: number;
  /** false: read weights into memory instead of mapping the files. */
  mmap?: boolean;
}

/**
 * More threads than the machine's CPUs only make the pool's workers wait for each other; a count far beyond
 * them (100000) would fail to start. Clamped to the CPUs, saying so once.
 */
function usableThreads(threads: number, what: string): number {
  const cpus = availableParallelism();
  if (threads <= cpus) return threads;
  process.stderr.write(`olmoe: ${what} is more than this machine's ${cpus} CPUs; using ${cpus}\n`);
  return cpus;
}

export class NativeBackend implements TrainingBackend {
  readonly name = 'native';
  readonly precision = 'f32';
  /** Runs the ops NATIVE_EXCEPTIONS lists (and nothing else). */
  private readonly ref = new ReferenceBackend();

  constructor(
    private readonly addon: NativeAddon,
    private readonly options: NativeOptions = {},
  ) {
    const fromEnv = options.threads === undefined && process.env.OLMOE_THREADS;
    const threads = options.threads ?? (fromEnv ? Number(process.env.OLMOE_THREADS) : undefined);
    if (threads !== undefined) {
      const what = fromEnv ? `OLMOE_THREADS=${process.env.OLMOE_THREADS}` : `threads ${threads}`;
      if (!Number.isSafeInteger(threads) || threads < 1) throw new OlmoeError('input', `${what}: threads must be a positive integer`);
      try {
        addon.setThreads(usableThreads(threads, what));
      } catch (error) {
        throw new OlmoeError('resources', `${what}: ${(error as Error).message}`, { cause: error });
      }
    }
  }

  get threads(): number {
    return this.addon.threads();
  }

  get simd(): string {
    return this.addon.simdLevel();
  }

  /** Every op of the interface and who computes it here. */
  implementations(): OpImplementations {
    const ops = new Map<string, string>();
    for (const name of OP_NAMES) ops.set(name, NATIVE_EXCEPTIONS.get(name) ?? (HOST_COPIES.has(name) ? 'host copy' : 'native'));
    for (const [name, why] of NATIVE_EXCEPTIONS) ops.set(name, why);
    return ops;
  }

  // ---------------------------------------------------------------- storage
  /** Map the tensor's bytes from its file when it has one (and they are aligned for the dtype), else read them. */
  async weight(source: WeightSource): Promise<Tensor> {
    const needed = byteSize(source.dtype, source.shape);
    if (needed !== source.byteLength) {
      throw new OlmoeError('input', `weight ${source.name} of shape [${source.shape}] ${source.dtype} needs ${needed} bytes, got ${source.byteLength}`);
    }
    const elementBytes = isQuantized(source.dtype) ? 1 : byteSize(source.dtype, [1]);
    const mappable = this.options.mmap !== false && source.file !== undefined && source.offset! % elementBytes === 0 && needed > 0;
    const storage: Storage = mappable ? this.mapped(source) : storageFor(source.dtype, await source.read());
    return new RefTensor(source.dtype, source.shape, storage);
  }

  private mapped(source: WeightSource): Storage {
    let buffer: ArrayBuffer;
    try {
      buffer = this.addon.mapTensor(source.file!, source.offset!, source.byteLength);
    } catch (error) {
      throw new OlmoeError('format', `${source.file}: cannot map tensor ${source.name}: ${(error as Error).message}`, { cause: error });
    }
    if (isQuantized(source.dtype)) return new Uint8Array(buffer);
    return source.dtype === 'f32' ? new Float32Array(buffer) : new Uint16Array(buffer);
  }

  fromFloat32(data: Float32Array, shape: readonly number[]): Tensor {
    return activation(data, shape);
  }

  toFloat32(x: Tensor): Float32Array {
    return this.ref.toFloat32(x);
  }

  zeros(shape: readonly number[]): Tensor {
    return activation(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
  }

  write(x: Tensor, values: Float32Array | Float64Array): void {
    const data = f32(x);
    checkShapes('write', data.length === values.length, () => `${values.length} values into ${showShape(x)}`);
    data.set(values);
  }

  fill(x: Tensor, value: number): void {
    f32(x).fill(value);
  }

  createKVCache(opts: KVCacheOptions): RefKVCache {
    return new RefKVCache(opts, (floats) => {
      try {
        return new Float32Array(this.addon.allocate(floats * 4));
      } catch (error) {
        const positions = floats / (opts.kvHeads * opts.headDim);
        throw new ResourceError(`a KV cache of ${positions} positions × ${opts.layers} layers`, 2 * opts.layers * floats * 4, error);
      }
    });
  }

  // ---------------------------------------------------------------- forward
  embedding(table: Tensor, ids: Int32Array): Tensor {
    return this.ref.embedding(table, ids); // a row gather: widening copies (listed as a host copy)
  }

  matmul(x: Tensor, w: Tensor): RefTensor {
    const weight = asRef(w);
    const [outDim, inDim] = [weight.rows, weight.cols];
    checkShapes('matmul', asRef(x).cols === inDim, () => `x ${showShape(x)} does not match weight ${showShape(w)}`);
    const input = f32(x);
    const tokens = input.length / inDim;
    const out = new Float32Array(tokens * outDim);
    this.addon.matmul(input, tokens, inDim, weightData(weight), DTYPE_CODES[weightDtype(weight)], outDim, out);
    return activation(out, [tokens, outDim]);
  }

  /** Gains of any dtype: widened once per call (a few KB) for the float32 kernel. */
  rmsnorm(x: Tensor, weight: Tensor, eps: number): RefTensor {
    const gain = asRef(weight);
    const input = asRef(x);
    checkShapes('rmsnorm', input.cols === gain.cols, () => `x ${showShape(x)} does not match weight ${showShape(weight)}`);
    const out = new Float32Array(sizeOf(input));
    this.addon.rmsnorm(f32(x), input.rows, input.cols, this.toFloat32(gain), eps, out);
    return activation(out, input.shape);
  }

  rope(x: Tensor, positions: Int32Array, opts: RopeOptions): RefTensor {
    const input = asRef(x);
    checkShapes('rope', input.cols === opts.heads * opts.headDim && input.rows === positions.length, () => `x ${showShape(x)} is not [${positions.length}, ${opts.heads}·${opts.headDim}]`);
    const out = new Float32Array(sizeOf(input));
    this.addon.rope(f32(x), positions.length, opts.heads, opts.headDim, positions, ropeInverseFrequencies(opts.headDim, opts.theta), out);
    return activation(out, input.shape);
  }

  clamp(x: Tensor, limit: number): Tensor {
    return this.ref.clamp(x, limit);
  }

  add(a: Tensor, b: Tensor): RefTensor {
    const [left, right] = [f32(a), f32(b)];
    checkShapes('add', left.length === right.length, () => `${showShape(a)} + ${showShape(b)}`);
    const out = new Float32Array(left.length);
    this.addon.add(left, right, out);
    return activation(out, asRef(a).shape);
  }

  rows(x: Tensor, start: number, count: number): Tensor {
    return this.ref.rows(x, start, count);
  }

  concatRows(parts: readonly Tensor[]): Tensor {
    return this.ref.concatRows(parts);
  }

  /** Per sequence: keys and values stored into its cache (or read in place: training), the causal kernel over them. */
  attention(args: AttentionArgs): RefTensor {
    const { heads, kvHeads, headDim } = args;
    const [q, k, v] = [f32(args.q), f32(args.k), f32(args.v)];
    const [width, kvWidth] = [heads * headDim, kvHeads * headDim];
    const tokens = q.length / width;
    checkShapes('attention', Number.isInteger(tokens) && k.length === tokens * kvWidth && v.length === k.length && args.sequences.reduce((n, s) => n + s.tokens, 0) === tokens,
      () => `q ${showShape(args.q)}, k ${showShape(args.k)}, v ${showShape(args.v)} do not fit ${heads} heads, ${kvHeads} kv heads × ${headDim} and the sequences`);
    const out = new Float32Array(q.length);
    let row = 0;
    for (const s of args.sequences) {
      const own = { keys: k.subarray(row * kvWidth, (row + s.tokens) * kvWidth), values: v.subarray(row * kvWidth, (row + s.tokens) * kvWidth) };
      checkShapes('attention', s.cache instanceof RefKVCache || (!s.cache && s.start === 0), () => 'the KV cache was not made by this backend');
      const cache = s.cache as RefKVCache | undefined;
      if (cache) storeKeysValues(cache, args.layer, s.start, own);
      const [keys, values] = cache ? [cache.keys[args.layer]!, cache.values[args.layer]!] : [own.keys, own.values];
      this.addon.attention(q.subarray(row * width, (row + s.tokens) * width), keys, values, s.tokens, s.start, heads, kvHeads, headDim, out.subarray(row * width, (row + s.tokens) * width));
      row += s.tokens;
    }
    return activation(out, [tokens, width]);
  }

  router(logits: Tensor, opts: RouterOptions): Routing {
    return this.ref.router(logits, opts);
  }

  experts(x: Tensor, weights: ExpertWeights, routing: Routing): Tensor {
    const input = asRef(x);
    checkShapes('experts', input.rows === routing.tokens, () => `x ${showShape(x)} but routing for ${routing.tokens} tokens`);
    const first = asRef(weights.gate[0]!);
    const mixed = [...weights.gate, ...weights.up, ...weights.down].some((t) => t.dtype !== first.dtype);
    if (mixed || routing.mode !== 'token_choice') return this.ref.experts(x, weights, routing); // NATIVE_EXCEPTIONS
    const out = new Float32Array(sizeOf(input));
    const data = (list: readonly Tensor[]) => list.map((t) => weightData(asRef(t)));
    this.addon.experts(f32(x), routing.tokens, input.cols, first.rows, routing.perGroup, DTYPE_CODES[weightDtype(first)],
      data(weights.gate), data(weights.up), data(weights.down), routing.expertIds, f32(routing.weights), out);
    return activation(out, input.shape);
  }

  // ---------------------------------------------------------------- losses
  crossEntropy(logits: Tensor, targets: Int32Array): Tensor {
    return this.ref.crossEntropy(logits, targets);
  }

  loadBalancingLoss(probs: Tensor, counts: Float64Array, scale: number): Tensor {
    return this.ref.loadBalancingLoss(probs, counts, scale);
  }

  routerZLoss(logits: Tensor, scale: number): Tensor {
    return this.ref.routerZLoss(logits, scale);
  }

  scale(x: Tensor, factor: number): Tensor {
    return this.ref.scale(x, factor);
  }

  // ---------------------------------------------------------------- training forward and backward
  attentionForward(args: AttentionArgs): { out: Tensor; saved: SavedState } {
    checkShapes('attention', args.sequences.every((s) => !s.cache && s.start === 0), () => 'training attends within each sequence (no KV cache, start 0)');
    return { out: this.attention(args), saved: { op: 'attention' } };
  }

  expertsForward(x: Tensor, weights: ExpertWeights, routing: Routing): { out: Tensor; saved: SavedState } {
    return this.ref.expertsForward(x, weights, routing);
  }

  crossEntropyForward(logits: Tensor, targets: Int32Array): { out: Tensor; saved: SavedState } {
    return this.ref.crossEntropyForward(logits, targets);
  }

  accumulate(target: Tensor, source: Tensor, factor?: number): void {
    this.ref.accumulate(target, source, factor);
  }

  accumulateRows(target: Tensor, start: number, source: Tensor): void {
    this.ref.accumulateRows(target, start, source);
  }

  embeddingBackward(ids: Int32Array, dOut: Tensor, dTable: Tensor): void {
    this.ref.embeddingBackward(ids, dOut, dTable);
  }

  /** dx = dOut · w and dw += dOutᵀ · x on the training GEMM (native/src/train-gemm.cc). */
  matmulBackward(args: { x: Tensor; w: Tensor; dOut: Tensor; dx: Tensor | null; dw: Tensor | null }): void {
    const weight = asRef(args.w);
    const [outDim, inDim] = [weight.rows, weight.cols];
    const dy = f32(args.dOut);
    const tokens = dy.length / outDim;
    if (args.dx) this.addon.gemm(false, false, tokens, inDim, outDim, dy, f32(args.w), f32(args.dx), true);
    if (args.dw) this.addon.gemm(true, false, outDim, inDim, tokens, dy, f32(args.x), f32(args.dw), true);
  }

  rmsnormBackward(args: { x: Tensor; weight: Tensor; eps: number; dOut: Tensor; dx: Tensor | null; dWeight: Tensor | null }): void {
    this.ref.rmsnormBackward(args);
  }

  ropeBackward(dOut: Tensor, positions: Int32Array, opts: RopeOptions, dx: Tensor): void {
    this.ref.ropeBackward(dOut, positions, opts, dx);
  }

  attentionBackward(args: { args: AttentionArgs; saved: SavedState; out: Tensor; dOut: Tensor; dq: Tensor; dk: Tensor; dv: Tensor }): void {
    this.ref.attentionBackward(args);
  }

  routerBackward(args: { routing: Routing; opts: RouterOptions; dProbs: Tensor | null; dWeights: Tensor | null; dLogits: Tensor }): void {
    this.ref.routerBackward(args);
  }

  expertsBackward(args: { x: Tensor; weights: ExpertWeights; routing: Routing; saved: SavedState; dOut: Tensor; dx: Tensor | null; dRoutingWeights: Tensor | null; dWeights: ExpertWeights | null }): void {
    this.ref.expertsBackward(args);
  }

  crossEntropyBackward(args: { logits: Tensor; targets: Int32Array; saved: SavedState; dLoss: Tensor; dLogits: Tensor }): void {
    this.ref.crossEntropyBackward(args);
  }

  loadBalancingBackward(args: { probs: Tensor; counts: Float64Array; scale: number; dLoss: Tensor; dProbs: Tensor }): void {
    this.ref.loadBalancingBackward(args);
  }

  routerZBackward(args: { logits: Tensor; scale: number; dLoss: Tensor; dLogits: Tensor }): void {
    this.ref.routerZBackward(args);
  }

  sumOfSquares(xs: readonly Tensor[]): number {
    return this.ref.sumOfSquares(xs);
  }

  adamw(params: readonly AdamWTensors[], step: AdamWStep): void {
    this.ref.adamw(params, step);
  }
}

/** Every op of the training backend interface, for `implementations()`. */
const OP_NAMES = [
  'weight', 'fromFloat32', 'toFloat32', 'zeros', 'write', 'fill', 'createKVCache', 'embedding', 'matmul', 'rmsnorm', 'rope', 'clamp', 'attention',
  'router', 'experts', 'add', 'rows', 'concatRows', 'crossEntropy', 'loadBalancingLoss', 'routerZLoss', 'scale', 'attentionForward', 'expertsForward',
  'crossEntropyForward', 'accumulate', 'accumulateRows', 'embeddingBackward', 'matmulBackward', 'rmsnormBackward', 'ropeBackward', 'attentionBackward',
  'routerBackward', 'expertsBackward', 'crossEntropyBackward', 'loadBalancingBackward', 'routerZBackward', 'sumOfSquares', 'adamw',
] as const;

const HOST_COPIES = new Set(['weight', 'fromFloat32', 'toFloat32', 'zeros', 'write', 'fill', 'createKVCache', 'embedding', 'rows', 'concatRows']);

function weightData(t: RefTensor): Float32Array | Uint16Array | Uint8Array {
  if (t.dtype === 'f64') throw new OlmoeError('unsupported', 'the native backend computes in float32; float64 tensors belong to the reference backend');
  return t.data as Float32Array | Uint16Array | Uint8Array;
}

function weightDtype(t: RefTensor): DType {
  if (t.dtype === 'f64') throw new OlmoeError('unsupported', 'the native backend computes in float32; float64 tensors belong to the reference backend');
  return t.dtype;
}
