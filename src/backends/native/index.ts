/**
 * The native backend: the ops in C++ with SIMD and a thread pool (native/src), weights memory-mapped from
 * safetensors files, not copied (q4_0 / q4_k / q6_k matrices on CPUs with AVX-512 VNNI and no AMX: repacked once at
 * load for the kernels, productWeight). Composition, not inheritance: each op below calls the addon, except the ones
 * `NATIVE_EXCEPTIONS` lists, which call the reference implementation on purpose (tensors share the reference
 * backend's host layout: float32 activations, weights in their stored dtype). A test prints and checks that list.
 */
import { statSync, type Stats } from 'node:fs';
import { availableParallelism } from 'node:os';
import { DEFAULT_KV_CACHE_TYPE, kvRowBytes, type AttentionArgs, type ExpertWeights, type KVCache, type KVCacheOptions, type RopeOptions, type Routing, type RouterOptions, type StepPlan, type StepProfile, type Tensor, type WeightSource } from '../../core/backend.js';
import type { AdamWStep, AdamWTensors, MatmulPrecision, OpImplementations, SavedState, TokenWeights, TrainingBackend } from '../../core/training.js';
import { byteSize, isQuantized, type DType } from '../../core/dtype.js';
import { OlmoeError, ResourceError } from '../../core/errors.js';
import { ReferenceBackend } from '../reference/index.js';
import { RefKVCache, type KVEncoder } from '../reference/kv-cache.js';
import { activation, asRef, checkShapes, f32, RefTensor, showShape, sizeOf, storageFor, type Storage } from '../reference/tensor.js';
import type { NativeAddon } from './addon.js';
import { measureMachine, sampleReadBandwidth, type MachineLimits } from './machine.js';
import { KVStoragePool } from './kv-pool.js';
import { checkSimdEnv } from './simd.js';
import * as train from './training.js';

/** Weights smaller than this are read into memory instead of mapped (NativeBackend.weight). */
const MIN_MAPPED_BYTES = 2 ** 20;
/**
 * Bytes of a file one mapped ArrayBuffer covers (NativeBackend.mapping): V8 collects garbage for each new window's
 * external memory, so fewer windows load faster (Q8_0, 6.9 GiB: 7 full collections at 1 GiB windows, loadCheckpoint
 * 218–233 ms; 3 at 3 GiB, 177–203 ms); under 4 GiB, so that every view's offset and length fit a typed array's.
 */
const MAP_WINDOW = 3 * 2 ** 30;
/** The kernel's dtype enum (native/src/kernels.h). */
const DTYPE_CODES: Record<DType, number> = { f32: 0, bf16: 1, f16: 2, q8_0: 3, q4_0: 4, q4_k: 5, q5_k: 6, q6_k: 7 };
/**
 * q4_0, q4_k and q6_k repacked 16 rows to a vector (native/src/packed.h): a second copy of a weight that only matmul
 * and experts read; the rows' block size (elements).
 */
const PACKED: Partial<Record<DType, { code: number; block: number }>> = { q4_0: { code: 8, block: 32 }, q4_k: { code: 9, block: 256 }, q6_k: { code: 10, block: 256 } };

/** What a matrix product reads for a weight: its bytes and their dtype code. */
interface ProductWeight {
  readonly data: Float32Array | Uint16Array | Uint8Array;
  readonly code: number;
}

/** What experts() reads for a list of matrices: their bytes (kept alive here), the kernel's table of them, one code. */
interface ProductList {
  readonly data: ProductWeight['data'][];
  readonly table: ArrayBuffer;
  readonly code: number;
}

/**
 * The ops this backend runs in TypeScript, and why: each an explicit choice (ARCHITECTURE.md: never a silent
 * fallback). Data movement (rows, concatRows, write, fill) is a typed-array copy in either language.
 */
export const NATIVE_EXCEPTIONS: ReadonlyMap<string, string> = new Map([
  ['clamp', 'reference: clip_qkv is null in every OLMoE config (and training refuses it); an element-wise clamp'],
  ['experts (mixed weight dtypes)', 'reference: gate/up of two dtypes, or a float down beside quantized gate/up, or (scalar level) any other down dtype; the kernel takes a second dtype only for quantized downs on integer dot products (Q4_K_M)'],
  ['experts (expert choice, non-f32 weights)', 'reference: the quantized/bf16 kernel takes K experts per token'],
  ['expertsForward/expertsBackward (non-f32 weights)', 'reference: training weights are float32'],
  ['dropout', "reference: an element-wise mask on a LoRA adapter's input (O(T·D), small beside the matrix products)"],
])

export interface NativeOptions {
  /** Worker threads including the caller; default: $OLMOE_THREADS, else every core. */
  threads?: number;
  /** false: read weights into memory instead of mapping the files. */
  mmap?: boolean;
  /** Bytes of a file one mapped buffer covers (default 1 GiB; tests use small windows so tensors cross them). */
  mapWindow?: number;
  /** Weights of fewer bytes are read instead of mapped (default 1 MiB, see `weight`; tests map small ones too). */
  minMapped?: number;
  /**
   * Repack q4_0, q4_k and q6_k matrices 16 rows to a vector for the kernels (native/src/packed.h). Default: where the CPU
   * has those kernels (AVX-512 VNNI or AVX2, without AMX; OLMOE_PACK=0 declines); true elsewhere runs their portable twin
   * (tests). Never at the scalar level.
   */
  pack?: boolean;
  /** false: no step plans (recordStep records nothing, every decode step runs the model's code). Default: $OLMOE_STEP_PLANS !== '0'. */
  stepPlans?: boolean;
  /**
   * Bytes of released KV caches' faulted-in storage kept for later caches (kv-pool.ts; default KV_POOL_BYTES, 0 frees
   * it at once).
   */
  kvPoolBytes?: number;
}

/** NativeOptions.kvPoolBytes' default: 8 streams of ~1,000 positions of OLMoE-1B-7B's f16 cache (128 KiB a position). */
export const KV_POOL_BYTES = 2 ** 30;

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

/** What recordStep gathers while its pass runs. */
interface Recording {
  /** Every typed array and ArrayBuffer a recorded addon call was given: weights, activations, the cache, routing. */
  readonly arrays: Set<unknown>;
  /** What ran that a plan cannot repeat, if anything did. */
  refused: string | undefined;
  /** The embedding's rows, the plan's input, and the table they came from. */
  input: { values: Float32Array; table: Tensor } | undefined;
}

interface NativeStepPlan extends StepPlan {
  readonly handle: unknown;
  readonly start: number;
  readonly cache: RefKVCache;
  readonly generation: number;
  readonly input: Float32Array;
  readonly table: Tensor;
  readonly output: Float32Array;
  readonly shape: readonly number[];
  /** What the plan's native steps read and write, alive as long as it. */
  readonly retained: ReadonlySet<unknown>;
}

/** Addon calls a plan records (native/src/step-plan.h), and those that leave it nothing to repeat (file rows, cache pages, facts). */
const RECORDED = new Set(['matmul', 'matmuls', 'experts', 'attention', 'kvStore', 'rmsnorm', 'add', 'ropeRotate', 'routerForward']);
const UNRECORDED = new Set(['planKinds', 'embedRows', 'firstNonFinite', 'populate', 'releasePages', 'simdLevel', 'streamPrefetch', 'packedType', 'packWeight', 'weightTable', 'threads', 'quantGemmKernel', 'allocate', 'resize', 'release', 'mapTensor']);

/** The addon, noting the arrays each recorded call is given and any call a plan would not repeat. */
function recordingAddon(addon: NativeAddon, recording: Recording): NativeAddon {
  const keep = (value: unknown): void => {
    if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) recording.arrays.add(value);
    else if (Array.isArray(value)) value.forEach(keep);
  };
  return new Proxy(addon, {
    get(target, name) {
      const value: unknown = Reflect.get(target, name);
      if (typeof value !== 'function' || typeof name !== 'string') return value;
      return (...args: unknown[]) => {
        if (RECORDED.has(name)) args.forEach(keep);
        else if (!UNRECORDED.has(name)) recording.refused ??= `addon.${name}`;
        return value.apply(target, args);
      };
    },
  });
}

/** The reference backend, noting any op it computes (a plan would not repeat it) except reads and the embedding's widening. */
function refusingReference(ref: ReferenceBackend, recording: Recording): ReferenceBackend {
  return new Proxy(ref, {
    get(target, name) {
      const value: unknown = Reflect.get(target, name);
      if (typeof value !== 'function') return value;
      if (name === 'toFloat32' || name === 'embedding') return value.bind(target);
      return (...args: unknown[]) => {
        recording.refused ??= `reference ${String(name)}`;
        return value.apply(target, args);
      };
    },
  });
}

export class NativeBackend implements TrainingBackend {
  readonly name = 'native';
  readonly precision = 'f32';
  /** Runs the cases NATIVE_EXCEPTIONS lists (and nothing else). */
  private ref = new ReferenceBackend();
  private bf16 = false;
  private readonly mappings = new Map<string, WeakRef<ArrayBuffer>>();
  /** stat of the files mapped in the current synchronous run of work (cleared when it ends: see fileStat). */
  private readonly stats = new Map<string, Stats>();
  /** q4_0 / q4_k / q6_k weights repacked for the kernels (PACKED), where this CPU has the kernels for them. */
  private readonly packed = new WeakMap<RefTensor, Uint8Array>();
  /** The file bytes of the weight packed last (productWeight). */
  private lastPacked: Uint8Array | undefined;
  /** Weights a product has read (productWeight), a tied head's embedding table among them. */
  private readonly products = new WeakSet<RefTensor>();
  /** What experts() reads for a layer's list of matrices: resolved once per list, not per matrix and call. */
  private readonly productLists = new WeakMap<readonly Tensor[], ProductList>();
  /** experts()' dtype checks of a layer's weights (expertKinds). */
  private readonly expertKindsOf = new WeakMap<ExpertWeights, { mixedGateUp: boolean; nativeDown: boolean }>();
  private readonly packing: boolean;
  /** Whether recordStep makes plans (NativeOptions.stepPlans). */
  stepPlans: boolean;
  /** The step being recorded (recordStep), else undefined. */
  private recording: Recording | undefined;
  /** Per plan, its steps' kinds and accumulated seconds and bytes, while profileSteps is on. */
  private profiles: { tokens: number; plans: Map<NativeStepPlan, { kinds: string[]; values: Float64Array; runs: number }> } | undefined;
  /** Released KV caches' storage, for the next caches. */
  private readonly kvPool: KVStoragePool;

  constructor(
    private addon: NativeAddon,
    private readonly options: NativeOptions = {},
  ) {
    checkSimdEnv(addon);
    this.packing = (options.pack ?? addon.packedType(DTYPE_CODES.q4_0) !== DTYPE_CODES.q4_0) && addon.simdLevel() !== 'scalar';
    this.stepPlans = options.stepPlans ?? process.env.OLMOE_STEP_PLANS !== '0';
    this.kvPool = new KVStoragePool(options.kvPoolBytes ?? KV_POOL_BYTES, (buffer) => this.addon.release(buffer));
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

  /**
   * Whether decode's kernels prefetch their weight streams in software: on by default, off on AMD family 19h with
   * AVX-512 (Zen 4), where the prefetches slowed them (native/src/simd.h); OLMOE_PREFETCH=0 or 1 forces it.
   */
  get streamPrefetch(): boolean {
    return this.addon.streamPrefetch();
  }

  /**
   * How products of many tokens (prefill) with weights of `dtype` run at this SIMD level: 'amx-int8' (AMX tiles,
   * quantized weights; OLMOE_AMX=0 declines), 'avx512-vnni-16rows' (q4_0/q4_k/q6_k repacked 16 rows to a vector at load,
   * OLMOE_PACK=0 declines; q8_0 laid out that way per call, 16 rows at a time), 'avx2-16rows' (the same packing on AVX2
   * without VNNI, q8_0 excepted), 'avx512-vnni' (q4_0 register tiles),
   * 'integer-dot' (the decode kernels) or 'float-tiles' (float weights, and quantized ones at the scalar level).
   */
  quantGemmKernel(dtype: DType): string {
    return this.addon.quantGemmKernel(DTYPE_CODES[dtype]);
  }

  get matmulPrecision(): MatmulPrecision {
    return this.bf16 ? 'bf16' : 'fp32';
  }

  /** bf16: the training GEMM rounds both operands of every product to bf16 and sums in float32 (train-gemm.h). */
  setMatmulPrecision(precision: MatmulPrecision): void {
    this.bf16 = precision === 'bf16';
    this.ref.setMatmulPrecision(precision);
  }

  /** How bf16 products run at this SIMD level: 'amx-bf16' (AMX tiles), 'avx512-bf16' (vdpbf16ps) or 'fp32-fma' (rounded operands). */
  get bf16Kernel(): string {
    return this.addon.trainGemmBf16Kernel();
  }

  /** Read bandwidth and FP32 peak of this machine with this backend's threads (machine.ts; takes a few seconds). */
  measureMachine(): MachineLimits {
    return measureMachine(this.addon);
  }

  /** Read bytes/s now (machine.ts `sampleReadBandwidth`; `keep` leaves its 2 GiB buffer mapped for the next sample). */
  sampleReadBandwidth(keep: boolean): number {
    return sampleReadBandwidth(this.addon, keep);
  }

  /** Every op of the interface and who computes it here. */
  implementations(): OpImplementations {
    const ops = new Map<string, string>();
    for (const name of OP_NAMES) ops.set(name, NATIVE_EXCEPTIONS.get(name) ?? (HOST_COPIES.has(name) ? 'host copy' : 'native'));
    for (const [name, why] of NATIVE_EXCEPTIONS) ops.set(name, why);
    return ops;
  }

  // ---------------------------------------------------------------- storage
  /**
   * Map the tensor's bytes from its file when it has one (and they are aligned for the dtype), else read them. Small
   * ones (norms, routers) are read: every pass reads them, and a mapped one keeps the kernel's fault-around window
   * and large page-cache folios around it resident (Q4_0 OLMoE-1B-7B: ~37 MiB of file pages for 8 MiB of routers).
   */
  async weight(source: WeightSource): Promise<Tensor> {
    const needed = byteSize(source.dtype, source.shape);
    if (needed !== source.byteLength) {
      throw new OlmoeError('input', `weight ${source.name} of shape [${source.shape}] ${source.dtype} needs ${needed} bytes, got ${source.byteLength}`);
    }
    const elementBytes = isQuantized(source.dtype) ? 1 : byteSize(source.dtype, [1]);
    const mappable = this.options.mmap !== false && source.file !== undefined && source.offset! % elementBytes === 0 && needed > 0 && needed >= (this.options.minMapped ?? MIN_MAPPED_BYTES);
    const storage: Storage = mappable ? this.mapped(source) : storageFor(source.dtype, await source.read());
    const tensor = new RefTensor(source.dtype, source.shape, storage);
    // Matrices are repacked now, while loading (an embedding table only if a product uses it: a tied head).
    if (!/embed_tokens|token_embd/.test(source.name)) this.productWeight(tensor);
    return tensor;
  }

  /**
   * The bytes and dtype code matmul and experts read for a weight: a q4_0, q4_k or q6_k matrix of whole 16-row groups
   * in the packed layout, repacked on first use (the same bytes; the file's pages of it are then unmapped, so resident
   * memory stays near the file's size), else its own bytes.
   */
  private productWeight(t: RefTensor): ProductWeight {
    this.products.add(t);
    const data = weightData(t);
    const packing = this.packing && t.shape.length === 2 && t.rows % 16 === 0 ? PACKED[t.dtype as DType] : undefined;
    if (!packing || t.cols % packing.block !== 0) return { data, code: DTYPE_CODES[weightDtype(t)] };
    let packed = this.packed.get(t);
    if (!packed) {
      packed = this.addon.packWeight(DTYPE_CODES[t.dtype as DType], data as Uint8Array, t.rows, t.cols);
      this.packed.set(t, packed);
      const bytes = data as Uint8Array, last = this.lastPacked;
      // With the weight packed before it when the file puts them side by side: their shared page goes too (one per
      // expert matrix, 12 MiB over OLMoE-1B-7B's 3,072), and the one before's pages this one's reads mapped again.
      const adjacent = last !== undefined && last.buffer === bytes.buffer && last.byteOffset + last.byteLength === bytes.byteOffset;
      this.addon.releasePages(adjacent ? new Uint8Array(bytes.buffer, last.byteOffset, last.byteLength + bytes.byteLength) : bytes);
      this.lastPacked = bytes;
    }
    return { data: packed, code: packing.code };
  }

  /**
   * productWeight over one list of an experts call, with the table of addresses the kernel takes. Every matrix of
   * a list has its first's dtype and shape (mixed ones go to the reference), so one code serves the list.
   */
  private productList(list: readonly Tensor[]): ProductList {
    let found = this.productLists.get(list);
    if (!found) {
      const weights = list.map((t) => this.productWeight(asRef(t)));
      const data = weights.map((w) => w.data);
      found = { data, table: this.addon.weightTable(data), code: weights[0]!.code };
      this.productLists.set(list, found);
    }
    return found;
  }

  /**
   * The tensor as a view of its file's mapping, one ArrayBuffer per window of the file (MAP_WINDOW; the mapping lives
   * while any view does); a tensor crossing a window's end gets its own buffer. One external buffer per tensor made V8
   * count each as new external memory and collect garbage again and again (a 6.9 GiB Q8_0 file took 0.5 s to load,
   * ~0.4 s of it there); one buffer per file cannot hold files over 4 GiB (typed arrays' limit on Node 20).
   */
  private mapped(source: WeightSource): Storage {
    const file = source.file!;
    const [offset, length] = [source.offset!, source.byteLength];
    let buffer: ArrayBuffer, at: number;
    try {
      [buffer, at] = this.mapping(file, offset, length);
    } catch (error) {
      throw new OlmoeError('format', `${file}: cannot map tensor ${source.name}: ${(error as Error).message}`, { cause: error });
    }
    if (isQuantized(source.dtype)) return new Uint8Array(buffer, at, length);
    return source.dtype === 'f32' ? new Float32Array(buffer, at, length / 4) : new Uint16Array(buffer, at, length / 2);
  }

  /** [buffer, offset of the bytes in it]: the window holding [offset, offset + length) of the file, or their own. */
  private mapping(file: string, offset: number, length: number): [ArrayBuffer, number] {
    const info = this.fileStat(file);
    const size = this.options.mapWindow ?? MAP_WINDOW;
    const window = Math.floor(offset / size);
    const start = window * size, end = Math.min(info.size, start + size);
    if (offset + length > end) return [this.addon.mapTensor(file, offset, length), 0]; // crosses the window's end, or past the file's (the addon says so)
    const key = `${file}\0${info.dev}:${info.ino}:${info.size}:${info.mtimeMs}:${window}`; // a replaced file maps anew
    let buffer = this.mappings.get(key)?.deref();
    if (!buffer) {
      for (const [old, ref] of this.mappings) if (!ref.deref()) this.mappings.delete(old); // windows of unloaded models
      buffer = this.addon.mapTensor(file, start, end - start);
      this.mappings.set(key, new WeakRef(buffer));
    }
    return [buffer, offset - start];
  }

  /**
   * statSync(file), shared by the tensors a load maps in one go (one stat per tensor was ~20 ms of loading a
   * 300-tensor GGUF) and forgotten once that synchronous run ends, so that a file replaced later maps anew.
   */
  private fileStat(file: string): Stats {
    let info = this.stats.get(file);
    if (!info) {
      if (this.stats.size === 0) queueMicrotask(() => this.stats.clear());
      info = statSync(file);
      this.stats.set(file, info);
    }
    return info;
  }

  fromFloat32(data: Float32Array, shape: readonly number[]): Tensor {
    return activation(data, shape);
  }

  toFloat32(x: Tensor): Float32Array {
    if (asRef(x).unwritten) train.materialize(x); // an accumulator no op wrote counts as zeros
    return this.ref.toFloat32(x);
  }

  /** Backend.firstNonFinite: the addon's scan. */
  firstNonFinite(x: Tensor): number {
    return this.addon.firstNonFinite(this.toFloat32(x));
  }

  zeros(shape: readonly number[]): Tensor {
    return activation(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
  }

  /** The pass's small activations are reused by the next one (training.ts `scoped`: decode's ~260 per token). */
  scoped(pass: () => Tensor): Tensor {
    return train.scoped(pass, (result) => f32(result).buffer);
  }

  release(x: Tensor): void {
    train.recycle(f32(x));
  }

  retire(...tensors: Tensor[]): void {
    if (this.recording) return; // a recorded step keeps each op's storage: its plan writes them all again
    train.retire(tensors.map((t) => asRef(t)).filter((t) => t.dtype === 'f32').map((t) => t.data as Float32Array));
  }

  /** Left unfilled: the backward op that first receives it writes it (core/training.ts). */
  empty(shape: readonly number[]): Tensor {
    const tensor = activation(train.uninitialized(shape.reduce((a, b) => a * b, 1)), shape);
    tensor.unwritten = true;
    return tensor;
  }

  write(x: Tensor, values: Float32Array | Float64Array): void {
    const data = f32(x);
    checkShapes('write', data.length === values.length, () => `${values.length} values into ${showShape(x)}`);
    data.set(values);
    asRef(x).unwritten = false;
  }

  fill(x: Tensor, value: number): void {
    f32(x).fill(value);
    asRef(x).unwritten = false;
  }

  /** The reference backend's cache layout on the addon's memory (its own pages from 1 MiB on), rows rounded to its type by the addon (bit-identical). */
  createKVCache(opts: KVCacheOptions): RefKVCache {
    const refused = (bytes: number, error: unknown) => {
      const positions = bytes / kvRowBytes(opts.dtype ?? DEFAULT_KV_CACHE_TYPE, opts.kvHeads * opts.headDim);
      return new ResourceError(`a KV cache of ${positions} positions × ${opts.layers} layers`, 2 * opts.layers * bytes, error);
    };
    const allocate = (bytes: number) => {
      const pooled = this.kvPool.take(bytes);
      if (pooled) return pooled;
      try {
        return new Uint8Array(this.addon.allocate(bytes));
      } catch (error) {
        throw refused(bytes, error);
      }
    };
    const encode: KVEncoder = (type, rows, width, out) => this.addon.kvStore(rows instanceof Float32Array ? rows : Float32Array.from(rows), rows.length / width, width, DTYPE_CODES[type], out);
    const resize = (storage: Uint8Array, bytes: number) => {
      if (storage.buffer.byteLength >= bytes) return new Uint8Array(storage.buffer, 0, bytes); // pooled storage that holds it already (stale rows: written before read)
      let grown: ArrayBuffer | null;
      try {
        grown = this.addon.resize(storage.buffer as ArrayBuffer, bytes);
      } catch (error) {
        throw refused(bytes, error);
      }
      if (grown) return new Uint8Array(grown);
      const next = allocate(bytes); // (not the addon's: cannot happen for storage from allocate above)
      next.set(storage);
      return next;
    };
    const release = (storage: Uint8Array) => this.addon.release(storage.buffer as ArrayBuffer);
    const recycle = (storage: Uint8Array, faulted: number) => this.kvPool.put(storage, faulted);
    return new RefKVCache(opts, { allocate, encode, populate: (bytes) => this.addon.populate(bytes), release, recycle, resize });
  }

  // ---------------------------------------------------------------- step plans
  /**
   * One decode step run and recorded (Backend.recordStep): the addon keeps each op's resolved arguments
   * (native/src/step-plan.h) while this backend notes every array they touch, which the plan then owns (out of the
   * pass's reuse, alive as long as it). No plan where the pass ran work a plan cannot repeat: an op in TypeScript other
   * than the embedding's row widening (which replayStep does again), an addon call that records nothing, or a second
   * embedding.
   */
  recordStep(step: { readonly cache: KVCache; readonly start: number }, pass: () => Tensor): { result: Tensor; plan?: StepPlan } {
    if (!this.stepPlans || this.recording || !(step.cache instanceof RefKVCache)) return { result: pass() };
    const recording: Recording = { arrays: new Set(), refused: undefined, input: undefined };
    const [addon, ref] = [this.addon, this.ref];
    this.addon = recordingAddon(addon, recording);
    this.ref = refusingReference(ref, recording);
    this.recording = recording;
    addon.planBegin();
    let result: Tensor;
    let handle: unknown;
    try {
      result = pass();
    } finally {
      handle = addon.planEnd();
      [this.addon, this.ref, this.recording] = [addon, ref, undefined];
    }
    const output = f32(result);
    if (recording.refused !== undefined || !recording.input || !recording.arrays.has(output)) return { result };
    train.claim(recording.arrays);
    const plan: NativeStepPlan = {
      backend: this.name, handle, start: step.start, cache: step.cache, generation: step.cache.generation,
      input: recording.input.values, table: recording.input.table, output, shape: result.shape, retained: recording.arrays,
    };
    return { result: this.copyOf(output, result.shape), plan };
  }

  /** A recorded step again (Backend.replayStep): the embedding here, then the plan's native work, `start − recorded` positions on. */
  replayStep(plan: StepPlan, ids: Int32Array, start: number, cache: KVCache): Tensor | null {
    const recorded = plan as NativeStepPlan;
    if (!this.stepPlans || recorded.backend !== this.name || recorded.cache !== cache || ids.length !== 1) return null;
    recorded.cache.prepare(start, 1);
    if (recorded.cache.generation !== recorded.generation) return null;
    recorded.input.set(f32(this.embedding(recorded.table, ids)));
    if (this.profiles) {
      let profile = this.profiles.plans.get(recorded);
      if (!profile) {
        const kinds = this.addon.planKinds(recorded.handle);
        profile = { kinds, values: new Float64Array(2 * kinds.length), runs: 0 };
        this.profiles.plans.set(recorded, profile);
      }
      this.addon.planRun(recorded.handle, start - recorded.start, profile.values);
      profile.runs++;
      this.profiles.tokens++;
    } else {
      this.addon.planRun(recorded.handle, start - recorded.start);
    }
    return this.copyOf(recorded.output, recorded.shape);
  }

  /** Backend.profileSteps: every native op of the replayed steps timed, at two clock reads an op (~270 a token for OLMoE-1B-7B). */
  profileSteps(on: boolean): void {
    this.profiles = on ? { tokens: 0, plans: new Map() } : undefined;
  }

  /** Backend.readStepProfile: the ops' kinds as planKinds names them (native/src/step-plan.h). */
  readStepProfile(): StepProfile | null {
    if (!this.profiles) return null;
    const ops = new Map<string, { kind: string; calls: number; seconds: number; bytes: number }>();
    for (const { kinds, values, runs } of this.profiles.plans.values()) {
      kinds.forEach((kind, i) => {
        const op = ops.get(kind) ?? { kind, calls: 0, seconds: 0, bytes: 0 };
        ops.set(kind, op);
        op.seconds += values[2 * i]!;
        op.bytes += values[2 * i + 1]!;
        op.calls += runs;
      });
    }
    return { tokens: this.profiles.tokens, ops: [...ops.values()] };
  }

  private copyOf(values: Float32Array, shape: readonly number[]): Tensor {
    const out = train.uninitialized(values.length);
    out.set(values);
    return activation(out, shape);
  }

  // ---------------------------------------------------------------- forward
  embedding(table: Tensor, ids: Int32Array): Tensor {
    const rows = this.embeddingRows(table, ids);
    if (this.recording) {
      if (this.recording.input) this.recording.refused = 'a second embedding';
      this.recording.input = { values: f32(rows), table };
    }
    return rows;
  }

  private embeddingRows(table: Tensor, ids: Int32Array): Tensor {
    const weight = asRef(table);
    if (this.products.has(weight)) return this.ref.embedding(table, ids); // a tied head's table: a product reads it whole every pass
    const data = weightData(weight);
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (ids.length <= FEW_ROWS && weight.dtype !== 'f64') {
      // A few rows (decode) read from a mapped table's file and widened, in one addon call (a row read, a typed array and
      // the reference's widening here took ~100 µs of a decode token): no page of the mapping is touched, so none
      // stays resident or is unmapped afterwards (a one-page madvise took ~60 µs here, the fault that mapped it again
      // ~90). An id outside the table makes embedRows answer false, and the gather below throws the error that names it.
      const rows = train.uninitialized(ids.length * weight.cols);
      if (this.addon.embedRows(bytes, bytes.byteLength / weight.rows, DTYPE_CODES[weight.dtype], ids, rows)) return activation(rows, [ids.length, weight.cols]);
      train.recycle(rows);
    }
    const rows = this.ref.embedding(table, ids); // a row gather: widening copies (listed as a host copy)
    // A table mapped from its file is then unmapped (the bytes stay readable, from the page cache), so that resident
    // memory keeps no more than the rows of one gather, not every page a prompt's tokens touched (~55 MiB of a
    // Q4_0 OLMoE-1B-7B's table after a 512-token prompt).
    this.addon.releasePages(bytes);
    return rows;
  }

  matmul(x: Tensor, w: Tensor): RefTensor {
    const weight = asRef(w);
    const [outDim, inDim] = [weight.rows, weight.cols];
    checkShapes('matmul', asRef(x).cols === inDim, () => `x ${showShape(x)} does not match weight ${showShape(w)}`);
    const input = f32(x);
    const tokens = input.length / inDim;
    const out = train.uninitialized(tokens * outDim);
    // Float32 weights and many tokens (training, prefill): the packed-panel GEMM, faster there than the inference
    // kernel (built for few tokens and stored dtypes), once the tokens amortize packing the weight. bf16 products: always
    // (the inference kernel has no bf16 rounding of its operands).
    if (weight.dtype === 'f32' && (this.bf16 || packedGemmPays(tokens, inDim * outDim))) this.addon.gemm(false, true, tokens, outDim, inDim, input, weight.data as Float32Array, out, false, this.bf16);
    else {
      const { data, code } = this.productWeight(weight);
      this.addon.matmul(input, tokens, inDim, data, code, outDim, out);
    }
    return activation(out, [tokens, outDim]);
  }

  /**
   * matmul by several weights: up to 8 in one addon call (the input quantized or transposed once per set of dtypes
   * that share it, every set's rows one job of the pool: Q4_K_M's Q4_K q and k beside a Q6_K v are one job); float32
   * ones one matmul each (their packed-panel GEMM).
   */
  matmuls(x: Tensor, weights: readonly Tensor[]): RefTensor[] {
    const input = f32(x);
    const inDim = asRef(x).cols;
    const tokens = input.length / inDim;
    const results: RefTensor[] = [];
    const stored: { index: number; weight: RefTensor; data: ProductWeight['data']; code: number }[] = [];
    weights.forEach((w, index) => {
      const weight = asRef(w);
      if (weight.dtype === 'f32' || weight.cols !== inDim) return (results[index] = this.matmul(x, weight)); // (its GEMM; its shape error)
      stored.push({ index, weight, ...this.productWeight(weight) });
    });
    for (let at = 0; at < stored.length; at += 8) { // the addon takes up to 8
      const part = stored.slice(at, at + 8);
      const outs = part.map(({ weight }) => train.uninitialized(tokens * weight.rows));
      this.addon.matmuls(input, tokens, inDim, part.map(({ code }) => code), part.map(({ data }) => data), outs);
      part.forEach(({ index, weight }, i) => (results[index] = activation(outs[i]!, [tokens, weight.rows])));
    }
    return results;
  }

  /** Gains of any dtype: widened once per call (a few KB) for the float32 kernel. */
  rmsnorm(x: Tensor, weight: Tensor, eps: number): RefTensor {
    const gain = asRef(weight);
    const input = asRef(x);
    checkShapes('rmsnorm', input.cols === gain.cols, () => `x ${showShape(x)} does not match weight ${showShape(weight)}`);
    const out = train.uninitialized(sizeOf(input));
    this.addon.rmsnorm(f32(x), input.rows, input.cols, this.toFloat32(gain), eps, out);
    return activation(out, input.shape);
  }

  rope(x: Tensor, positions: Int32Array, opts: RopeOptions): RefTensor {
    const out = train.uninitialized(sizeOf(x));
    train.rope(this.addon, x, positions, opts, out, false, false);
    return activation(out, asRef(x).shape);
  }

  clamp(x: Tensor, limit: number): Tensor {
    return this.ref.clamp(x, limit);
  }

  add(a: Tensor, b: Tensor): RefTensor {
    const [left, right] = [f32(a), f32(b)];
    checkShapes('add', left.length === right.length, () => `${showShape(a)} + ${showShape(b)}`);
    const out = train.uninitialized(left.length);
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
    const out = train.uninitialized(q.length);
    let row = 0;
    for (const s of args.sequences) {
      const own = { keys: k.subarray(row * kvWidth, (row + s.tokens) * kvWidth), values: v.subarray(row * kvWidth, (row + s.tokens) * kvWidth) };
      checkShapes('attention', s.cache instanceof RefKVCache || (!s.cache && s.start === 0), () => 'the KV cache was not made by this backend');
      const cache = s.cache as RefKVCache | undefined;
      cache?.store(args.layer, s.start, own);
      const [keys, values] = cache ? [cache.keys[args.layer]!, cache.values[args.layer]!] : [own.keys, own.values];
      const kvType = DTYPE_CODES[cache?.dtype ?? 'f32'];
      this.addon.attention(q.subarray(row * width, (row + s.tokens) * width), keys, values, kvType, s.tokens, s.start, heads, kvHeads, headDim, out.subarray(row * width, (row + s.tokens) * width));
      row += s.tokens;
    }
    return activation(out, [tokens, width]);
  }

  router(logits: Tensor, opts: RouterOptions): Routing {
    return train.router(this.addon, logits, opts);
  }

  experts(x: Tensor, weights: ExpertWeights, routing: Routing): Tensor {
    const input = asRef(x);
    checkShapes('experts', input.rows === routing.tokens, () => `x ${showShape(x)} but routing for ${routing.tokens} tokens`);
    const first = asRef(weights.gate[0]!);
    const { mixedGateUp, nativeDown } = this.expertKinds(weights);
    if ((routing.mode !== 'token_choice' || this.bf16) && train.float32Experts(weights)) return train.expertsForward(this.addon, x, weights, routing, this.bf16).out;
    if (mixedGateUp || !nativeDown || routing.mode !== 'token_choice') return this.ref.experts(x, weights, routing); // NATIVE_EXCEPTIONS
    const out = train.uninitialized(sizeOf(input));
    // gate and up share dtype and shape (mixed ones went to the reference), so the gates' code serves both.
    const [gates, ups, downs] = [this.productList(weights.gate), this.productList(weights.up), this.productList(weights.down)];
    this.addon.experts(f32(x), routing.tokens, input.cols, first.rows, routing.perGroup, gates.code,
      gates.table, ups.table, downs.table, routing.expertIds, f32(routing.weights), out, downs.code);
    return activation(out, input.shape);
  }

  /**
   * Whether a layer's experts mix dtypes among their gates and ups or among their downs (the reference takes those),
   * and whether the kernel reads their downs: Q4_K_M keeps some layers' down projections in Q6_K, which the kernel
   * takes as a second dtype when both types run on integer dot products (quantized, SIMD level above scalar).
   * Worked out once per weights object: scanning 192 tensors on every call cost ~9 µs of JS per layer and token.
   */
  private expertKinds(weights: ExpertWeights): { mixedGateUp: boolean; nativeDown: boolean } {
    let kinds = this.expertKindsOf.get(weights);
    if (!kinds) {
      const [first, down] = [asRef(weights.gate[0]!), asRef(weights.down[0]!)];
      const mixedGateUp = [...weights.gate, ...weights.up].some((t) => t.dtype !== first.dtype) || weights.down.some((t) => t.dtype !== down.dtype);
      const nativeDown = down.dtype === first.dtype || (isQuantized(weightDtype(first)) && isQuantized(weightDtype(down)) && this.addon.simdLevel() !== 'scalar');
      kinds = { mixedGateUp, nativeDown };
      this.expertKindsOf.set(weights, kinds);
    }
    return kinds;
  }

  // ---------------------------------------------------------------- losses
  crossEntropy(logits: Tensor, targets: Int32Array): Tensor {
    return train.crossEntropyForward(this.addon, logits, targets).out;
  }

  weightedCrossEntropy(logits: Tensor, targets: Int32Array, weightsOf: TokenWeights): Tensor {
    const { out, saved } = train.weightedCrossEntropyForward(this.addon, logits, targets, weightsOf);
    train.recycle((saved as unknown as { lse: Float32Array }).lse); // no backward will read it
    return out;
  }

  loadBalancingLoss(probs: Tensor, counts: Float64Array, scale: number): Tensor {
    return train.loadBalancingLoss(this.addon, probs, counts, scale);
  }

  routerZLoss(logits: Tensor, scale: number): Tensor {
    return train.routerZLoss(this.addon, logits, scale);
  }

  scale(x: Tensor, factor: number): Tensor {
    const out = this.zeros(x.shape);
    this.addon.axpy(factor, f32(x), f32(out));
    return out;
  }

  dropout(x: Tensor, keep: Uint8Array, p: number): Tensor {
    return this.ref.dropout(x, keep, p); // NATIVE_EXCEPTIONS
  }

  // ---------------------------------------------------------------- training forward and backward
  attentionForward(args: AttentionArgs): { out: Tensor; saved: SavedState } {
    return train.attentionForward(this.addon, args);
  }

  expertsForward(x: Tensor, weights: ExpertWeights, routing: Routing): { out: Tensor; saved: SavedState } {
    if (!train.float32Experts(weights)) return this.ref.expertsForward(x, weights, routing); // NATIVE_EXCEPTIONS
    return train.expertsForward(this.addon, x, weights, routing, this.bf16);
  }

  crossEntropyForward(logits: Tensor, targets: Int32Array): { out: Tensor; saved: SavedState } {
    return train.crossEntropyForward(this.addon, logits, targets);
  }

  weightedCrossEntropyForward(logits: Tensor, targets: Int32Array, weightsOf: TokenWeights): { out: Tensor; saved: SavedState } {
    return train.weightedCrossEntropyForward(this.addon, logits, targets, weightsOf);
  }

  accumulate(target: Tensor, source: Tensor, factor = 1): void {
    checkShapes('accumulate', sizeOf(target) === sizeOf(source), () => `${showShape(target)} += ${showShape(source)}`);
    this.addon.axpy(factor, f32(source), f32(target), train.takeFresh(target));
  }

  accumulateRows(target: Tensor, start: number, source: Tensor): void {
    const width = asRef(target).cols;
    checkShapes('accumulateRows', asRef(source).cols === width && start >= 0 && (start + asRef(source).rows) * width <= sizeOf(target), () => `rows from ${start} of ${showShape(target)} += ${showShape(source)}`);
    this.addon.axpy(1, f32(source), train.materialize(target).subarray(start * width, start * width + sizeOf(source)));
  }

  embeddingBackward(ids: Int32Array, dOut: Tensor, dTable: Tensor): void {
    const table = asRef(dTable);
    this.addon.embeddingBackward(ids, f32(dOut), table.cols, train.materialize(dTable), table.rows);
  }

  /** dx += dOut · w and dw += dOutᵀ · x, both products in one batch of the training GEMM (native/src/train-gemm.cc). */
  matmulBackward(args: { x: Tensor; w: Tensor; dOut: Tensor; dx: Tensor | null; dw: Tensor | null }): void {
    const weight = asRef(args.w);
    const [outDim, inDim] = [weight.rows, weight.cols];
    const dy = f32(args.dOut);
    this.addon.matmulBackward(f32(args.x), f32(args.w), dy, dy.length / outDim, inDim, outDim, args.dx ? f32(args.dx) : null, args.dw ? train.materialize(args.dw) : null, train.takeFresh(args.dx), this.bf16);
  }

  rmsnormBackward(args: { x: Tensor; weight: Tensor; eps: number; dOut: Tensor; dx: Tensor | null; dWeight: Tensor | null }): void {
    train.rmsnormBackward(this.addon, args);
  }

  ropeBackward(dOut: Tensor, positions: Int32Array, opts: RopeOptions, dx: Tensor): void {
    train.rope(this.addon, dOut, positions, opts, f32(dx), true, !train.takeFresh(dx));
  }

  attentionBackward(args: { args: AttentionArgs; saved: SavedState; out: Tensor; dOut: Tensor; dq: Tensor; dk: Tensor; dv: Tensor }): void {
    train.attentionBackward(this.addon, args);
  }

  routerBackward(args: { routing: Routing; opts: RouterOptions; dProbs: Tensor | null; dWeights: Tensor | null; dLogits: Tensor }): void {
    train.routerBackward(this.addon, args);
  }

  expertsBackward(args: { x: Tensor; weights: ExpertWeights; routing: Routing; saved: SavedState; dOut: Tensor; dx: Tensor | null; dRoutingWeights: Tensor | null; dWeights: ExpertWeights | null }): void {
    if (!('order' in args.saved)) return this.ref.expertsBackward(args); // NATIVE_EXCEPTIONS: kept by the reference forward
    train.expertsBackward(this.addon, args, this.bf16);
  }

  crossEntropyBackward(args: { logits: Tensor; targets: Int32Array; saved: SavedState; dLoss: Tensor; dLogits: Tensor }): void {
    train.crossEntropyBackward(this.addon, args);
  }

  weightedCrossEntropyBackward(args: { logits: Tensor; targets: Int32Array; saved: SavedState; dLoss: Tensor; dLogits: Tensor }): void {
    train.weightedCrossEntropyBackward(this.addon, args);
  }

  loadBalancingBackward(args: { probs: Tensor; counts: Float64Array; scale: number; dLoss: Tensor; dProbs: Tensor }): void {
    train.loadBalancingBackward(this.addon, args);
  }

  routerZBackward(args: { logits: Tensor; scale: number; dLoss: Tensor; dLogits: Tensor }): void {
    train.routerZBackward(this.addon, args);
  }

  sumOfSquares(xs: readonly Tensor[]): number {
    return this.addon.sumOfSquares(xs.map(f32));
  }

  adamw(params: readonly AdamWTensors[], step: AdamWStep): void {
    train.adamw(this.addon, params, step);
  }

  /** The bf16 kernel's instruction throughput (AMX or vdpbf16ps) on this backend's threads (GFLOP/s); undefined where bf16 products run as float32 FMAs. */
  bf16PeakGflops(repeats = 3): number | undefined {
    const flops = this.addon.measureBf16Peak(repeats);
    return flops > 0 ? flops / 1e9 : undefined;
  }

  /** The machine's FP32 FMA throughput on this backend's threads (GFLOP/s): the probe `olmoe bench` uses (measure.cc). */
  peakGflops(repeats = 3): number {
    return this.addon.measureFp32Peak(repeats) / 1e9;
  }
}

/**
 * Whether x [T, In] · w [Out, In]ᵀ with float32 weights runs faster on the packed-panel GEMM than on the inference
 * kernel. Measured (one thread, CPU time): 256→256 from 64 tokens (61 vs 112 µs), 256→4096 from 64, 2048→1024 only
 * from 256 (11.4 vs 12.6 ms; at 64 tokens 3.0 vs 2.1 ms); at 4096 tokens 6× faster.
 */
function packedGemmPays(tokens: number, weightSize: number): boolean {
  return tokens >= 256 || (tokens >= 64 && weightSize <= 1 << 20);
}

/** Every op of the training backend interface, for `implementations()`. */
const OP_NAMES = [
  'weight', 'fromFloat32', 'toFloat32', 'zeros', 'write', 'fill', 'createKVCache', 'embedding', 'matmul', 'matmuls', 'rmsnorm', 'rope', 'clamp', 'attention',
  'router', 'experts', 'add', 'rows', 'concatRows', 'crossEntropy', 'weightedCrossEntropy', 'loadBalancingLoss', 'routerZLoss', 'scale', 'dropout', 'attentionForward', 'expertsForward',
  'crossEntropyForward', 'weightedCrossEntropyForward', 'accumulate', 'accumulateRows', 'embeddingBackward', 'matmulBackward', 'rmsnormBackward', 'ropeBackward', 'attentionBackward',
  'routerBackward', 'expertsBackward', 'crossEntropyBackward', 'weightedCrossEntropyBackward', 'loadBalancingBackward', 'routerZBackward', 'sumOfSquares', 'adamw',
] as const;

const HOST_COPIES = new Set(['weight', 'fromFloat32', 'toFloat32', 'zeros', 'write', 'fill', 'createKVCache', 'embedding', 'rows', 'concatRows']);

/** Gathers of up to this many rows read them from a mapped table's file; larger ones through the mapping. */
const FEW_ROWS = 16;

function weightData(t: RefTensor): Float32Array | Uint16Array | Uint8Array {
  if (t.dtype === 'f64') throw new OlmoeError('unsupported', 'the native backend computes in float32; float64 tensors belong to the reference backend');
  return t.data as Float32Array | Uint16Array | Uint8Array;
}

function weightDtype(t: RefTensor): DType {
  if (t.dtype === 'f64') throw new OlmoeError('unsupported', 'the native backend computes in float32; float64 tensors belong to the reference backend');
  return t.dtype;
}
