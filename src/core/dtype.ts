/**
 * Element types of weights and activations, and conversions between their bit patterns and float32.
 * bf16 is the upper half of an IEEE float32; f16 is IEEE half precision. Node 20 has no Float16Array,
 * so both are held as Uint16Array bit patterns and widened on the fly. Quantized types are GGUF blocks
 * (core/quant.ts), held as bytes; a row is a whole number of blocks.
 */
import { OlmoeError } from './errors.js';
import { f16Value, float32ToF16Bits } from './f16.js';
import { dequantizeInto, quantize, QUANT_BLOCKS, type QuantDType } from './quant.js';

export { f16Value, float32ToF16Bits } from './f16.js';

export type FloatDType = 'f32' | 'bf16' | 'f16';
export type DType = FloatDType | QuantDType;
export type { QuantDType } from './quant.js';

/** Values per block and bytes per block of every dtype (1 value per "block" for the float types). */
export const DTYPE_BLOCKS: Record<DType, { elements: number; bytes: number }> = {
  f32: { elements: 1, bytes: 4 },
  bf16: { elements: 1, bytes: 2 },
  f16: { elements: 1, bytes: 2 },
  ...QUANT_BLOCKS,
};

export function isQuantized(dtype: DType): dtype is QuantDType {
  return DTYPE_BLOCKS[dtype].elements > 1;
}

/** Bytes of one row of `n` values; quantized rows must hold whole blocks. */
export function rowBytes(dtype: DType, n: number): number {
  const { elements, bytes } = DTYPE_BLOCKS[dtype];
  if (n % elements !== 0) throw new OlmoeError('input', `${dtype} rows must be a multiple of ${elements} values, got ${n}`);
  return (n / elements) * bytes;
}

/** Bytes of a tensor of `dtype` and `shape` (rows of the last dimension). */
export function byteSize(dtype: DType, shape: readonly number[]): number {
  if (shape.length === 0) return rowBytes(dtype, 1);
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  return rows * rowBytes(dtype, shape[shape.length - 1]!);
}

/** safetensors dtype strings ↔ ours. Other safetensors dtypes exist but are not model weights here. */
export const SAFETENSORS_DTYPES: Record<string, DType> = { F32: 'f32', BF16: 'bf16', F16: 'f16' };

export function safetensorsName(dtype: DType): string {
  return dtype.toUpperCase();
}

const f16Table = Float32Array.from({ length: 65536 }, (_, bits) => f16Value(bits));

/** Widen `count` elements of `src` (starting at element `offset`) into `dst` (float32). */
export function widenInto(dtype: DType, src: ArrayBufferView, offset: number, count: number, dst: Float32Array): void {
  if (isQuantized(dtype)) {
    const bytes = src as Uint8Array;
    dequantizeInto(dtype, bytes, rowBytes(dtype, offset), count, dst);
  } else if (dtype === 'f32') {
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

/** Encode float32 values into the bytes of `dtype` (little-endian), for writing checkpoints. */
export function encodeFloats(dtype: DType, values: Float32Array): Uint8Array {
  if (isQuantized(dtype)) return quantize(dtype, values);
  if (dtype === 'f32') return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint16Array(values.length);
  const encode = dtype === 'bf16' ? float32ToBf16Bits : float32ToF16Bits;
  for (let i = 0; i < values.length; i++) out[i] = encode(values[i]!);
  return new Uint8Array(out.buffer);
}


/** Typed view of stored bytes: f32 values, bf16/f16 bit patterns, or the raw bytes of quantized blocks. */
export function typedView(dtype: DType, bytes: Uint8Array): Float32Array | Uint16Array | Uint8Array {
  if (isQuantized(dtype)) return bytes;
  const aligned = bytes.byteOffset % 4 === 0 ? bytes : bytes.slice();
  if (dtype === 'f32') return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4);
  return new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 2);
}
