/**
 * GGUF block formats: dequantization of hand-built blocks against the formulas of the format (ggml-common.h
 * layouts), and quantization error bounds that each format must meet.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { float32ToF16Bits } from '../src/core/dtype.js';
import { createRng } from '../src/core/rng.js';
import { dequantizeInto, quantize, QUANT_BLOCKS, type QuantDType } from '../src/core/quant.js';

const dequantize = (dtype: QuantDType, bytes: Uint8Array, count: number) => {
  const out = new Float32Array(count);
  dequantizeInto(dtype, bytes, 0, count, out);
  return out;
};
const putF16 = (b: Uint8Array, at: number, value: number) => {
  const bits = float32ToF16Bits(value);
  b[at] = bits & 255;
  b[at + 1] = bits >> 8;
};

describe('dequantizing hand-built blocks', () => {
  it('q8_0: x = d · q (signed bytes)', () => {
    const b = new Uint8Array(34);
    putF16(b, 0, 0.5);
    for (let j = 0; j < 32; j++) b[2 + j] = (j - 16) & 255;
    assert.deepEqual(Array.from(dequantize('q8_0', b, 32)), Array.from({ length: 32 }, (_, j) => (j - 16) * 0.5));
  });

  it('q4_0: low nibbles are values 0..15, high nibbles 16..31, x = d · (q − 8)', () => {
    const b = new Uint8Array(18);
    putF16(b, 0, 2);
    for (let j = 0; j < 16; j++) b[2 + j] = j | ((15 - j) << 4);
    const expected = [...Array.from({ length: 16 }, (_, j) => (j - 8) * 2), ...Array.from({ length: 16 }, (_, j) => (15 - j - 8) * 2)];
    assert.deepEqual(Array.from(dequantize('q4_0', b, 32)), expected);
  });

  it('q4_k and q5_k: 6-bit scales and mins of 8 sub-blocks, x = d·scale·q − dmin·min', () => {
    // Sub-block j has scale 3+5j and min 2+7j: j ≥ 4 needs the high bits stored in bytes 0..7.
    const scale = (j: number) => 3 + 5 * j;
    const min = (j: number) => 2 + 7 * j;
    for (const dtype of ['q4_k', 'q5_k'] as const) {
      const b = new Uint8Array(QUANT_BLOCKS[dtype].bytes);
      putF16(b, 0, 0.25);
      putF16(b, 2, 0.125);
      for (let j = 0; j < 4; j++) {
        b[4 + j] = scale(j) | ((scale(j + 4) >> 4) << 6);
        b[4 + j + 4] = min(j) | ((min(j + 4) >> 4) << 6);
        b[4 + j + 8] = (scale(j + 4) & 15) | ((min(j + 4) & 15) << 4);
      }
      const code = (i: number) => (i * 7) % (dtype === 'q4_k' ? 16 : 32);
      const qs = dtype === 'q4_k' ? 16 : 48;
      for (let i = 0; i < 256; i++) {
        const [pair, within] = [Math.floor(i / 64), i % 64];
        const byte = qs + 32 * pair + (within % 32);
        b[byte]! |= within < 32 ? code(i) & 15 : (code(i) & 15) << 4;
        if (dtype === 'q5_k' && code(i) > 15) b[16 + (within % 32)]! |= (within < 32 ? 1 : 2) << (2 * pair);
      }
      const values = dequantize(dtype, b, 256);
      for (let i = 0; i < 256; i++) {
        const j = Math.floor(i / 32);
        assert.equal(values[i], Math.fround(Math.fround(0.25 * scale(j)) * code(i)) - Math.fround(0.125 * min(j)), `${dtype} value ${i}`);
      }
    }
  });

  it('q6_k: 6-bit codes split over ql and qh, int8 scales per 16 values, x = d·scale·(q − 32)', () => {
    const b = new Uint8Array(210);
    putF16(b, 208, 0.5);
    const scale = (s: number) => s - 8; // 16 scales, some negative
    for (let s = 0; s < 16; s++) b[192 + s] = scale(s) & 255;
    const code = (i: number) => (i * 11) % 64;
    for (let i = 0; i < 256; i++) {
      const [half, r] = [Math.floor(i / 128), i % 128];
      const [quarter, l] = [Math.floor(r / 32), r % 32];
      const ql = 64 * half + l + (quarter % 2) * 32;
      b[ql]! |= quarter < 2 ? code(i) & 15 : (code(i) & 15) << 4;
      b[128 + 32 * half + l]! |= (code(i) >> 4) << (2 * quarter);
    }
    const values = dequantize('q6_k', b, 256);
    for (let i = 0; i < 256; i++) {
      const s = Math.floor(i / 16);
      assert.equal(values[i], Math.fround(Math.fround(0.5 * scale(s)) * (code(i) - 32)), `value ${i}`);
    }
  });
});

describe('quantization error', () => {
  const values = (() => {
    const rng = createRng(3);
    return Float32Array.from({ length: 4096 }, () => (rng() - 0.5) * (rng() < 0.05 ? 8 : 1));
  })();
  const relativeRms = (dtype: QuantDType) => {
    const back = dequantize(dtype, quantize(dtype, values), values.length);
    let [error, energy] = [0, 0];
    values.forEach((v, i) => ((error += (v - back[i]!) ** 2), (energy += v * v)));
    return Math.sqrt(error / energy);
  };

  it('q8_0 is within half a step of every value (d = max|x|/127, stored as f16)', () => {
    const back = dequantize('q8_0', quantize('q8_0', values), values.length);
    for (let block = 0; block < values.length / 32; block++) {
      const amax = Math.max(...values.subarray(32 * block, 32 * block + 32).map(Math.abs));
      for (let j = 32 * block; j < 32 * block + 32; j++) assert.ok(Math.abs(values[j]! - back[j]!) <= (amax / 127) * 0.56 + 1e-7); // half a step, plus d's f16 rounding × 127
    }
  });

  it('more bits, less error: q4_0 < 16%, q4_k < 12%, q5_k < 6%, q6_k < 3%, q8_0 < 1%; k-quants beat q4_0', () => {
    const errors = Object.fromEntries((['q4_0', 'q4_k', 'q5_k', 'q6_k', 'q8_0'] as const).map((d) => [d, relativeRms(d)]));
    assert.ok(errors.q4_0! < 0.16 && errors.q4_k! < 0.12, JSON.stringify(errors));
    assert.ok(errors.q5_k! < 0.06 && errors.q6_k! < 0.03 && errors.q8_0! < 0.01, JSON.stringify(errors));
    assert.ok(errors.q4_k! < errors.q4_0! && errors.q5_k! < errors.q4_k! && errors.q6_k! < errors.q5_k!, JSON.stringify(errors));
  });

  it('all-zero and constant blocks survive', () => {
    for (const dtype of ['q8_0', 'q4_0', 'q4_k', 'q5_k', 'q6_k'] as const) {
      const n = QUANT_BLOCKS[dtype].elements;
      assert.ok(dequantize(dtype, quantize(dtype, new Float32Array(n)), n).every((v) => v === 0), dtype);
      const constant = dequantize(dtype, quantize(dtype, new Float32Array(n).fill(0.75)), n);
      assert.ok(constant.every((v) => Math.abs(v - 0.75) < 0.75 * 0.07), `${dtype}: ${constant[0]}`);
    }
  });
});
