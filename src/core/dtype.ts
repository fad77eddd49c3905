/**
 * Element types of weights and activations, and conversions between their bit patterns and float32.
 * bf16 is the upper half of an IEEE float32; f16 is IEEE half precision. Node 20 has no Float16Array,
 * so both are held as Uint16Array bit patterns and widened on the fly.
 */

export type DType = 'f32' | 'bf16' | 'f16';

const DTYPE_BYTES: Record<DType, number> = { f32: 4, bf16: 2, f16: 2 };

/** Bytes of a tensor of `dtype` and `shape` (a function, not a per-element size, so block-quantized types fit later). */
export function byteSize(dtype: DType, shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1) * DTYPE_BYTES[dtype];
}

/** safetensors dtype strings ↔ ours. Other safetensors dtypes exist but are not model weights here. */
export const SAFETENSORS_DTYPES: Record<string, DType> = { F32: 'f32', BF16: 'bf16', F16: 'f16' };

export function safetensorsName(dtype: DType): string {
  return dtype.toUpperCase();
}

const f16Table = buildF16Table();

function buildF16Table(): Float32Array {
  const table = new Float32Array(65536);
  for (let bits = 0; bits < 65536; bits++) table[bits] = f16BitsToNumber(bits);
  return table;
}

function f16BitsToNumber(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24; // subnormal
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/** Widen `count` elements of `src` (starting at element `offset`) into `dst` (float32). */
export function widenInto(dtype: DType, src: ArrayBufferView, offset: number, count: number, dst: Float32Array): void {
  if (dtype === 'f32') {
    dst.set((src as Float32Array).subarray(offset, offset + count));
  } else if (dtype === 'bf16') {
    const bits = src as Uint16Array;
    const dstBits = new Uint32Array(dst.buffer, dst.byteOffset, count);
    for (let i = 0; i < count; i++) dstBits[i] = bits[offset + i]! << 16;
  } else {
    const bits = src as Uint16Array;
    for (let i = 0; i < count; i++) dst[i] = f16Table[bits[offset + i]!]!;
  }
}

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** float32 → bf16 bits with round-to-nearest-even (what torch's .to(bfloat16) does); NaN stays NaN. */
export function float32ToBf16Bits(value: number): number {
  scratchF32[0] = value;
  const bits = scratchU32[0]!;
  if ((bits & 0x7f800000) === 0x7f800000 && bits & 0x7fffff) return (bits >>> 16) | 0x40;
  const roundingBias = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + roundingBias) >>> 16) & 0xffff;
}

/** float32 → f16 bits, round-to-nearest-even, with subnormals, overflow to ±Infinity. */
export function float32ToF16Bits(value: number): number {
  scratchF32[0] = value;
  const bits = scratchU32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  let mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0);
  let halfExponent = exponent - 127 + 15;
  if (halfExponent >= 31) return sign | 0x7c00;
  if (halfExponent <= 0) {
    if (halfExponent < -10) return sign;
    mantissa |= 0x800000;
    const shift = 14 - halfExponent;
    const rounded = roundShift(mantissa, shift);
    return sign | rounded;
  }
  const rounded = roundShift(mantissa, 13);
  // A mantissa that rounds up to 1024 carries into the exponent, which the addition does for us.
  return sign | ((halfExponent << 10) + rounded);
}

function roundShift(value: number, shift: number): number {
  const half = 1 << (shift - 1);
  const truncated = value >>> shift;
  const remainder = value & ((1 << shift) - 1);
  if (remainder > half || (remainder === half && truncated & 1)) return truncated + 1;
  return truncated;
}

/** Encode float32 values into the bytes of `dtype` (little-endian), for writing checkpoints. */
export function encodeFloats(dtype: DType, values: Float32Array): Uint8Array {
  if (dtype === 'f32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint16Array(values.length);
  const encode = dtype === 'bf16' ? float32ToBf16Bits : float32ToF16Bits;
  for (let i = 0; i < values.length; i++) out[i] = encode(values[i]!);
  return new Uint8Array(out.buffer);
}
