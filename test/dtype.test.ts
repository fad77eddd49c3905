/**
 * dtype conversions: float32 → bf16/f16 bits (round-to-nearest-even, subnormals, overflow, NaN) and
 * widenInto as their exact inverse over every representable bit pattern.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeFloats, float32ToBf16Bits, float32ToF16Bits, widenInto, type DType } from '../src/core/dtype.js';

const hex = (n: number): string => `0x${n.toString(16).padStart(4, '0')}`;

/** Widen one 16-bit pattern to its float32 value. */
function widen1(dtype: DType, bits: number): number {
  const out = new Float32Array(1);
  widenInto(dtype, Uint16Array.of(bits), 0, 1, out);
  return out[0]!;
}

/** Exact bits of a float32, to tell -0 from 0 and compare NaN payloads. */
function f32Bits(value: number): number {
  return new Uint32Array(Float32Array.of(value).buffer)[0]!;
}

const isF16NaN = (bits: number): boolean => (bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0;
const isBf16NaN = (bits: number): boolean => (bits & 0x7f80) === 0x7f80 && (bits & 0x7f) !== 0;

describe('float32ToBf16Bits', () => {
  it('keeps exactly representable values unchanged', () => {
    assert.equal(hex(float32ToBf16Bits(1)), '0x3f80');
    assert.equal(hex(float32ToBf16Bits(-2)), '0xc000');
    assert.equal(hex(float32ToBf16Bits(0)), '0x0000');
    assert.equal(hex(float32ToBf16Bits(-0)), '0x8000');
    assert.equal(hex(float32ToBf16Bits(Infinity)), '0x7f80');
    assert.equal(hex(float32ToBf16Bits(-Infinity)), '0xff80');
  });

  it('rounds to nearest, ties to even', () => {
    // bf16 has 7 mantissa bits: near 1 the spacing is 2^-7, the halfway point 2^-8.
    assert.equal(hex(float32ToBf16Bits(1 + 2 ** -8)), '0x3f80', '1 + 2^-8 is a tie: stays at the even 1.0');
    assert.equal(hex(float32ToBf16Bits(1 + 3 * 2 ** -8)), '0x3f82', '1 + 3·2^-8 is a tie: rounds up to the even 1 + 2^-6');
    assert.equal(hex(float32ToBf16Bits(1 + 2 ** -8 + 2 ** -20)), '0x3f81', 'just above the tie rounds up');
    assert.equal(hex(float32ToBf16Bits(1 + 2 ** -8 - 2 ** -20)), '0x3f80', 'just below the tie rounds down');
    assert.equal(hex(float32ToBf16Bits(-(1 + 3 * 2 ** -8))), '0xbf82', 'negative ties round the same way in magnitude');
  });

  it('overflows to infinity only past the largest finite bf16', () => {
    const maxFinite = f32FromBits(0x7f7fffff); // largest float32: rounds up past bf16 0x7f7f
    assert.equal(hex(float32ToBf16Bits(maxFinite)), '0x7f80');
    assert.equal(hex(float32ToBf16Bits(-maxFinite)), '0xff80');
    assert.equal(hex(float32ToBf16Bits(f32FromBits(0x7f7f0000))), '0x7f7f');
  });

  it('keeps NaN a NaN whatever its sign and payload (low payload bits alone would round to Infinity)', () => {
    for (const bits of [0x7fc00000, 0x7f800001, 0xff800001, 0x7fffffff]) {
      const out = float32ToBf16Bits(f32FromBits(bits));
      assert.ok(isBf16NaN(out), `float32 ${bits.toString(16)} → ${hex(out)} is not a bf16 NaN`);
    }
  });
});

describe('float32ToF16Bits', () => {
  const cases: [string, number, number][] = [
    ['1.0', 1, 0x3c00],
    ['-2', -2, 0xc000],
    ['0', 0, 0x0000],
    ['-0', -0, 0x8000],
    ['65504 (largest finite)', 65504, 0x7bff],
    ['65520 (rounds to infinity)', 65520, 0x7c00],
    ['65519.99 (rounds down to 65504)', 65519.99, 0x7bff],
    ['-65520', -65520, 0xfc00],
    ['1e9', 1e9, 0x7c00],
    ['Infinity', Infinity, 0x7c00],
    ['-Infinity', -Infinity, 0xfc00],
    ['2^-24 (smallest subnormal)', 2 ** -24, 0x0001],
    ['2^-25 (tie between 0 and 2^-24: to even 0)', 2 ** -25, 0x0000],
    ['-2^-25', -(2 ** -25), 0x8000],
    ['3·2^-25 (tie between 1 and 2 ulps: to even 2)', 3 * 2 ** -25, 0x0002],
    ['2^-25 + 2^-40 (just above the tie)', 2 ** -25 + 2 ** -40, 0x0001],
    ['2^-26 (below half the smallest subnormal)', 2 ** -26, 0x0000],
    ['2^-14 (smallest normal)', 2 ** -14, 0x0400],
    ['2^-14 - 2^-25 (largest subnormal + half ulp: ties to even normal)', 2 ** -14 - 2 ** -25, 0x0400],
    ['0.1', 0.1, 0x2e66],
    ['1 + 2^-11 (tie: to even 1.0)', 1 + 2 ** -11, 0x3c00],
    ['1 + 3·2^-11 (tie: to even 1 + 2^-9)', 1 + 3 * 2 ** -11, 0x3c02],
    ['2 - 2^-11 (tie: to even 2.0, the mantissa carries into the exponent)', 2 - 2 ** -11, 0x4000],
  ];
  for (const [name, value, expected] of cases) {
    it(`${name} → ${hex(expected)}`, () => assert.equal(hex(float32ToF16Bits(value)), hex(expected)));
  }

  it('keeps NaN a NaN', () => {
    for (const bits of [0x7fc00000, 0x7f800001, 0xff800001, 0x7f802000]) {
      const out = float32ToF16Bits(f32FromBits(bits));
      assert.ok(isF16NaN(out), `float32 ${bits.toString(16)} → ${hex(out)} is not an f16 NaN`);
    }
  });
});

describe('widenInto inverts the narrowing conversions exactly', () => {
  it('f16 → f32 → f16 is the identity for all 63488 non-NaN bit patterns', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const wide = new Float32Array(65536);
    widenInto('f16', all, 0, 65536, wide);
    let checked = 0;
    for (let bits = 0; bits < 65536; bits++) {
      if (isF16NaN(bits)) {
        assert.ok(Number.isNaN(wide[bits]), `${hex(bits)} should widen to NaN`);
        continue;
      }
      const back = float32ToF16Bits(wide[bits]!);
      if (back !== bits) assert.fail(`f16 ${hex(bits)} → ${wide[bits]} → ${hex(back)}`);
      checked++;
    }
    assert.equal(checked, 65536 - 2 * 1023, 'every non-NaN pattern, ±Infinity included');
  });

  it('bf16 → f32 → bf16 is the identity for all non-NaN bit patterns, and widening is bits << 16', () => {
    const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
    const wide = new Float32Array(65536);
    widenInto('bf16', all, 0, 65536, wide);
    const wideBits = new Uint32Array(wide.buffer);
    let checked = 0;
    for (let bits = 0; bits < 65536; bits++) {
      if (wideBits[bits] !== (bits << 16) >>> 0) assert.fail(`bf16 ${hex(bits)} widened to bits ${wideBits[bits]!.toString(16)}`);
      if (isBf16NaN(bits)) continue;
      const back = float32ToBf16Bits(wide[bits]!);
      if (back !== bits) assert.fail(`bf16 ${hex(bits)} → ${wide[bits]} → ${hex(back)}`);
      checked++;
    }
    assert.equal(checked, 65536 - 2 * 127);
  });

  it('widens f16 special values to the right float32s', () => {
    assert.equal(widen1('f16', 0x3c00), 1);
    assert.equal(widen1('f16', 0xc000), -2);
    assert.equal(widen1('f16', 0x7bff), 65504);
    assert.equal(widen1('f16', 0x7c00), Infinity);
    assert.equal(widen1('f16', 0xfc00), -Infinity);
    assert.equal(widen1('f16', 0x0001), 2 ** -24);
    assert.equal(widen1('f16', 0x03ff), 1023 * 2 ** -24);
    assert.equal(f32Bits(widen1('f16', 0x8000)), 0x80000000, '-0 keeps its sign');
    assert.ok(Number.isNaN(widen1('f16', 0x7e00)));
  });

  it('honours offset and count, writing only count elements', () => {
    const src = Uint16Array.of(0x3c00, 0x4000, 0x4200, 0x4400); // 1, 2, 3, 4 in f16
    const dst = new Float32Array([9, 9, 9]);
    widenInto('f16', src, 1, 2, dst);
    assert.deepEqual(Array.from(dst), [2, 3, 9]);
    const bf = Uint16Array.of(0x3f80, 0x4000, 0x4040); // 1, 2, 3 in bf16
    const dst2 = new Float32Array([9, 9, 9]);
    widenInto('bf16', bf, 1, 2, dst2);
    assert.deepEqual(Array.from(dst2), [2, 3, 9]);
    const f = Float32Array.of(1.5, 2.5, 3.5);
    const dst3 = new Float32Array([9, 9]);
    widenInto('f32', f, 2, 1, dst3);
    assert.deepEqual(Array.from(dst3), [3.5, 9]);
  });

  it('encodeFloats writes little-endian bit patterns of each dtype', () => {
    const values = Float32Array.of(1, -2, 0.1);
    assert.deepEqual(Array.from(new Uint16Array(encodeFloats('f16', values).slice().buffer)), [0x3c00, 0xc000, 0x2e66]);
    assert.deepEqual(Array.from(new Uint16Array(encodeFloats('bf16', values).slice().buffer)), [0x3f80, 0xc000, 0x3dcd]);
    assert.deepEqual(Array.from(new Float32Array(encodeFloats('f32', values).slice().buffer)), Array.from(values));
  });
});

function f32FromBits(bits: number): number {
  return new Float32Array(Uint32Array.of(bits).buffer)[0]!;
}
