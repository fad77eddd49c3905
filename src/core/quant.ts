/**
 * GGUF block quantization (layouts identical to ggml's, so a GGUF maps without copying).
 *   q8_0: 32 values → f16 d, i8 q[32]                                   x = d·q
 *   q4_0: 32 values → f16 d, u8 q[16] (low nibbles: values 0..15, high: 16..31)   x = d·(q − 8)
 *   q4_k: 256 values → f16 d, f16 dmin, 12 bytes of 6-bit scales/mins for 8 sub-blocks of 32, u8 q[128]
 *         x = d·scale_j·q − dmin·min_j
 *   q5_k: q4_k plus a fifth bit per value in qh[32]
 *   q6_k: 256 values → ql[128], qh[64], i8 scales[16] (sub-blocks of 16), f16 d     x = d·scale_j·(q − 32)
 * Dequantization is exact (what ggml computes, in float32); quantization follows ggml's reference quantizers
 * (round-to-nearest with the same scale searches), computed in double, so a code may differ from
 * llama-quantize's in rare ties.
 */

import { f16Value, float32ToF16Bits } from './f16.js';

export type QuantDType = 'q8_0' | 'q4_0' | 'q4_k' | 'q5_k' | 'q6_k';

export const QUANT_BLOCKS: Record<QuantDType, { elements: number; bytes: number }> = {
  q8_0: { elements: 32, bytes: 34 },
  q4_0: { elements: 32, bytes: 18 },
  q4_k: { elements: 256, bytes: 144 },
  q5_k: { elements: 256, bytes: 176 },
  q6_k: { elements: 256, bytes: 210 },
};

const f16At = (b: Uint8Array, at: number) => f16Value(b[at]! | (b[at + 1]! << 8));
const fround = Math.fround;

/** Dequantize `count` values (whole blocks) starting at byte `at` of `src` into `dst`. */
export function dequantizeInto(dtype: QuantDType, src: Uint8Array, at: number, count: number, dst: Float32Array): void {
  const { elements, bytes } = QUANT_BLOCKS[dtype];
  const dequantizeBlock = DEQUANTIZERS[dtype];
  for (let block = 0; block < count / elements; block++) dequantizeBlock(src, at + block * bytes, dst, block * elements);
}

type BlockDequantizer = (b: Uint8Array, at: number, y: Float32Array, out: number) => void;

const DEQUANTIZERS: Record<QuantDType, BlockDequantizer> = {
  q8_0(b, at, y, out) {
    const d = f16At(b, at);
    for (let j = 0; j < 32; j++) y[out + j] = fround((((b[at + 2 + j]! << 24) >> 24)) * d);
  },
  q4_0(b, at, y, out) {
    const d = f16At(b, at);
    for (let j = 0; j < 16; j++) {
      const q = b[at + 2 + j]!;
      y[out + j] = fround(((q & 15) - 8) * d);
      y[out + j + 16] = fround(((q >> 4) - 8) * d);
    }
  },
  q4_k(b, at, y, out) {
    const d = f16At(b, at);
    const dmin = f16At(b, at + 2);
    const scales = at + 4;
    const qs = at + 16;
    for (let j = 0; j < 4; j++) {
      const [s1, m1] = scaleMinK4(b, scales, 2 * j);
      const [s2, m2] = scaleMinK4(b, scales, 2 * j + 1);
      const [d1, n1, d2, n2] = [fround(d * s1), fround(dmin * m1), fround(d * s2), fround(dmin * m2)];
      for (let l = 0; l < 32; l++) {
        const q = b[qs + 32 * j + l]!;
        y[out + 64 * j + l] = fround(fround(d1 * (q & 15)) - n1);
        y[out + 64 * j + 32 + l] = fround(fround(d2 * (q >> 4)) - n2);
      }
    }
  },
  q5_k(b, at, y, out) {
    const d = f16At(b, at);
    const dmin = f16At(b, at + 2);
    const scales = at + 4;
    const qh = at + 16;
    const qs = at + 48;
    for (let j = 0; j < 4; j++) {
      const [s1, m1] = scaleMinK4(b, scales, 2 * j);
      const [s2, m2] = scaleMinK4(b, scales, 2 * j + 1);
      const [d1, n1, d2, n2] = [fround(d * s1), fround(dmin * m1), fround(d * s2), fround(dmin * m2)];
      const [u1, u2] = [1 << (2 * j), 2 << (2 * j)];
      for (let l = 0; l < 32; l++) {
        const q = b[qs + 32 * j + l]!;
        const high = b[qh + l]!;
        y[out + 64 * j + l] = fround(fround(d1 * ((q & 15) + (high & u1 ? 16 : 0))) - n1);
        y[out + 64 * j + 32 + l] = fround(fround(d2 * ((q >> 4) + (high & u2 ? 16 : 0))) - n2);
      }
    }
  },
  q6_k(b, at, y, out) {
    const d = f16At(b, at + 208);
    for (let half = 0; half < 2; half++) {
      const ql = at + 64 * half;
      const qh = at + 128 + 32 * half;
      const sc = at + 192 + 8 * half;
      const base = out + 128 * half;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = b[qh + l]!;
        const q1 = ((b[ql + l]! & 15) | ((h & 3) << 4)) - 32;
        const q2 = ((b[ql + l + 32]! & 15) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((b[ql + l]! >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((b[ql + l + 32]! >> 4) | (((h >> 6) & 3) << 4)) - 32;
        const scale = (k: number) => fround(d * ((b[sc + is + k]! << 24) >> 24));
        y[base + l] = fround(scale(0) * q1);
        y[base + l + 32] = fround(scale(2) * q2);
        y[base + l + 64] = fround(scale(4) * q3);
        y[base + l + 96] = fround(scale(6) * q4);
      }
    }
  },
};

/** The 6-bit scale and min of sub-block j (0..7) packed in the 12 scale bytes of q4_k / q5_k. */
export function scaleMinK4(b: Uint8Array, at: number, j: number): [number, number] {
  if (j < 4) return [b[at + j]! & 63, b[at + j + 4]! & 63];
  return [(b[at + j + 4]! & 15) | ((b[at + j - 4]! >> 6) << 4), (b[at + j + 4]! >> 4) | ((b[at + j]! >> 6) << 4)];
}

// ------------------------------------------------------------------------------------------ quantization

function writeF16(b: Uint8Array, at: number, value: number): number {
  const bits = float32ToF16Bits(value);
  b[at] = bits & 255;
  b[at + 1] = bits >> 8;
  return f16Value(bits);
}

/** ggml's nearest_int: round half to even. */
function nearestInt(value: number): number {
  const rounded = Math.round(value);
  return rounded - value === 0.5 && rounded % 2 !== 0 ? rounded - 1 : rounded;
}

/** C roundf: half away from zero. */
const roundAway = (value: number) => Math.sign(value) * Math.round(Math.abs(value));

/**
 * A faster writer of some block types (the native backend's k-quants, `useNativeQuantizer`) that must give the bytes
 * `quantizeReference` gives; it returns undefined for a type it does not write.
 */
export type QuantizeAccelerator = (dtype: QuantDType, values: Float32Array) => Uint8Array | undefined;
let accelerator: QuantizeAccelerator | undefined;

/** Route `quantize` through `fn` where it writes the type (undefined: TypeScript only). */
export function setQuantizeAccelerator(fn: QuantizeAccelerator | undefined): void {
  accelerator = fn;
}

/** Quantize `values` (a multiple of the block size) into blocks of `dtype`. */
export function quantize(dtype: QuantDType, values: Float32Array): Uint8Array {
  const { elements } = QUANT_BLOCKS[dtype];
  if (values.length % elements !== 0) throw new RangeError(`${dtype} needs a multiple of ${elements} values, got ${values.length}`);
  return accelerator?.(dtype, values) ?? quantizeReference(dtype, values);
}

/** The TypeScript writer of every block type: the reference an accelerator is checked against. */
export function quantizeReference(dtype: QuantDType, values: Float32Array): Uint8Array {
  const { elements, bytes } = QUANT_BLOCKS[dtype];
  if (values.length % elements !== 0) throw new RangeError(`${dtype} needs a multiple of ${elements} values, got ${values.length}`);
  const out = new Uint8Array((values.length / elements) * bytes);
  for (let block = 0; block < values.length / elements; block++) {
    QUANTIZERS[dtype](values.subarray(block * elements, (block + 1) * elements), out, block * bytes);
  }
  return out;
}

type BlockQuantizer = (x: Float32Array, b: Uint8Array, at: number) => void;

const QUANTIZERS: Record<QuantDType, BlockQuantizer> = {
  q8_0(x, b, at) {
    const amax = x.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const d = fround(amax / 127);
    const id = d ? fround(1 / d) : 0;
    writeF16(b, at, d);
    for (let j = 0; j < 32; j++) b[at + 2 + j] = roundAway(fround(x[j]! * id)) & 255;
  },
  q4_0(x, b, at) {
    let max = 0;
    for (const v of x) if (Math.abs(v) > Math.abs(max)) max = v;
    const d = fround(max / -8);
    const id = d ? fround(1 / d) : 0;
    writeF16(b, at, d);
    const code = (v: number) => Math.min(15, Math.trunc(fround(fround(v * id) + 8.5)));
    for (let j = 0; j < 16; j++) b[at + 2 + j] = code(x[j]!) | (code(x[j + 16]!) << 4);
  },
  q4_k: (x, b, at) => quantizeK(x, b, at, 15),
  q5_k: (x, b, at) => quantizeK(x, b, at, 31),
  q6_k: quantizeQ6K,
};

/**
 * q4_k / q5_k: each sub-block of 32 gets an affine fit (scale, min) by a weighted search over scales (ggml's
 * make_qkx2_quants); scales and mins are then coded in 6 bits against the block's largest, and values re-coded.
 */
function quantizeK(x: Float32Array, b: Uint8Array, at: number, nmax: 15 | 31): void {
  const scales = new Float64Array(8);
  const mins = new Float64Array(8);
  for (let j = 0; j < 8; j++) {
    const sub = x.subarray(32 * j, 32 * j + 32);
    const rms = Math.sqrt(sub.reduce((s, v) => s + v * v, 0) / 32);
    const weights = Float64Array.from(sub, (v) => rms + Math.abs(v));
    [scales[j], mins[j]] = affineFit(sub, weights, nmax, nmax === 15 ? [-1, 0.1, 20] : [-0.5, 0.1, 15]);
  }
  const maxScale = Math.max(...scales);
  const maxMin = Math.max(...mins);
  const scaleCodes = Array.from(scales, (s) => (maxScale > 0 ? Math.min(63, nearestInt((63 / maxScale) * s)) : 0));
  const minCodes = Array.from(mins, (m) => (maxMin > 0 ? Math.min(63, nearestInt((63 / maxMin) * m)) : 0));
  const d = writeF16(b, at, maxScale / 63);
  const dmin = writeF16(b, at + 2, maxMin / 63);
  packScalesMins(b, at + 4, scaleCodes, minCodes);
  const codes = new Uint8Array(256);
  for (let j = 0; j < 8; j++) {
    const step = fround(d * scaleCodes[j]!);
    if (!step) continue;
    const offset = fround(dmin * minCodes[j]!);
    for (let l = 0; l < 32; l++) codes[32 * j + l] = Math.max(0, Math.min(nmax, nearestInt((x[32 * j + l]! + offset) / step)));
  }
  if (nmax === 15) packNibbles(b, at + 16, codes);
  else packQ5(b, at + 16, codes);
}

function packScalesMins(b: Uint8Array, at: number, scales: number[], mins: number[]): void {
  b.fill(0, at, at + 12);
  for (let j = 0; j < 8; j++) {
    if (j < 4) {
      b[at + j] = scales[j]!;
      b[at + j + 4] = mins[j]!;
    } else {
      b[at + j + 4] = (scales[j]! & 15) | ((mins[j]! & 15) << 4);
      b[at + j - 4]! |= (scales[j]! >> 4) << 6;
      b[at + j]! |= (mins[j]! >> 4) << 6;
    }
  }
}

/** Values 64k..64k+31 in low nibbles, 64k+32..64k+63 in high nibbles of 32 bytes. */
function packNibbles(b: Uint8Array, at: number, codes: Uint8Array): void {
  for (let j = 0; j < 4; j++) {
    for (let l = 0; l < 32; l++) b[at + 32 * j + l] = (codes[64 * j + l]! & 15) | ((codes[64 * j + 32 + l]! & 15) << 4);
  }
}

/** q5_k: qh[32] holds the fifth bits (bit 2j for the low half of pair j, 2j+1 for the high half), then nibbles. */
function packQ5(b: Uint8Array, at: number, codes: Uint8Array): void {
  b.fill(0, at, at + 32);
  for (let j = 0; j < 4; j++) {
    for (let l = 0; l < 32; l++) {
      if (codes[64 * j + l]! > 15) b[at + l]! |= 1 << (2 * j);
      if (codes[64 * j + 32 + l]! > 15) b[at + l]! |= 2 << (2 * j);
    }
  }
  packNibbles(b, at + 32, codes);
}

/**
 * Weighted least-squares affine fit x ≈ scale·l − min, l ∈ [0, nmax], over a small search of scales. Plain loops
 * over one reused code buffer: this runs 21 times per 32 values, and arrays and closures per try made
 * quantizing to q4_k several times slower than the arithmetic.
 */
function affineFit(x: Float32Array, w: Float64Array, nmax: number, [rmin, rdelta, steps]: number[]): [number, number] {
  let min = 0;
  let max = -Infinity;
  for (const v of x) {
    min = Math.min(min, v);
    max = Math.max(max, v);
  }
  if (max === min) return [0, -min];
  const l = AFFINE_CODES;
  let scale = (max - min) / nmax;
  affineCodes(x, min, 1 / scale, nmax, l);
  let best = affineError(x, w, l, scale, min);
  let sumW = 0;
  let sumX = 0;
  for (let i = 0; i < x.length; i++) {
    sumW += w[i]!;
    sumX += w[i]! * x[i]!;
  }
  for (let step = 0; step <= steps!; step++) {
    affineCodes(x, min, (rmin! + rdelta! * step + nmax) / (max - min), nmax, l); // min as improved so far, as ggml's make_qkx2_quants
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < x.length; i++) {
      sumL += w[i]! * l[i]!;
      sumL2 += w[i]! * l[i]! * l[i]!;
      sumXL += w[i]! * l[i]! * x[i]!;
    }
    const D = sumW * sumL2 - sumL * sumL;
    if (D <= 0) continue;
    let thisScale = (sumW * sumXL - sumX * sumL) / D;
    let thisMin = (sumL2 * sumX - sumL * sumXL) / D;
    if (thisMin > 0) [thisMin, thisScale] = [0, sumXL / sumL2];
    const e = affineError(x, w, l, thisScale, thisMin);
    if (e < best) [best, scale, min] = [e, thisScale, thisMin];
  }
  return [scale, -min];
}
const AFFINE_CODES = new Float64Array(32);

function affineCodes(x: Float32Array, min: number, inverse: number, nmax: number, l: Float64Array): void {
  for (let i = 0; i < x.length; i++) l[i] = Math.max(0, Math.min(nmax, nearestInt(inverse * (x[i]! - min))));
}

function affineError(x: Float32Array, w: Float64Array, l: Float64Array, scale: number, min: number): number {
  let e = 0;
  for (let i = 0; i < x.length; i++) {
    const diff = scale * l[i]! + min - x[i]!;
    e += w[i]! * (diff * diff);
  }
  return e;
}

/** q6_k: sub-blocks of 16 with signed 6-bit codes, scales coded as int8 against the largest (ggml make_qx_quants). */
function quantizeQ6K(x: Float32Array, b: Uint8Array, at: number): void {
  const scales = new Float64Array(16);
  let maxScale = 0;
  for (let j = 0; j < 16; j++) {
    scales[j] = symmetricFit(x.subarray(16 * j, 16 * j + 16), 32);
    if (Math.abs(scales[j]!) > Math.abs(maxScale)) maxScale = scales[j]!;
  }
  const codes = new Uint8Array(256);
  if (maxScale === 0) {
    b.fill(0, at, at + 210);
    return;
  }
  const inverse = -128 / maxScale;
  const d = writeF16(b, at + 208, 1 / inverse);
  for (let j = 0; j < 16; j++) {
    const code = Math.min(127, nearestInt(inverse * scales[j]!));
    b[at + 192 + j] = code & 255;
    const step = fround(d * code);
    for (let l = 0; l < 16; l++) codes[16 * j + l] = step ? Math.max(-32, Math.min(31, nearestInt(x[16 * j + l]! / step))) + 32 : 32;
  }
  for (let half = 0; half < 2; half++) {
    const [ql, qh, c] = [at + 64 * half, at + 128 + 32 * half, 128 * half];
    for (let l = 0; l < 32; l++) {
      const [q1, q2, q3, q4] = [codes[c + l]!, codes[c + l + 32]!, codes[c + l + 64]!, codes[c + l + 96]!];
      b[ql + l] = (q1 & 15) | ((q3 & 15) << 4);
      b[ql + l + 32] = (q2 & 15) | ((q4 & 15) << 4);
      b[qh + l] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
    }
  }
}

/** Symmetric scale for codes in [−nmax, nmax−1], refined by a weighted (x²) search (ggml make_qx_quants, rmse 1). */
function symmetricFit(x: Float32Array, nmax: number): number {
  let max = 0;
  for (const v of x) if (Math.abs(v) > Math.abs(max)) max = v;
  if (Math.abs(max) < 1e-15) return 0;
  const fit = (inverse: number): [number, number] => {
    let [sumLX, sumL2] = [0, 0];
    for (const v of x) {
      const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(inverse * v)));
      sumLX += v * v * v * l;
      sumL2 += v * v * l * l;
    }
    return [sumLX, sumL2];
  };
  let [sumLX, sumL2] = fit(-nmax / max);
  let scale = sumL2 ? sumLX / sumL2 : 0;
  let best = scale * sumLX;
  for (let step = -9; step <= 9; step++) {
    if (step === 0) continue;
    [sumLX, sumL2] = fit(-(nmax + 0.1 * step) / max);
    if (sumL2 > 0 && sumLX * sumLX > best * sumL2) [scale, best] = [sumLX / sumL2, (sumLX / sumL2) * sumLX];
  }
  return scale;
}
