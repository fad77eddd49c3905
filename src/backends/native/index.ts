/**
 * The native backend: the hot ops (matmul, router logits, grouped experts, attention) in C++ with SIMD and a
 * thread pool; weights memory-mapped from safetensors files, not copied. Tensors have the reference backend's
 * layout (float32 activations, weights in their stored dtype), so the light ops reuse the reference code.
 */
import { availableParallelism } from 'node:os';
import type { AttentionArgs, ExpertWeights, GemmF32Args, KVCacheOptions, RopeOptions, Routing, RouterOptions, Tensor, WeightSource } from '../../core/backend.js';
import { byteSize, isQuantized, type DType } from '../../core/dtype.js';
import { OlmoeError, ResourceError } from '../../core/errors.js';
import { ReferenceBackend } from '../reference/index.js';
import { RefKVCache, storeKeysValues } from '../reference/attention.js';
import { rmsnorm as referenceRmsnorm } from '../reference/ops.js';
import { ropeInverseFrequencies } from '../../core/rope.js';
import { experts as referenceExperts, routeFromLogits } from '../reference/moe.js';
import { activation, asRef, checkShapes, f32, RefTensor, showShape, storageFor, type Storage } from '../reference/tensor.js';
import type { NativeAddon } from './addon.js';
import { measureMachine, type MachineLimits } from './machine.js';
import { checkSimdEnv } from './simd.js';

/** The kernel's dtype enum (native/src/kernels.h). */
const DTYPE_CODES: Record<DType, number> = { f32: 0, bf16: 1, f16: 2, q8_0: 3, q4_0: 4, q4_k: 5, q5_k: 6, q6_k: 7 };

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

export class NativeBackend extends ReferenceBackend {
  override readonly name = 'native';

  constructor(
    private readonly addon: NativeAddon,
    private readonly options: NativeOptions = {},
  ) {
    super();
    checkSimdEnv(addon);
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

  /** Read bandwidth and FP32 peak of this machine with this backend's threads (machine.ts; takes a few seconds). */
  measureMachine(): MachineLimits {
    return measureMachine(this.addon);
  }

  /** Map the tensor's bytes from its file when it has one (and they are aligned for the dtype), else read them. */
  override async weight(source: WeightSource): Promise<Tensor> {
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

  override matmul = (x: Tensor, w: Tensor): RefTensor => {
    const weight = asRef(w);
    const [outDim, inDim] = [weight.rows, weight.cols];
    checkShapes('matmul', asRef(x).cols === inDim, () => `x ${showShape(x)} does not match weight ${showShape(w)}`);
    const input = f32(x);
    const tokens = input.length / inDim;
    const out = new Float32Array(tokens * outDim);
    this.addon.matmul(input, tokens, inDim, weight.data, DTYPE_CODES[weight.dtype], outDim, out);
    return activation(out, [tokens, outDim]);
  };

  /** Training's GEMM: packed panels in C++ for all four orientations (native/src/train-gemm.cc). */
  gemmF32(args: GemmF32Args): void {
    const { m, n, k, a, b, c, transA = false, transB = false, accumulate = false } = args;
    this.addon.gemm(transA, transB, m, n, k, a, b, c, accumulate);
  }

  override router = (x: Tensor, gate: Tensor, opts: RouterOptions): Routing => routeFromLogits(f32(this.matmul(x, gate)), asRef(gate).rows, opts);

  override experts = (x: Tensor, weights: ExpertWeights, routing: Routing): RefTensor => {
    const input = asRef(x);
    checkShapes('experts', input.rows === routing.tokens, () => `x ${showShape(x)} but routing for ${routing.tokens} tokens`);
    const first = asRef(weights.gate[0]!);
    const data = (list: readonly Tensor[]) => list.map((t) => asRef(t).data);
    const mixed = [...weights.gate, ...weights.up, ...weights.down].some((t) => t.dtype !== first.dtype);
    if (mixed) return referenceExperts(x, weights, routing); // one dtype per call in the kernel; rare mixed checkpoints use the reference
    const out = new Float32Array(input.data.length);
    this.addon.experts(f32(x), routing.tokens, input.cols, first.rows, routing.topK, DTYPE_CODES[first.dtype],
      data(weights.gate), data(weights.up), data(weights.down), routing.expertIds, routing.weights, out);
    return activation(out, input.shape);
  };

  override createKVCache(opts: KVCacheOptions): RefKVCache {
    return new RefKVCache(opts, (floats) => {
      try {
        return new Float32Array(this.addon.allocate(floats * 4));
      } catch (error) {
        const positions = floats / (opts.kvHeads * opts.headDim);
        throw new ResourceError(`a KV cache of ${positions} positions × ${opts.layers} layers`, 2 * opts.layers * floats * 4, error);
      }
    });
  }

  override rmsnorm = (x: Tensor, weight: Tensor, eps: number): RefTensor => {
    const gain = asRef(weight);
    if (gain.dtype !== 'f32') return referenceRmsnorm(x, weight, eps);
    const input = asRef(x);
    checkShapes('rmsnorm', input.cols === gain.cols, () => `x ${showShape(x)} does not match weight ${showShape(weight)}`);
    const out = new Float32Array(input.data.length);
    this.addon.rmsnorm(f32(x), input.rows, input.cols, gain.data as Float32Array, eps, out);
    return activation(out, input.shape);
  };

  override rope = (x: Tensor, positions: Int32Array, opts: RopeOptions): RefTensor => {
    const input = asRef(x);
    checkShapes('rope', input.cols === opts.heads * opts.headDim && input.rows === positions.length, () => `x ${showShape(x)} is not [${positions.length}, ${opts.heads}·${opts.headDim}]`);
    const out = new Float32Array(input.data.length);
    this.addon.rope(f32(x), positions.length, opts.heads, opts.headDim, positions, ropeInverseFrequencies(opts.headDim, opts.theta), out);
    return activation(out, input.shape);
  };

  override add = (a: Tensor, b: Tensor): RefTensor => {
    const [left, right] = [f32(a), f32(b)];
    checkShapes('add', left.length === right.length, () => `${showShape(a)} + ${showShape(b)}`);
    const out = new Float32Array(left.length);
    this.addon.add(left, right, out);
    return activation(out, asRef(a).shape);
  };

  override attention = (args: AttentionArgs): RefTensor => {
    const { cache, tokens } = storeKeysValues(args);
    const out = new Float32Array(tokens * args.heads * args.headDim);
    this.addon.attention(f32(args.q), cache.keys[args.layer]!, cache.values[args.layer]!, tokens, args.start, args.heads, args.kvHeads, args.headDim, out);
    return activation(out, [tokens, args.heads * args.headDim]);
  };
}
