/**
 * Matmul with quantized weights on activations rounded to 8-bit blocks (llama.cpp's scheme;
 * src/backends/reference/quant-matmul.ts and its native twin native/src/q8.h, qdot.h):
 * 1. the activation rounding and the per-block integer formulas on hand-built blocks, worked out by hand;
 * 2. a law: the result differs from "dequantize, then multiply exactly" by at most Σ|w|·d_x/2 (each activation
 *    moves by at most half its block's step), on random rows of every quantized dtype;
 * 3. the native backend against the reference at this process's SIMD level, every quantized dtype, the dot path
 *    (decode, 1–7 tokens, row counts that leave remainders) and the many-token path (prefill: the integer GEMM
 *    of native/src/qgemm.h: AMX int8 tiles where the CPU has them, VNNI register tiles, the decode kernels, or float
 *    tiles at the scalar level), the grouped experts with many tokens per expert, and non-finite activations;
 * 4. the same file again in child processes with OLMOE_SIMD forcing each lower level the CPU has (avx2, scalar), with
 *    OLMOE_AMX=0 on a CPU with AMX (the VNNI tiles), and with OLMOE_WIDE_ROWS flipped on a CPU with VNNI (the K-quant
 *    rows and q8_0 decode rows at the width this CPU does not default to), and with OLMOE_PREFETCH flipped at AVX-512
 *    (the decode kernels with the software prefetch this CPU does not default to), so every kernel runs on one machine.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { describe, it } from 'node:test';
import { createBackend } from '../src/backends/index.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { quantizeActivations, quantizedMatmul } from '../src/backends/reference/quant-matmul.js';
import { RefTensor } from '../src/backends/reference/tensor.js';
import { weightFromBytes, type Backend } from '../src/core/backend.js';
import { encodeFloats, float32ToF16Bits, widenInto, type QuantDType } from '../src/core/dtype.js';
import { createRng } from '../src/core/rng.js';
import { QUANT_BLOCKS } from '../src/core/quant.js';
import { announceSkip, backendCases } from './backends.js';
import { assertChildRunPasses, cliPath, tinyModelDir } from './helpers.js';

const QUANT_DTYPES: QuantDType[] = ['q8_0', 'q4_0', 'q4_k', 'q5_k', 'q6_k'];
const cpuFlags = (() => {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return '';
  }
})();
const native = backendCases.find((b) => b.name === 'native')!;
const reference = new ReferenceBackend();
const fround = Math.fround;

function randoms(seed: number, n: number, scale = 1): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: n }, () => (rng() * 2 - 1) * scale);
}

const putF16 = (b: Uint8Array, at: number, value: number) => {
  const bits = float32ToF16Bits(value);
  [b[at], b[at + 1]] = [bits & 255, bits >> 8];
};

const matmulOf = (dtype: QuantDType, bytes: Uint8Array, x: Float32Array, inDim: number) =>
  quantizedMatmul(x, new RefTensor(dtype, [bytes.length / ((inDim / QUANT_BLOCKS[dtype].elements) * QUANT_BLOCKS[dtype].bytes), inDim], bytes), dtype).data as Float32Array;

describe('activation rounding (hand-worked)', () => {
  it('d = max|x|/127, codes round half to even, a zero or tiny block is zero, a non-finite block has d = NaN', () => {
    const x = new Float32Array(64);
    x.set([1, 0.5, -0.5, 0.25, -1, 1.5 / 127]); // × 127: 127, 63.5 → 64, −63.5 → −64, 31.75 → 32, −127, 1.5 → 2
    x[40] = 1e-31; // second block: below 2^-100
    const { q, d } = quantizeActivations(x, 64, 32);
    assert.deepEqual(Array.from(q.subarray(0, 7)), [127, 64, -64, 32, -127, 2, 0]);
    assert.deepEqual(Array.from(d), [fround(1 / 127), 0]);
    assert.ok(q.subarray(32).every((v) => v === 0));
    x[40] = Infinity;
    assert.ok(Number.isNaN(quantizeActivations(x, 64, 32).d[1]));
  });
});

describe('integer block dots (hand-worked)', () => {
  const ones = (n: number) => new Float32Array(n).fill(1); // codes 127, d_x = fl(1/127)
  const dx = fround(1 / 127);

  it('q4_0: d_w·d_x·Σ (n − 8)·q', () => {
    const b = new Uint8Array(18);
    putF16(b, 0, 0.5);
    for (let j = 0; j < 16; j++) b[2 + j] = 9 | (6 << 4); // values 0..15: n − 8 = 1; values 16..31: −2
    assert.equal(matmulOf('q4_0', b, ones(32), 32)[0], fround(0.5 * dx * 127 * (16 * 1 - 16 * 2)));
  });

  it('q8_0: d_w·d_x·Σ w·q', () => {
    const b = new Uint8Array(34);
    putF16(b, 0, 2);
    for (let j = 0; j < 32; j++) b[2 + j] = (j - 16) & 255; // Σ w = −16
    assert.equal(matmulOf('q8_0', b, ones(32), 32)[0], fround(2 * dx * 127 * -16));
  });

  it('q4_k, q5_k: d·d_x·Σ_j scale_j·Σ n·q − dmin·d_x·Σ_j min_j·Σ q', () => {
    for (const [dtype, bytes, qs] of [['q4_k', 144, 16], ['q5_k', 176, 48]] as const) {
      const b = new Uint8Array(bytes);
      putF16(b, 0, 1);
      putF16(b, 2, 0.5);
      // scales 1..8 and mins 2 (sub-blocks 4..7: low 4 bits in bytes 8..11, no high bits needed)
      b.set([1, 2, 3, 4, 2, 2, 2, 2, 5 | (2 << 4), 6 | (2 << 4), 7 | (2 << 4), 8 | (2 << 4)], 4);
      b.fill(3 | (3 << 4), qs, qs + 128); // every code 3 (q5_k: fifth bits 0)
      assert.equal(matmulOf(dtype, b, ones(256), 256)[0], fround(dx * 127 * 32 * (3 * 36 - 0.5 * 8 * 2)), dtype);
    }
  });

  it('q6_k: d·d_x·Σ_j scale_j·Σ (v − 32)·q with int8 scales per 16 values', () => {
    const b = new Uint8Array(210);
    b.fill(3 | (3 << 4), 0, 128); // low 4 bits 3
    b.fill(0b10101010, 128, 192); // high 2 bits 2 for every value: v = 35, v − 32 = 3
    for (let g = 0; g < 16; g++) b[192 + g] = (g - 8) & 255; // Σ scales = −8
    putF16(b, 208, 0.25);
    assert.equal(matmulOf('q6_k', b, ones(256), 256)[0], fround(0.25 * dx * 127 * 16 * 3 * -8));
  });
});

describe('the rounding law: |q8 matmul − exact matmul on dequantized weights| ≤ Σ|w|·d_x/2', () => {
  for (const dtype of QUANT_DTYPES) {
    it(dtype, () => {
      const [tokens, inDim, outDim, block] = [3, 512, 24, QUANT_BLOCKS[dtype].elements];
      const x = randoms(1, tokens * inDim, 2);
      const bytes = encodeFloats(dtype, randoms(2, outDim * inDim, 0.5));
      const w = new Float32Array(outDim * inDim);
      widenInto(dtype, bytes, 0, w.length, w);
      const y = matmulOf(dtype, bytes, x, inDim);
      for (let t = 0; t < tokens; t++) {
        for (let o = 0; o < outDim; o++) {
          let [exact, bound, magnitude] = [0, 0, 0];
          for (let i = 0; i < inDim; i++) {
            const start = t * inDim + i - (i % block);
            const step = Math.max(...Array.from(x.subarray(start, start + block), Math.abs)) / 127;
            exact += x[t * inDim + i]! * w[o * inDim + i]!;
            bound += (Math.abs(w[o * inDim + i]!) * step) / 2;
            magnitude += Math.abs(x[t * inDim + i]! * w[o * inDim + i]!);
          }
          const error = Math.abs(y[t * outDim + o]! - exact);
          assert.ok(error <= bound + 1e-6 * magnitude, `${dtype} [${t}, ${o}]: error ${error} > bound ${bound}`);
          assert.ok(error > 0 || bound === 0, 'the activations were rounded');
        }
      }
    });
  }
});

describe('native quantized matmul vs the reference', { skip: announceSkip(native.skip) }, () => {
  const backend: Backend = native.skip ? reference : native.create();

  it('runs at the SIMD level and with the stream prefetch this process asked for (OLMOE_SIMD, OLMOE_PREFETCH)', () => {
    const expected = process.env.OLMOE_EXPECT_SIMD;
    if (expected) assert.equal((backend as { simd?: string }).simd, expected);
    const prefetch = process.env.OLMOE_PREFETCH;
    if (prefetch) assert.equal((backend as { streamPrefetch?: boolean }).streamPrefetch, prefetch === '1');
  });

  it('prefill takes the kernel the CPU, the level and OLMOE_AMX call for', () => {
    const level = (backend as { simd?: string }).simd;
    const amx = level === 'avx512' && /\bamx_int8\b/.test(cpuFlags) && /\bamx_tile\b/.test(cpuFlags) && process.env.OLMOE_AMX !== '0';
    const vnni = level === 'avx512' && /\bavx512_vnni\b/.test(cpuFlags);
    const kernel = (dtype: QuantDType | 'f16') => (backend as unknown as { quantGemmKernel(d: string): string }).quantGemmKernel(dtype);
    // q4_0 / q4_k / q6_k repacked 16 rows to a vector (native/src/packed.h) at the AVX2 and AVX-512 levels without AMX
    const packing = level !== 'scalar' && !amx && process.env.OLMOE_PACK !== '0';
    for (const dtype of QUANT_DTYPES) {
      // q8_0 is laid out 16 rows to a vector per call (native/src/qgemm-vnni.cc gemm_q8_0_groups), whatever OLMOE_PACK says
      const packed = packing && (dtype === 'q4_0' || dtype === 'q4_k' || dtype === 'q6_k');
      const sixteen = (packed && vnni) || (vnni && dtype === 'q8_0');
      const tiles = sixteen ? 'avx512-vnni-16rows' : packed ? 'avx2-16rows' : vnni && dtype === 'q4_0' ? 'avx512-vnni' : 'integer-dot';
      const expected = level === 'scalar' ? 'float-tiles' : amx ? 'amx-int8' : tiles;
      assert.equal(kernel(dtype), expected, dtype);
    }
    assert.equal(kernel('f16'), 'float-tiles');
  });

  const run = async (b: Backend, dtype: QuantDType, x: Float32Array, tokens: number, inDim: number, outDim: number) => {
    const w = await b.weight(weightFromBytes('w', dtype, [outDim, inDim], encodeFloats(dtype, randoms(3, outDim * inDim, 0.5))));
    return b.toFloat32(b.matmul(b.fromFloat32(x, [tokens, inDim]), w));
  };

  for (const dtype of QUANT_DTYPES) {
    it(`${dtype}: decode (1–7 tokens) and prefill (12–300 tokens: tiles of 16 rows × 16 tokens, or 8 rows × 4 tokens, their remainders, two groups of 256 tokens), rows not a multiple of 4, 8, 16 or a work item`, async () => {
      const block = QUANT_BLOCKS[dtype].elements;
      for (const [tokens, blocks, outDim] of [[1, 2, 37], [1, 8, 515], [1, 3, 13], [2, 3, 19], [3, 1, 6], [4, 2, 9], [5, 2, 33], [7, 1, 11], [8, 1, 16], [12, 2, 21], [16, 2, 32], [40, 3, 17], [17, 1, 8], [67, 2, 23], [300, 1, 35], [18, 2, 48], [21, 1, 16]]) {
        const inDim = blocks! * block;
        const x = randoms(10 + tokens!, tokens! * inDim);
        const [actual, expected] = [await run(backend, dtype, x, tokens!, inDim, outDim!), await run(reference, dtype, x, tokens!, inDim, outDim!)];
        const tolerance = 1e-5 * Math.sqrt(inDim);
        actual.forEach((value, i) => {
          assert.ok(Math.abs(value - expected[i]!) <= tolerance * (1 + Math.abs(expected[i]!)), `T=${tokens} ${inDim}→${outDim} [${i}]: ${value} vs ${expected[i]}`);
        });
      }
    });

    const groupedExperts = async (tokens: number, hidden: number, ffn: number) => {
      const experts = 4;
      const outputs = await Promise.all([backend, reference].map(async (b) => {
        const weight = (shape: number[], seed: number) => b.weight(weightFromBytes(`w${seed}`, dtype, shape, encodeFloats(dtype, randoms(seed, shape[0]! * shape[1]!, 0.5))));
        const stack = (shape: number[], seed: number) => Promise.all(Array.from({ length: experts }, (_, e) => weight(shape, seed + e)));
        const x = b.fromFloat32(randoms(9, tokens * hidden), [tokens, hidden]);
        const routing = b.router(b.matmul(x, await weight([experts, hidden], 8)), { topK: 2, normTopKProb: false });
        const weights = { gate: await stack([ffn, hidden], 100), up: await stack([ffn, hidden], 200), down: await stack([hidden, ffn], 300) };
        return { ids: Array.from(routing.expertIds), out: b.toFloat32(b.experts(x, weights, routing)) };
      }));
      const [mine, theirs] = outputs as [{ ids: number[]; out: Float32Array }, { ids: number[]; out: Float32Array }];
      assert.deepEqual(mine.ids, theirs.ids, 'same experts chosen');
      // The hidden activations are rounded to q8 too, and float rounding can move one across a code step (see
      // test/conformance.test.ts): all but a tenth of the tokens within the matmul tolerance, and a small total error.
      const tolerance = 1e-5 * Math.sqrt(hidden + ffn);
      let [deviating, squaredError, squared] = [0, 0, 0];
      for (let t = 0; t < tokens; t++) {
        let close = true;
        for (let i = t * hidden; i < (t + 1) * hidden; i++) {
          const error = Math.abs(mine.out[i]! - theirs.out[i]!);
          close &&= error <= tolerance * (1 + Math.abs(theirs.out[i]!));
          [squaredError, squared] = [squaredError + error ** 2, squared + theirs.out[i]! ** 2];
        }
        if (!close) deviating++;
      }
      assert.ok(deviating <= Math.floor(tokens / 10), `${deviating} of ${tokens} tokens outside the tolerance`);
      assert.ok(squaredError <= 1e-6 * squared, `normalized squared error ${squaredError / squared}`);
    };

    it(`${dtype}: grouped experts with many tokens per expert (37 tokens, top-2 of 4: odd groups of ~18)`, async () => {
      const block = QUANT_BLOCKS[dtype].elements;
      await groupedExperts(37, 2 * block, block);
    });

    it(`${dtype}: grouped experts at decode with several 256-row work items per expert (chunks end inside an expert; merged runs)`, async () => {
      const block = QUANT_BLOCKS[dtype].elements;
      for (const tokens of [1, 3]) await groupedExperts(tokens, 768, block < 256 ? 544 : 512);
    });

    it(`${dtype}: a NaN or ∞ activation makes its token's outputs NaN (decode and prefill), other tokens unaffected`, async () => {
      const inDim = QUANT_BLOCKS[dtype].elements;
      for (const tokens of [2, 12]) {
        const x = randoms(5, tokens * inDim);
        x[3] = NaN;
        x[inDim + 5] = Infinity;
        const y = await run(backend, dtype, x, tokens, inDim, 8);
        assert.ok(y.subarray(0, 16).every(Number.isNaN), `T=${tokens}: tokens 0 and 1 NaN`);
        assert.ok(y.subarray(16).every(Number.isFinite), `T=${tokens}: the others finite`);
      }
    });
  }
});

describe('matmuls: one input by several weights in one job equals a matmul each', { skip: announceSkip(native.skip) }, () => {
  // The same kernel on the same rounded activations: equal bit for bit, for any split of the rows among the threads.
  for (const pack of [true, false]) {
    it(`q4_0, q8_0, q4_k (${pack ? 'repacked where the CPU has the kernels' : 'file layout'}): 1, 3 and 12 tokens, weights of 272, 16 and 528 rows (work items across the weights' ends); mixed dtypes a job per dtype, or per set of k-quants (results in the weights' order), float weights a matmul each`, async () => {
      const backend = createBackend('native', { pack });
      for (const dtype of ['q4_0', 'q8_0', 'q4_k'] as const) {
        const inDim = QUANT_BLOCKS[dtype].elements * 2;
        const weights = await Promise.all([272, 16, 528].map((rows, i) => backend.weight(weightFromBytes(`w${i}`, dtype, [rows, inDim], encodeFloats(dtype, randoms(50 + i, rows * inDim, 0.5))))));
        for (const tokens of [1, 3, 12]) {
          const x = backend.fromFloat32(randoms(60 + tokens, tokens * inDim), [tokens, inDim]);
          const together = backend.matmuls!(x, weights).map((t) => backend.toFloat32(t));
          weights.forEach((w, i) => {
            const alone = backend.toFloat32(backend.matmul(x, w));
            assert.equal(together[i]!.length, tokens * w.shape[0]!);
            assert.deepEqual(together[i], alone, `${dtype} T=${tokens} weight ${i}`);
          });
        }
      }
      const inDim = 256;
      const mixed = [
        await backend.weight(weightFromBytes('a', 'q4_0', [32, inDim], encodeFloats('q4_0', randoms(70, 32 * inDim)))),
        await backend.weight(weightFromBytes('b', 'q8_0', [48, inDim], encodeFloats('q8_0', randoms(71, 48 * inDim)))),
        backend.fromFloat32(randoms(72, 16 * inDim), [16, inDim]),
        await backend.weight(weightFromBytes('d', 'q4_0', [16, inDim], encodeFloats('q4_0', randoms(74, 16 * inDim)))),
      ];
      const x = backend.fromFloat32(randoms(73, 2 * inDim), [2, inDim]);
      backend.matmuls!(x, mixed).forEach((out, i) => assert.deepEqual(backend.toFloat32(out), backend.toFloat32(backend.matmul(x, mixed[i]!)), `mixed weight ${i}`));
      // k-quants of three types share one quantized input in one job (Q4_K_M's q, k and v), beside a q8_0 weight (its own
      // job): each as its matmul alone, bit for bit, decode and prefill.
      const kInDim = 512;
      const kMixed = await Promise.all(([['q4_k', 272], ['q6_k', 48], ['q5_k', 16], ['q8_0', 32], ['q6_k', 16]] as const).map(([dtype, rows], i) =>
        backend.weight(weightFromBytes(`k${i}`, dtype, [rows, kInDim], encodeFloats(dtype, randoms(100 + i, rows * kInDim, 0.5))))));
      for (const tokens of [1, 5]) {
        const kx = backend.fromFloat32(randoms(110 + tokens, tokens * kInDim), [tokens, kInDim]);
        backend.matmuls!(kx, kMixed).forEach((out, i) => assert.deepEqual(backend.toFloat32(out), backend.toFloat32(backend.matmul(kx, kMixed[i]!)), `k-quant weight ${i}, T=${tokens}`));
      }
    });
  }

  it('f16 and bf16: 1, 3, 20 and 70 tokens (the tiles from 16 on, over two token blocks), 200 features (two slices of the tiles), weights of 272, 16 and 100 rows, the input transposed once for all', async () => {
    const backend = createBackend('native');
    for (const dtype of ['f16', 'bf16'] as const) {
      const inDim = 200;
      const weights = await Promise.all([272, 16, 100].map((rows, i) => backend.weight(weightFromBytes(`w${i}`, dtype, [rows, inDim], encodeFloats(dtype, randoms(80 + i, rows * inDim, 0.5))))));
      for (const tokens of [1, 3, 20, 70]) {
        const x = backend.fromFloat32(randoms(90 + tokens, tokens * inDim), [tokens, inDim]);
        const together = backend.matmuls!(x, weights).map((t) => backend.toFloat32(t));
        weights.forEach((w, i) => assert.deepEqual(together[i], backend.toFloat32(backend.matmul(x, w)), `${dtype} T=${tokens} weight ${i}`));
      }
    }
  });

  it('the addon refuses a weight too small for its output, naming it', { skip: announceSkip(native.skip) }, () => {
    const addon = (createBackend('native') as unknown as { addon: { matmuls: (...args: unknown[]) => void } }).addon;
    const w = new Uint8Array(18 * 8 * 4); // 4 rows of 256 q4_0 values
    assert.throws(() => addon.matmuls(new Float32Array(256), 1, 256, 4, [w, w], [new Float32Array(4), new Float32Array(5)]), /matmuls: weight 1 holds 576 bytes, 5 rows need 720/);
    // one dtype each: the second a q8_0 (34 bytes a block) that 576 bytes hold only 2 rows of
    assert.throws(() => addon.matmuls(new Float32Array(256), 1, 256, [4, 3], [w, w], [new Float32Array(4), new Float32Array(3)]), /matmuls: weight 1 holds 576 bytes, 3 rows need 816/);
    assert.throws(() => addon.matmuls(new Float32Array(256), 1, 256, [4], [w, w], [new Float32Array(4), new Float32Array(4)]), /one dtype each/);
  });
});

describe('q4_0, q4_k and q6_k repacked 16 rows to a vector (native/src/packed.h): the file layout\'s and the reference\'s results', { skip: announceSkip(native.skip) }, () => {
  // Packed where the CPU has the kernels (AVX-512 VNNI without AMX), else (pack: true) their portable twin; never at
  // the scalar level, where both backends below are the same.
  const packed = native.skip ? reference : createBackend('native', { pack: true, minMapped: 0 });
  const plain = native.skip ? reference : createBackend('native', { pack: false });
  const weight = (b: Backend, dtype: QuantDType, bytes: Uint8Array, shape: number[]) => b.weight(weightFromBytes('w', dtype, shape, bytes));

  for (const dtype of ['q4_0', 'q4_k', 'q6_k'] as const) it(`${dtype}: matmul at 1–9, 16 and 70 tokens over 1–33 row groups (256-row work items and their remainders; q4_0's 2–4 tokens in its four decode streams) and 1–64 blocks, NaN rows included`, async () => {
    const cases = dtype === 'q4_0'
      ? [[1, 64, 528], [1, 1, 16], [1, 2, 112], [2, 3, 48], [3, 2, 32], [4, 5, 16], [2, 2, 80], [3, 3, 112], [4, 2, 272], [5, 2, 80], [7, 1, 272], [8, 2, 16], [9, 3, 64], [16, 2, 32], [70, 4, 48]]
      : [[1, 8, 528], [1, 1, 16], [1, 2, 112], [2, 3, 48], [3, 2, 32], [4, 1, 16], [5, 2, 80], [7, 1, 272], [9, 1, 64], [70, 2, 48]];
    for (const [tokens, blocks, outDim] of cases) {
      const inDim = QUANT_BLOCKS[dtype].elements * blocks!;
      const bytes = encodeFloats(dtype, randoms(4 + outDim!, outDim! * inDim, 0.5));
      const x = randoms(20 + tokens!, tokens! * inDim);
      if (tokens! > 1) x[inDim + 7] = NaN; // token 1
      const outputs = await Promise.all([packed, plain, reference].map(async (b) => b.toFloat32(b.matmul(b.fromFloat32(x, [tokens!, inDim]), await weight(b, dtype, bytes, [outDim!, inDim])))));
      const [mine, file, theirs] = outputs as [Float32Array, Float32Array, Float32Array];
      const tolerance = 1e-5 * Math.sqrt(inDim);
      mine.forEach((value, i) => {
        const where = `T=${tokens} ${inDim}→${outDim} [${i}]`;
        if (Math.floor(i / outDim!) === 1 && tokens! > 1) return assert.ok(Number.isNaN(value) && Number.isNaN(file[i]!), `${where}: NaN token`);
        assert.ok(Math.abs(value - theirs[i]!) <= tolerance * (1 + Math.abs(theirs[i]!)), `${where}: ${value} vs reference ${theirs[i]}`);
        assert.ok(Math.abs(value - file[i]!) <= tolerance * (1 + Math.abs(file[i]!)), `${where}: ${value} vs file layout ${file[i]}`);
      });
    }
  });

  it('packWeight: weights are 64-byte-aligned views into one shared chunk (V8 sees one external allocation, not one per weight), apart, each in the layout of packed.h', () => {
    const addon = (packed as unknown as { addon: { packWeight(dtype: number, bytes: Uint8Array, rows: number, cols: number): Uint8Array } }).addon;
    const small = encodeFloats('q4_0', randoms(90, 16 * 64, 0.5));
    const large = encodeFloats('q4_0', randoms(91, 48 * 96, 0.5));
    const [a, b, c] = [addon.packWeight(4, small, 16, 64), addon.packWeight(4, large, 48, 96), addon.packWeight(4, small, 16, 64)];
    assert.ok(a.buffer === b.buffer && b.buffer === c.buffer, 'one chunk');
    assert.deepEqual([a.byteLength, b.byteLength, c.byteLength], [small.length, large.length, small.length], 'as many bytes as the file layout');
    for (const v of [a, b, c]) assert.equal(v.byteOffset % 64, 0);
    assert.ok(b.byteOffset >= a.byteOffset + a.byteLength && c.byteOffset >= b.byteOffset + b.byteLength, 'pieces apart');
    assert.deepEqual(c, a, 'packing again gives the same bytes, and packing b left a alone');
    // Block 0 of group 0: the 16 rows' f16 scales (bytes 0..1 of each row's first 18-byte block), then vector s whose
    // lane r holds code bytes 4s..4s+3 of row r.
    for (let r = 0; r < 16; r++) {
      const row = small.subarray(r * 36, r * 36 + 18);
      assert.deepEqual([...a.subarray(2 * r, 2 * r + 2)], [...row.subarray(0, 2)], `row ${r} scale`);
      for (let s = 0; s < 4; s++) assert.deepEqual([...a.subarray(32 + 64 * s + 4 * r, 32 + 64 * s + 4 * r + 4)], [...row.subarray(2 + 4 * s, 6 + 4 * s)], `row ${r} codes ${s}`);
    }
  });

  it('a worker thread packs into its own chunks (the arena is per JavaScript environment) and exits or is terminated cleanly; the main thread packs on after', async () => {
    const code = `const { parentPort, workerData } = require('node:worker_threads');
      Promise.all([import(${JSON.stringify(new URL('../src/backends/index.js', import.meta.url).href)}), import(${JSON.stringify(new URL('../src/core/dtype.js', import.meta.url).href)})]).then(([{ createBackend }, { encodeFloats }]) => {
        const addon = createBackend('native', { pack: true }).addon;
        const bytes = encodeFloats('q4_0', new Float32Array(32 * 64).fill(0.25));
        const views = [addon.packWeight(4, bytes, 32, 64), addon.packWeight(4, bytes, 32, 64)];
        parentPort.postMessage(views.map((v) => [v.byteOffset, v.buffer.byteLength]));
        if (workerData === 'terminate') setInterval(() => {}, 1000);
      });`;
    for (const end of ['exit', 'terminate']) {
      const worker = new Worker(code, { eval: true, workerData: end });
      const exited = once(worker, 'exit');
      const [pieces] = (await once(worker, 'message')) as [number[][]];
      assert.deepEqual(pieces, [[0, 256 * 2 ** 20], [1152, 256 * 2 ** 20]], `${end}: a fresh arena in the worker, its pieces in one chunk`);
      if (end === 'terminate') await worker.terminate();
      assert.equal((await exited)[0], end === 'exit' ? 0 : 1, end);
    }
    const addon = (packed as unknown as { addon: { packWeight(dtype: number, bytes: Uint8Array, rows: number, cols: number): Uint8Array } }).addon;
    assert.equal(addon.packWeight(4, encodeFloats('q4_0', randoms(92, 16 * 64, 0.5)), 16, 64).byteLength, 576);
  });

  it('a weight mapped from its file keeps its bytes after packing unmaps its pages (the embedding gather and toFloat32 read them)', async () => {
    const [rows, inDim] = [64, 4096]; // 147 KiB: whole pages inside it
    const bytes = encodeFloats('q4_0', randoms(77, rows * inDim, 0.5));
    const dir = mkdtempSync(join(tmpdir(), 'olmoe-packed-'));
    try {
      const file = join(dir, 'w.bin');
      writeFileSync(file, Buffer.concat([Buffer.alloc(100), bytes])); // an offset inside the first page
      const source = { ...weightFromBytes('w', 'q4_0', [rows, inDim], bytes), file, offset: 100 };
      const w = await packed.weight(source);
      const x = randoms(78, inDim);
      const product = packed.toFloat32(packed.matmul(packed.fromFloat32(x, [1, inDim]), w));
      assert.deepEqual(packed.toFloat32(w), reference.toFloat32(await reference.weight(weightFromBytes('w', 'q4_0', [rows, inDim], bytes))));
      const again = packed.toFloat32(packed.matmul(packed.fromFloat32(x, [1, inDim]), w));
      assert.deepEqual(again, product);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('every SIMD level on this machine (child processes with OLMOE_SIMD, OLMOE_AMX=0, OLMOE_WIDE_ROWS and OLMOE_PREFETCH)', { skip: announceSkip(native.skip) }, () => {
  const levels = ['avx512', 'avx2', 'scalar'];
  const created = native.skip ? undefined : (native.create() as { simd?: string; streamPrefetch?: boolean });
  const best = created?.simd ?? 'scalar';
  const runs: Array<{ level: string; amx?: '0'; wide?: '0' | '1'; prefetch?: '0' | '1' }> = levels.slice(levels.indexOf(best) + 1).map((level) => ({ level }));
  if (best === 'avx512' && /\bamx_int8\b/.test(cpuFlags)) runs.unshift({ level: 'avx512', amx: '0' });
  // The row kernels' other width (K-quant rows and q8_0 decode: 512-bit by default on AMD, 256-bit elsewhere; native/src/simd.h wide_rows)
  if (best === 'avx512' && /\bavx512_vnni\b/.test(cpuFlags)) runs.unshift({ level: 'avx512', wide: /\bAuthenticAMD\b/.test(cpuFlags) ? '0' : '1' });
  // The decode tiles and q8_0 decode rows with the software prefetch this CPU does not default to (simd.h stream_prefetch)
  if (best === 'avx512' || best === 'avx2') runs.unshift({ level: best, prefetch: created?.streamPrefetch ? '0' : '1' });
  for (const { level, amx, wide, prefetch } of runs) {
    const name = amx ? `OLMOE_AMX=0 (VNNI tiles at ${level})` : wide ? `OLMOE_WIDE_ROWS=${wide} (K-quant and q8_0 decode rows at the other width)`
      : prefetch ? `OLMOE_PREFETCH=${prefetch} (decode kernels with the other software prefetch)` : `OLMOE_SIMD=${level}`;
    it(`${name}: this file's tests pass`, { skip: process.env.OLMOE_EXPECT_SIMD ? 'already a child run' : false }, () => {
      assertChildRunPasses(import.meta.url, {
        OLMOE_SIMD: level, OLMOE_EXPECT_SIMD: level, ...(amx ? { OLMOE_AMX: amx } : {}), ...(wide ? { OLMOE_WIDE_ROWS: wide } : {}), ...(prefetch ? { OLMOE_PREFETCH: prefetch } : {}),
      }, name);
    });
  }
});

describe('OLMOE_SIMD, OLMOE_PREFETCH and OLMOE_HUGE_PAGES values', { skip: announceSkip(native.skip) }, () => {
  const logits = (env: Record<string, string>) => {
    const { NODE_TEST_CONTEXT: _, ...inherited } = process.env;
    return spawnSync(process.execPath, [cliPath, 'logits', tinyModelDir, '--ids', '1,2', '--backend', 'native'], { encoding: 'utf8', env: { ...inherited, ...env } });
  };
  it('an unknown level is an error naming the variable, its value and the levels', () => {
    const run = logits({ OLMOE_SIMD: 'avx3' });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /OLMOE_SIMD=avx3: expected one of avx512, avx2, scalar/);
  });
  it('a prefetch setting other than 0 or 1 is an error naming the variable and its value', () => {
    const run = logits({ OLMOE_PREFETCH: 'yes' });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /OLMOE_PREFETCH=yes: expected 0 or 1/);
  });
  it('a huge-page setting other than 0 or 1 is an error naming the variable and its value; 0 and 1 run', () => {
    const run = logits({ OLMOE_HUGE_PAGES: 'auto' });
    assert.equal(run.status, 1);
    assert.match(run.stderr, /OLMOE_HUGE_PAGES=auto: expected 0 or 1/);
    const [never, always] = [logits({ OLMOE_HUGE_PAGES: '0' }), logits({ OLMOE_HUGE_PAGES: '1' })];
    assert.equal(never.status, 0, never.stderr);
    assert.equal(always.stdout, never.stdout, 'the same logits on either kind of page');
  });
});
