/**
 * Conformance: every op of the Backend interface on every backend against the reference backend, for every
 * weight dtype. The reference widens (bf16, f16) weights exactly and computes in double. Quantized weights (q8_0,
 * q4_0, q4_k, q5_k, q6_k) multiply activations rounded to 8-bit blocks, as llama.cpp does: both backends round
 * identically and sum the blocks' integer products exactly (src/backends/reference/quant-matmul.ts, native/src/q8.h,
 * qdot.h), so one tolerance serves every dtype; it covers float32 accumulation (native) vs double (reference):
 *   |native − reference| ≤ 1e-5 · (1 + |reference|) · √(reduction length)
 * The expert layer rounds its hidden activations h = silu(gate)·up too; h differs between the backends by float
 * rounding, which now and then moves an h value across a rounding boundary: a whole code step (≈ max|h|/127) for
 * that value, and a visible change in its token's outputs. For quantized experts a few tokens may therefore
 * deviate, with the normalized squared error of all outputs still ≤ 1e-6 (a wrong kernel gives ≥ 1e-3).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadAddon } from '../src/backends/native/addon.js';
import type { Backend, KVCache, Tensor } from '../src/core/backend.js';
import { weightFromBytes } from '../src/core/backend.js';
import { DTYPE_BLOCKS, encodeFloats, isQuantized, type DType } from '../src/core/dtype.js';
import { createRng } from '../src/core/rng.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { loadModel } from '../src/model/load.js';
import { NativeBackend } from '../src/backends/native/index.js';
import { announceSkip, backendCases } from './backends.js';
import { assertChildRunPasses, tinyModelDir } from './helpers.js';

const nativeCase = backendCases.find((b) => b.name === 'native')!;

const DTYPES: DType[] = ['f32', 'bf16', 'f16', 'q8_0', 'q4_0', 'q4_k', 'q5_k', 'q6_k'];
/** Input widths must hold whole blocks: 32 values for q8_0/q4_0, 256 for the K-quants. */
const blockOf = (dtype: DType) => DTYPE_BLOCKS[dtype].elements;
const width = (dtype: DType, n: number) => Math.ceil(n / blockOf(dtype)) * blockOf(dtype);
const reference = new ReferenceBackend();

function randoms(seed: number, n: number, scale = 1): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: n }, () => (rng() * 2 - 1) * scale);
}

async function weightOn(backend: Backend, dtype: DType, shape: number[], seed: number): Promise<Tensor> {
  const values = randoms(seed, shape.reduce((a, b) => a * b, 1), 0.5);
  return backend.weight(weightFromBytes(`w${seed}`, dtype, shape, encodeFloats(dtype, values)));
}

function assertClose(actual: Float32Array, expected: Float32Array, reduction: number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  const scale = 1e-5 * Math.sqrt(reduction);
  for (let i = 0; i < actual.length; i++) {
    const error = Math.abs(actual[i]! - expected[i]!);
    if (!(error <= scale * (1 + Math.abs(expected[i]!)))) assert.fail(`${what}: element ${i}: ${actual[i]} vs ${expected[i]} (error ${error})`);
  }
}

/** Run `op` on a backend and on the reference with the same inputs; compare float32 outputs. */
/**
 * Quantized experts: every token within the tolerance of assertClose but a tenth of them (at least one), and
 * Σ(actual − expected)² ≤ 1e-6 · Σ expected² (see the header: code steps of rounded hidden activations).
 */
function assertCloseExceptRoundingSteps(actual: Float32Array, expected: Float32Array, tokens: number, reduction: number, what: string): void {
  const width = expected.length / tokens;
  const scale = 1e-5 * Math.sqrt(reduction);
  let [deviating, squaredError, squared] = [0, 0, 0];
  for (let t = 0; t < tokens; t++) {
    let close = true;
    for (let i = t * width; i < (t + 1) * width; i++) {
      const error = Math.abs(actual[i]! - expected[i]!);
      close &&= error <= scale * (1 + Math.abs(expected[i]!));
      squaredError += error ** 2;
      squared += expected[i]! ** 2;
    }
    if (!close) deviating++;
  }
  assert.ok(deviating <= Math.max(1, Math.floor(tokens / 10)), `${what}: ${deviating} of ${tokens} tokens outside the tolerance`);
  assert.ok(squaredError <= 1e-6 * squared, `${what}: normalized squared error ${squaredError / squared}`);
}

async function compare(backend: Backend, what: string, reduction: number, op: (b: Backend) => Promise<Tensor> | Tensor): Promise<void> {
  assertClose(backend.toFloat32(await op(backend)), reference.toFloat32(await op(reference)), reduction, what);
}

for (const target of backendCases.filter((b) => b.name !== 'reference')) {
  describe(`conformance: ${target.name} vs reference`, { skip: announceSkip(target.skip) }, () => {
    const backend = target.skip ? reference : target.create();
    const act = (b: Backend, seed: number, rows: number, cols: number) => b.fromFloat32(randoms(seed, rows * cols), [rows, cols]);

    for (const dtype of DTYPES) {
      it(`matmul, ${dtype} weights: decode (T=1), small and blocked prefill, ragged widths`, async () => {
        const shapes = [[1, 64, 40], [1, 70, 17], [3, 33, 9], [5, 128, 36], [7, 64, 21], [12, 96, 38], [37, 96, 70], [70, 200, 33], [1, 256, 600], [2, 256, 301]] as const;
        for (const [tokens, n, outDim] of shapes) {
          const inDim = width(dtype, n);
          await compare(backend, `matmul ${tokens}×${inDim}→${outDim}`, inDim, async (b) => b.matmul(act(b, 1, tokens, inDim), await weightOn(b, dtype, [outDim, inDim], 2)));
        }
      });

      it(`embedding and rmsnorm, ${dtype} weights`, async () => {
        const d = width(dtype, 24);
        await compare(backend, 'embedding', 1, async (b) => b.embedding(await weightOn(b, dtype, [50, d], 3), Int32Array.of(0, 49, 7, 7)));
        await compare(backend, 'rmsnorm', d, async (b) => b.rmsnorm(act(b, 4, 6, d), await weightOn(b, dtype, [d], 5), 1e-5));
      });

      it(`router and experts, ${dtype} weights: top-k of E, one token and many`, async () => {
        const [hidden, ffn, experts, topK] = [width(dtype, 48), width(dtype, 40), 6, 3];
        for (const tokens of [1, 2, 9, 40]) {
          for (const normTopKProb of [false, true]) {
            const run = async (b: Backend) => {
              const x = act(b, 6 + tokens, tokens, hidden);
              const gate = await weightOn(b, dtype, [experts, hidden], 7);
              const routing = b.router(b.matmul(x, gate), { topK, normTopKProb });
              const stack = async (shape: number[], seed: number) => Promise.all(Array.from({ length: experts }, (_, e) => weightOn(b, dtype, shape, seed + e)));
              const weights = { gate: await stack([ffn, hidden], 100), up: await stack([ffn, hidden], 200), down: await stack([hidden, ffn], 300) };
              return { routing, out: b.experts(x, weights, routing) };
            };
            const [mine, theirs] = [await run(backend), await run(reference)];
            assert.deepEqual(Array.from(mine.routing.expertIds), Array.from(theirs.routing.expertIds), 'same experts chosen');
            assertClose(backend.toFloat32(mine.routing.weights), reference.toFloat32(theirs.routing.weights), hidden, 'routing weights');
            const [actual, expected] = [backend.toFloat32(mine.out), reference.toFloat32(theirs.out)];
            if (isQuantized(dtype)) assertCloseExceptRoundingSteps(actual, expected, tokens, hidden + ffn, `experts T=${tokens}`);
            else assertClose(actual, expected, hidden + ffn, `experts T=${tokens}`);
          }
        }
      });
    }

    it('experts with Q4_K_M\'s mix (q4_k gate/up, q6_k down) run in the kernel, close to the reference', async () => {
      const [hidden, ffn, experts, topK] = [256, 256, 4, 2];
      const referenceCalls = { count: 0 };
      const inner = (backend as unknown as { ref?: Backend }).ref;
      if (inner) {
        const original = inner.experts.bind(inner);
        inner.experts = (...args: Parameters<Backend['experts']>) => (referenceCalls.count++, original(...args));
      }
      try {
        for (const tokens of [1, 5, 40]) {
          const run = async (b: Backend) => {
            const x = act(b, 60 + tokens, tokens, hidden);
            const routing = b.router(b.matmul(x, await weightOn(b, 'f32', [experts, hidden], 61)), { topK, normTopKProb: false });
            const stack = async (dtype: DType, shape: number[], seed: number) => Promise.all(Array.from({ length: experts }, (_, e) => weightOn(b, dtype, shape, seed + e)));
            const weights = { gate: await stack('q4_k', [ffn, hidden], 400), up: await stack('q4_k', [ffn, hidden], 500), down: await stack('q6_k', [hidden, ffn], 600) };
            return b.experts(x, weights, routing);
          };
          assertCloseExceptRoundingSteps(backend.toFloat32(await run(backend)), reference.toFloat32(await run(reference)), tokens, hidden + ffn, `q4_k/q6_k experts T=${tokens}`);
        }
        // At the scalar level the kernel has no integer dot products: there the reference is the stated exception.
        if (inner && loadAddon().addon?.simdLevel() !== 'scalar') assert.equal(referenceCalls.count, 0, 'the mixed experts went to the TypeScript reference');
      } finally {
        if (inner) delete (inner as { experts?: unknown }).experts;
      }
    });

    it('rope, clamp, add, rows, concatRows', async () => {
      const positions = Int32Array.of(0, 1, 7, 300);
      await compare(backend, 'rope', 1, (b) => b.rope(act(b, 8, 4, 3 * 16), positions, { heads: 3, headDim: 16, theta: 10000 }));
      await compare(backend, 'clamp', 1, (b) => b.clamp(act(b, 9, 3, 5), 0.3));
      await compare(backend, 'add', 1, (b) => b.add(act(b, 10, 3, 5), act(b, 11, 3, 5)));
      await compare(backend, 'rows', 1, (b) => b.rows(act(b, 12, 6, 5), 2, 3));
      await compare(backend, 'concatRows', 1, (b) => b.concatRows([act(b, 13, 2, 5), act(b, 14, 1, 5), act(b, 15, 3, 5)]));
    });

    for (const [heads, kvHeads, headDim] of [[4, 2, 16], [2, 2, 64], [4, 1, 128]] as const) {
      it(`attention over a KV cache, ${heads} heads / ${kvHeads} kv × ${headDim}: prefills (both paths) and decode steps`, async () => {
        const caches = new Map<Backend, KVCache>([backend, reference].map((b) => [b, b.createKVCache({ layers: 2, capacity: 64, kvHeads, headDim })]));
        let start = 0;
        for (const [step, tokens] of [5, 1, 20, 1, 3, 17].entries()) {
          const run = (b: Backend) => {
            const input = (seed: number, width: number) => act(b, 20 + step * 3 + seed, tokens, width);
            return b.attention({ q: input(0, heads * headDim), k: input(1, kvHeads * headDim), v: input(2, kvHeads * headDim), sequences: [{ tokens, start, cache: caches.get(b)! }], layer: 1, heads, kvHeads, headDim });
          };
          await compare(backend, `attention step ${step}`, start + tokens + headDim, run);
          start += tokens;
        }
      });
    }

    it('the tiny checkpoint gives the same logits mapped (mmap, in 1 GiB or 4 KiB windows) and read into memory', async () => {
      if (!(backend instanceof NativeBackend)) return;
      const ids = Int32Array.of(5, 80, 17, 200, 33);
      const addon = (backend as unknown as { addon: never }).addon;
      const mapped = await loadModel(tinyModelDir, { backend: new NativeBackend(addon, { minMapped: 0 }) }); // (small weights are read by default)
      const read = await loadModel(tinyModelDir, { backend: new NativeBackend(addon, { mmap: false }) });
      assert.deepEqual(mapped.backend.toFloat32(mapped.forward(ids)), read.backend.toFloat32(read.forward(ids)));
      // Files are mapped in windows, a tensor crossing a window's end on its own: 4 KiB windows, so most do.
      const windowed = await loadModel(tinyModelDir, { backend: new NativeBackend(addon, { mapWindow: 4096, minMapped: 0 }) });
      assert.deepEqual(windowed.backend.toFloat32(windowed.forward(ids)), read.backend.toFloat32(read.forward(ids)));
    });
  });
}

// The decode kernels with the software prefetch this CPU does not default to (native/src/simd.h stream_prefetch: the
// float weights' one-token rows, q8_0's and the repacked 4-bit types' decode tiles): this file again in a child process.
describe('conformance with OLMOE_PREFETCH flipped (a child process)', { skip: announceSkip(nativeCase.skip) }, () => {
  const created = nativeCase.skip ? undefined : (nativeCase.create() as { simd?: string; streamPrefetch?: boolean });
  const flipped = created?.streamPrefetch ? '0' : '1';
  const skip = process.env.OLMOE_PREFETCH ? 'already a child run' : created?.simd !== 'avx512' && created?.simd !== 'avx2' ? 'the prefetching kernels are AVX-512 and AVX2 ones' : false;
  it(`OLMOE_PREFETCH=${flipped}: this file's tests pass, and the native backend runs with it`, { skip }, () => {
    assertChildRunPasses(import.meta.url, { OLMOE_PREFETCH: flipped }, `OLMOE_PREFETCH=${flipped}`);
  });
  if (process.env.OLMOE_PREFETCH) {
    it('(a child run) the native backend has the prefetch setting this process asked for', () => {
      assert.equal(created?.streamPrefetch, process.env.OLMOE_PREFETCH === '1');
    });
  }
});
