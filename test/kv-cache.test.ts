/**
 * KV cache types (f16 default, q8_0, f32) and blocked attention:
 * 1. storage: hand-worked roundings (f16 ties to even, overflow; q8_0 d = amax/127, q = round-half-away) and the
 *    native addon's bytes identical to the reference's for every type;
 * 2. native attention vs the reference over each cache type, for prompts that cross the 64-position blocks at odd
 *    lengths, GQA, decode steps (both read the same stored values: only float summation differs);
 * 3. the blocked (online-softmax) attention equals the one-softmax definition, whatever the block size;
 * 4. the law of a rounded cache: with keys and values off by at most δk, δv, a query's scores move by at most
 *    H = ‖q‖₁·δk/√Hd, its probabilities by a factor within e^{±2H}, so its output by at most δv + (e^{2H} − 1)·max|v|;
 *    δ = 2^-11·|x| for f16 (relative rounding), amax·(1/254 + 2^-11) for q8_0 (half a step of d = amax/127, and d's
 *    own f16 rounding times 127);
 * 5. a bad cache type is an error naming it;
 * and the native tests again in child processes with each lower SIMD level this CPU has (OLMOE_SIMD), and at AVX-512
 * with the decode kernels' software prefetch flipped from this CPU's default (OLMOE_PREFETCH).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KV_CACHE_TYPES, parseKVCacheType, type Backend, type KVCacheType } from '../src/core/backend.js';
import { InputError } from '../src/core/errors.js';
import { createRng } from '../src/core/rng.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { attention, attentionUnblocked } from '../src/backends/reference/attention.js';
import { decodeKVRows, encodeKVRows, RefKVCache } from '../src/backends/reference/kv-cache.js';
import { announceSkip, backendCases } from './backends.js';
import { assertChildRunPasses } from './helpers.js';

const reference = new ReferenceBackend();
const native = backendCases[1]!;

function randoms(seed: number, n: number, scale = 1): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: n }, () => (rng() * 2 - 1) * scale);
}

const roundTrip = (type: KVCacheType, values: number[]) => {
  const rows = Float32Array.from(values);
  const bytes = new Uint8Array(new RefKVCache({ layers: 1, capacity: 1, kvHeads: 1, headDim: values.length, dtype: type }).rowBytes);
  encodeKVRows(type, rows, values.length, bytes);
  return Array.from(decodeKVRows(type, bytes, values.length));
};

describe('KV cache storage (reference, hand-worked)', () => {
  it('f16: round to nearest, ties to even; overflow to ∞; subnormals', () => {
    const e = 2 ** -11;
    assert.deepEqual(roundTrip('f16', [1 + e, 1 + 3 * e, 65504, 65520, 2 ** -25, 3 * 2 ** -26, -1.5]), [1, 1 + 4 * e, 65504, Infinity, 0, 2 ** -24, -1.5]);
  });

  it('q8_0: d = amax/127, q = round half away from zero; a row padded to whole blocks; a NaN spoils only its block', () => {
    const first = [127, -63.5, 0.5, -0.5, 2.5, 1.49, ...new Array(26).fill(0)];
    const out = roundTrip('q8_0', [...first, 0.7, -0.3, 0.1]);
    assert.deepEqual(out.slice(0, 6), [127, -64, 1, -1, 3, 1]);
    // block 2: amax 0.7 → d = f16(0.7/127); 0.7 → q 127, −0.3 → −54.43 → −54, 0.1 → 18.14 → 18
    const d = roundTrip('f16', [Math.fround(Math.fround(0.7) / 127)])[0]!;
    assert.deepEqual(out.slice(32), [127 * d, -54 * d, 18 * d].map(Math.fround));
    const spoiled = roundTrip('q8_0', [...first, NaN, 1]);
    assert.ok(spoiled.slice(0, 32).every(Number.isFinite) && spoiled.slice(32).every(Number.isNaN));
  });

  it('the cache size per position is layers × 2 × kv row bytes (q8_0: 34 bytes per 32 values)', () => {
    const bytes = (dtype: KVCacheType) => new RefKVCache({ layers: 16, capacity: 4, kvHeads: 16, headDim: 128, dtype }).bytesPerPosition;
    assert.deepEqual([bytes('f32'), bytes('f16'), bytes('q8_0')], [16 * 2 * 2048 * 4, 16 * 2 * 2048 * 2, 16 * 2 * 64 * 34]);
  });

  it('a bad cache type is an error naming it and the choices', () => {
    assert.throws(() => parseKVCacheType('q4_0', '--kv-cache'), (e: Error) => e instanceof InputError && /--kv-cache: "q4_0" is not a KV cache type \(choose f16, q8_0, f32\)/.test(e.message));
    assert.throws(() => reference.createKVCache({ layers: 1, capacity: 4, kvHeads: 1, headDim: 8, dtype: 'bf16' as KVCacheType }), /"bf16" is not a KV cache type/);
  });
});

/** A key's value at (position, index in the row of all kv heads). */
type KeyAt = (position: number, index: number) => number;

/** Attention of one sequence's steps over a fresh cache of the type (keys random, or from `key`); returns each step's output. */
function runSteps(b: Backend, type: KVCacheType, shape: readonly [number, number, number], steps: readonly number[], how = (args: Parameters<Backend['attention']>[0]) => b.attention(args), key?: KeyAt): Float32Array[] {
  const [heads, kvHeads, headDim] = shape;
  const cache = b.createKVCache({ layers: 2, capacity: steps.reduce((a, c) => a + c, 0), kvHeads, headDim, dtype: type });
  let start = 0;
  return steps.map((tokens, step) => {
    const input = (seed: number, width: number) => b.fromFloat32(randoms(100 * step + seed, tokens * width), [tokens, width]);
    const width = kvHeads * headDim;
    const k = key ? b.fromFloat32(Float32Array.from({ length: tokens * width }, (_, i) => key(start + Math.floor(i / width), i % width)), [tokens, width]) : input(2, width);
    const out = how({ q: input(1, heads * headDim), k, v: input(3, kvHeads * headDim), sequences: [{ tokens, start, cache }], layer: 1, heads, kvHeads, headDim });
    start += tokens;
    return b.toFloat32(out);
  });
}

function assertClose(actual: Float32Array, expected: Float32Array, tolerance: (expected: number) => number, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: length`);
  for (let i = 0; i < actual.length; i++) {
    const error = Math.abs(actual[i]! - expected[i]!);
    if (!(error <= tolerance(expected[i]!))) assert.fail(`${what}: element ${i}: ${actual[i]} vs ${expected[i]} (error ${error})`);
  }
}

/** Shapes (H, Hkv, Hd): GQA, the AVX-512 kernels' head dims (64, 128) and the portable kernel's (16, 24). */
const SHAPES = [[4, 2, 16], [2, 2, 64], [4, 1, 128], [3, 3, 24]] as const;
/** Prompts crossing 64-position blocks at odd lengths, decode steps, a second long chunk after cached positions. */
const STEPS = [70, 1, 1, 67, 3, 130, 1];

describe('KV cache storage populated ahead of its writes', () => {
  it('every row is stored into populated storage, across growth; each layer populates its own; rows read back', () => {
    const populated = new Map<ArrayBufferLike, [number, number][]>();
    const calls: number[] = [];
    const covered = (bytes: Uint8Array) => (populated.get(bytes.buffer) ?? []).some(([from, to]) => from <= bytes.byteOffset && bytes.byteOffset + bytes.byteLength <= to);
    const encode = (type: KVCacheType, rows: Float32Array | Float64Array, width: number, out: Uint8Array) => {
      assert.ok(covered(out), `rows at byte ${out.byteOffset} of a ${out.buffer.byteLength}-byte storage were not populated first`);
      encodeKVRows(type, rows, width, out);
    };
    const populate = (bytes: Uint8Array) => {
      calls.push(bytes.byteLength);
      const list = populated.get(bytes.buffer) ?? [];
      const last = list[list.length - 1];
      if (last && last[1] === bytes.byteOffset) last[1] += bytes.byteLength; // merge adjacent calls
      else list.push([bytes.byteOffset, bytes.byteOffset + bytes.byteLength]);
      populated.set(bytes.buffer, list);
    };
    const cache = new RefKVCache({ layers: 2, capacity: 1000, kvHeads: 2, headDim: 4, dtype: 'f32' }, { encode, populate });
    const row = (position: number) => Float32Array.from({ length: 8 }, (_, i) => position * 10 + i);
    const stored: Float32Array[] = [];
    let position = 0;
    for (const count of [40, 1, 1, 100, ...new Array(150).fill(1)]) {
      const rows = new Float32Array(8 * count);
      for (let r = 0; r < count; r++) rows.set(row(position + r), 8 * r);
      for (const layer of [0, 1]) cache.store(layer, position, { keys: rows, values: rows });
      stored.push(rows);
      position += count;
    }
    const all = new Float32Array(8 * position);
    stored.reduce((at, rows) => (all.set(rows, at), at + rows.length), 0);
    for (const layer of [0, 1]) for (const which of ['keys', 'values'] as const) assert.deepEqual(cache.read(which, layer, position), all);
    // Decode populates in steps of many positions, not one call per row.
    assert.ok(calls.length < 40, `${calls.length} populate calls for ${position} positions × 2 layers × keys and values`);
  });
});

describe('native attention vs the reference, per cache type', { skip: announceSkip(native.skip) }, () => {
  const backend = native.skip ? reference : native.create();

  it('runs at the SIMD level and with the stream prefetch this process asked for (OLMOE_SIMD, OLMOE_PREFETCH)', () => {
    const expected = process.env.OLMOE_EXPECT_SIMD;
    if (expected) assert.equal((backend as { simd?: string }).simd, expected);
    const prefetch = process.env.OLMOE_PREFETCH;
    if (prefetch) assert.equal((backend as { streamPrefetch?: boolean }).streamPrefetch, prefetch === '1');
  });

  for (const type of KV_CACHE_TYPES) {
    it(`${type}: the addon stores the reference's bytes`, () => {
      // Edge values (ties, subnormals, overflow, −0, ±∞, NaN with payload bits) fill the first rows: the SIMD paths
      // convert eight or sixteen at a time, so each value lands in a group with ordinary ones.
      const e = 2 ** -11;
      const edges = [1 + e, 1 + 3 * e, 65504, 65519.99, -65520, 2 ** -25, 3 * 2 ** -26, 2 ** -24 * 1.5, -0, Infinity, -Infinity, 1e-40];
      const values = [1e5, -7e4, 65520, ...edges, ...Array.from({ length: 64 }, (_, i) => (i - 32) / 2), ...randoms(1, 300), ...randoms(2, 300, 1e-6)];
      const width = 40;
      const rows = Float32Array.from(values.slice(0, width * Math.floor(values.length / width)));
      const bits = new Uint32Array(rows.buffer);
      bits[5 * 8 + 3] = 0x7fc12345; // a quiet NaN with payload, and a negative one, in later groups
      bits[7 * 8 + 6] = 0xffc00001;
      const store = (b: Backend) => {
        const cache = b.createKVCache({ layers: 1, capacity: rows.length / width, kvHeads: 5, headDim: 8, dtype: type }) as RefKVCache;
        cache.store(0, 0, { keys: rows, values: rows });
        return Array.from(cache.keys[0]!);
      };
      assert.deepEqual(store(backend), store(reference));
    });

    for (const shape of SHAPES) {
      it(`${type}: ${shape[0]} heads / ${shape[1]} kv × ${shape[2]}, prompts across blocks, decode steps`, () => {
        const [mine, theirs] = [runSteps(backend, type, shape, STEPS), runSteps(reference, type, shape, STEPS)];
        let positions = 0;
        STEPS.forEach((tokens, step) => {
          positions += tokens;
          const scale = 1e-5 * Math.sqrt(positions + shape[2]);
          assertClose(mine[step]!, theirs[step]!, (x) => scale * (1 + Math.abs(x)), `${type} step ${step}`);
        });
      });
    }
  }
});

describe('native long-context decode (positions split across threads, slices merged) vs the reference', { skip: announceSkip(native.skip) }, () => {
  const backend = native.skip ? reference : native.create();
  // Decode steps at 63–65, 166, 767, 768 and 1,469 positions: from max(64, 32 × threads) on, the AVX-512 and AVX2
  // kernels split positions into slices of at least 32 and merge each head's slices by their
  // maxima (native/src/attention.cc, attend_decode_sliced); below it they take one head per item. The slices hold
  // 16 heads to a vector (8 with AVX2): 16 heads (OLMoE's count) fill one (two), 20 a second (third) in part, 32 two
  // (four) (fewer steps: the reference's prompts of many heads are slow).
  const longSteps = [62, 1, 1, 1, 100, 1, 600, 1, 1, 700, 1], shortSteps = [62, 1, 1, 1, 100, 1];
  for (const type of KV_CACHE_TYPES) {
    for (const shape of [[4, 2, 64], [4, 1, 128], [3, 3, 24], [16, 16, 64], [20, 4, 64], [32, 8, 64]] as const) {
      const steps = shape[0] >= 16 ? shortSteps : longSteps;
      it(`${type}: ${shape[0]} heads / ${shape[1]} kv × ${shape[2]}`, () => {
        const [mine, theirs] = [runSteps(backend, type, shape, steps), runSteps(reference, type, shape, steps)];
        let positions = 0;
        steps.forEach((tokens, step) => {
          positions += tokens;
          const scale = 1e-5 * Math.sqrt(positions + shape[2]);
          assertClose(mine[step]!, theirs[step]!, (x) => scale * (1 + Math.abs(x)), `${type} step ${step} (${positions} positions)`);
        });
      });
    }
    // The slices keep each head's running maximum across positions and rescale its sum when a position raises it:
    // keys whose scores rise with the position (every position raises every head's maximum, and the exponentials of
    // the first positions underflow to 0), and a first position that dominates (the maximum never moves again).
    const keys: Record<string, KeyAt> = {
      'scores rising at every position': (position, i) => (position / 8) * (1 + (i % 5) / 10),
      'a first position that dominates': (position, i) => (position === 0 ? 6 : 0.1) * (1 + ((i * 7) % 11) / 10) * ((i + position) % 3 === 0 ? -1 : 1),
    };
    for (const [what, key] of Object.entries(keys)) {
      it(`${type}: 16 heads / 16 kv × 64, ${what}`, () => {
        const steps = [90, 1, 1, 1];
        const [mine, theirs] = [runSteps(backend, type, [16, 16, 64], steps, undefined, key), runSteps(reference, type, [16, 16, 64], steps, undefined, key)];
        let positions = 0;
        steps.forEach((tokens, step) => {
          positions += tokens;
          if (step === 0) return; // the prompt: per-head items, not the slices
          assertClose(mine[step]!, theirs[step]!, (x) => 1e-5 * (1 + Math.abs(x)), `${type} step ${step} (${positions} positions)`);
        });
      });
    }
  }
});

describe('blocked attention equals the one-softmax definition', () => {
  for (const shape of [[4, 2, 16], [2, 1, 64]] as const) {
    for (const keyBlock of [64, 5]) {
      it(`reference, blocks of ${keyBlock}, ${shape[0]} heads / ${shape[1]} kv × ${shape[2]}, f32 and f16 caches`, () => {
        for (const type of ['f32', 'f16'] as const) {
          const blocked = runSteps(reference, type, shape, STEPS, (args) => attention(args, keyBlock));
          const definition = runSteps(reference, type, shape, STEPS, (args) => attentionUnblocked(args));
          blocked.forEach((out, step) => assertClose(out, definition[step]!, (x) => 1e-6 * (1 + Math.abs(x)), `step ${step}`));
        }
      });
    }
  }

  it('native (every kernel) vs the reference definition', { skip: announceSkip(native.skip) }, () => {
    const backend = native.skip ? reference : native.create();
    for (const shape of SHAPES) {
      const definition = runSteps(reference, 'f32', shape, STEPS, (args) => attentionUnblocked(args));
      runSteps(backend, 'f32', shape, STEPS).forEach((out, step) => assertClose(out, definition[step]!, (x) => 1e-4 * (1 + Math.abs(x)), `${shape} step ${step}`));
    }
  });
});

describe('the error law of a rounded cache (vs the f32 cache)', () => {
  /** δ for a value x of a row whose block holds amax. */
  const deltas: Record<'f16' | 'q8_0', (amax: number) => number> = {
    f16: (amax) => 2 ** -11 * amax + 2 ** -25,
    q8_0: (amax) => amax * (1 / 254 + 2 ** -11),
  };
  for (const b of backendCases) {
    for (const type of ['f16', 'q8_0'] as const) {
      it(`${b.name}: ${type} outputs within δv + (e^{2H} − 1)·max|v| of the f32 cache's`, { skip: announceSkip(b.skip) }, () => {
        const backend = b.skip ? reference : b.create();
        const [heads, kvHeads, headDim] = [4, 2, 64];
        const steps = [90, 1, 33];
        const [exact, rounded] = [runSteps(backend, 'f32', [heads, kvHeads, headDim], steps), runSteps(backend, type, [heads, kvHeads, headDim], steps)];
        // Inputs are uniform in [−1, 1): amax ≤ 1, ‖q‖₁ ≤ Hd.
        const delta = deltas[type](1);
        const H = (headDim * delta) / Math.sqrt(headDim);
        const bound = delta + Math.expm1(2 * H) * 1 + 1e-5;
        let worst = 0;
        exact.forEach((out, step) => assertClose(rounded[step]!, out, () => bound, `${type} step ${step}`));
        exact.forEach((out, step) => out.forEach((x, i) => (worst = Math.max(worst, Math.abs(x - rounded[step]![i]!)))));
        assert.ok(worst > 0, 'the rounding changed something (the cache is really rounded)');
      });
    }
  }
});

describe('every SIMD level on this machine (child processes with OLMOE_SIMD, and OLMOE_PREFETCH flipped)', { skip: announceSkip(native.skip) }, () => {
  const levels = ['avx512', 'avx2', 'scalar'];
  const created = native.skip ? undefined : (native.create() as { simd?: string; streamPrefetch?: boolean });
  const best = created?.simd ?? 'scalar';
  const child = process.env.OLMOE_EXPECT_SIMD ? 'already a child run' : false;
  for (const level of levels.slice(levels.indexOf(best) + 1)) {
    it(`OLMOE_SIMD=${level}: this file's tests pass`, { skip: child }, () => {
      assertChildRunPasses(import.meta.url, { OLMOE_SIMD: level, OLMOE_EXPECT_SIMD: level }, level);
    });
  }
  // Decode attention's f16 and f32 rows with the software prefetch this CPU does not default to (native/src/simd.h).
  if (best === 'avx512' || best === 'avx2') {
    const flipped = created?.streamPrefetch ? '0' : '1';
    it(`OLMOE_PREFETCH=${flipped}: this file's tests pass`, { skip: child }, () => {
      assertChildRunPasses(import.meta.url, { OLMOE_PREFETCH: flipped, OLMOE_EXPECT_SIMD: best }, `OLMOE_PREFETCH=${flipped}`);
    });
  }
});
