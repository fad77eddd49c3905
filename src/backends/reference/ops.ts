/**
 * Reference implementations of the dense ops, written to be read: float32 storage, double accumulation.
 * Dimension legend: T tokens, In/Out matmul sides, Hd head dim.
 */
import type { RopeOptions, Tensor } from '../../core/backend.js';
import { isQuantized } from '../../core/dtype.js';
import { ropeInverseFrequencies } from '../../core/rope.js';
import { quantizedMatmul } from './quant-matmul.js';
import { activation, asRef, checkShapes, f32, showShape, type RefTensor } from './tensor.js';

/**
 * x [T, In] · w [Out, In]ᵀ → [T, Out]; each weight row is widened once and used for every token. Quantized weights
 * multiply activations rounded to 8-bit blocks, as llama.cpp does (quant-matmul.ts).
 */
export function matmul(x: Tensor, w: Tensor): RefTensor {
  const input = f32(x);
  const weight = asRef(w);
  const [outDim, inDim] = [weight.rows, weight.cols];
  checkShapes('matmul', asRef(x).cols === inDim, () => `x ${showShape(x)} does not match weight ${showShape(w)}`);
  if (isQuantized(weight.dtype)) return quantizedMatmul(input, weight, weight.dtype);
  const tokens = input.length / inDim;
  const out = new Float32Array(tokens * outDim);
  const row = new Float32Array(inDim);
  for (let o = 0; o < outDim; o++) {
    weight.readRow(o, row);
    for (let t = 0; t < tokens; t++) out[t * outDim + o] = dot(input, t * inDim, row, inDim);
  }
  return activation(out, [tokens, outDim]);
}

export function dot(a: Float32Array, aOffset: number, b: Float32Array, length: number): number {
  let sum = 0;
  for (let i = 0; i < length; i++) sum += a[aOffset + i]! * b[i]!;
  return sum;
}

export function embedding(table: Tensor, ids: Int32Array): RefTensor {
  const weights = asRef(table);
  const width = weights.cols;
  const bad = ids.findIndex((id) => !(id >= 0 && id < weights.rows));
  checkShapes('embedding', bad < 0, () => `id ${ids[bad]} outside table ${showShape(table)}`);
  const out = new Float32Array(ids.length * width);
  ids.forEach((id, t) => weights.readRow(id, out.subarray(t * width, (t + 1) * width)));
  return activation(out, [ids.length, width]);
}

/** y = x / sqrt(mean(x²) + eps) · weight, over the last dimension (spec §3.1). */
export function rmsnorm(x: Tensor, weight: Tensor, eps: number): RefTensor {
  const input = f32(x);
  const gain = asRef(weight).readRow(0, new Float32Array(asRef(weight).cols));
  const width = gain.length;
  checkShapes('rmsnorm', asRef(x).cols === width, () => `x ${showShape(x)} does not match weight ${showShape(weight)}`);
  const out = new Float32Array(input.length);
  for (let start = 0; start < input.length; start += width) {
    let sumSquares = 0;
    for (let i = 0; i < width; i++) sumSquares += input[start + i]! ** 2;
    const scale = Math.fround(1 / Math.sqrt(sumSquares / width + eps));
    // Normalize, round to float32, then apply the gain: HF casts before multiplying by the weight.
    for (let i = 0; i < width; i++) out[start + i] = gain[i]! * Math.fround(input[start + i]! * scale);
  }
  return activation(out, asRef(x).shape);
}

/** NeoX rotary embedding: dims (d, d + Hd/2) of each head rotate together by position · invFreq[d]. */
export function rope(x: Tensor, positions: Int32Array, opts: RopeOptions): RefTensor {
  const input = f32(x);
  const { heads, headDim } = opts;
  const half = headDim / 2;
  checkShapes('rope', asRef(x).cols === heads * headDim && asRef(x).rows === positions.length, () => `x ${showShape(x)} is not [${positions.length}, ${heads}·${headDim}]`);
  const invFreq = ropeInverseFrequencies(headDim, opts.theta);
  const out = new Float32Array(input.length);
  positions.forEach((position, t) => {
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(position * invFreq[j]!);
      const cos = Math.fround(Math.cos(angle));
      const sin = Math.fround(Math.sin(angle));
      for (let h = 0; h < heads; h++) {
        const base = (t * heads + h) * headDim;
        const first = input[base + j]!;
        const second = input[base + j + half]!;
        out[base + j] = first * cos - second * sin;
        out[base + j + half] = second * cos + first * sin;
      }
    }
  });
  return activation(out, asRef(x).shape);
}

export function add(a: Tensor, b: Tensor): RefTensor {
  const left = f32(a);
  const right = f32(b);
  checkShapes('add', left.length === right.length, () => `${showShape(a)} + ${showShape(b)}`);
  const out = new Float32Array(left.length);
  for (let i = 0; i < left.length; i++) out[i] = left[i]! + right[i]!;
  return activation(out, asRef(a).shape);
}

export function clamp(x: Tensor, limit: number): RefTensor {
  const input = f32(x);
  const out = input.map((value) => Math.min(limit, Math.max(-limit, value)));
  return activation(out, asRef(x).shape);
}

export function rows(x: Tensor, start: number, count: number): RefTensor {
  const tensor = asRef(x);
  const width = tensor.cols;
  checkShapes('rows', start >= 0 && count >= 0 && start + count <= tensor.rows, () => `rows [${start}, ${start + count}) of ${showShape(x)}`);
  const out = f32(x).slice(start * width, (start + count) * width);
  return activation(out, [count, width]);
}
