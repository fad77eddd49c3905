/**
 * Reference implementations of the dense ops and their backward rules, written to be read: activations of the
 * backend's precision, double accumulation. Each backward adds into the gradient accumulators it is given.
 * Dimension legend: T tokens, In/Out matmul sides, N normalized width, H heads, Hd head dim.
 */
import type { RopeOptions, Tensor } from '../../core/backend.js';
import { isQuantized } from '../../core/dtype.js';
import { ropeInverseFrequencies } from '../../core/rope.js';
import { quantizedMatmul } from './quant-matmul.js';
import { activation, allocFor, asRef, checkShapes, floats, roundingOf, showShape, sizeOf, type Floats, type RefTensor } from './tensor.js';

/**
 * x [T, In] · w [Out, In]ᵀ → [T, Out]; each weight row is read (widened) once and used for every token. Quantized weights
 * multiply activations rounded to 8-bit blocks, as llama.cpp does (quant-matmul.ts).
 */
export function matmul(x: Tensor, w: Tensor): RefTensor {
  const input = floats(x);
  const weight = asRef(w);
  const [outDim, inDim] = [weight.rows, weight.cols];
  checkShapes('matmul', asRef(x).cols === inDim, () => `x ${showShape(x)} does not match weight ${showShape(w)}`);
  if (weight.dtype !== 'f64' && isQuantized(weight.dtype)) {
    checkShapes('matmul', input instanceof Float32Array, () => `float64 activations with ${weight.dtype} weights (quantized weights are for float32 inference)`);
    return quantizedMatmul(input as Float32Array, weight, weight.dtype);
  }
  const tokens = input.length / inDim;
  const out = allocFor(tokens * outDim, x, w);
  const scratch = allocFor(inDim, x, w);
  for (let o = 0; o < outDim; o++) {
    const row = weight.readRow(o, scratch);
    for (let t = 0; t < tokens; t++) out[t * outDim + o] = dot(input, t * inDim, row, inDim);
  }
  return activation(out, [tokens, outDim]);
}

/** The matrix products an op runs: at the backend's precision as given, or on bf16-rounded operands (bf16.ts). */
export interface Products {
  matmul(x: Tensor, w: Tensor): RefTensor;
  matmulBackward(args: { x: Tensor; w: Tensor; dOut: Tensor; dx: Tensor | null; dw: Tensor | null }): void;
}

export const FULL_PRODUCTS: Products = { matmul, matmulBackward };

export function dot(a: Floats, aOffset: number, b: Floats, length: number): number {
  let sum = 0;
  for (let i = 0; i < length; i++) sum += a[aOffset + i]! * b[i]!;
  return sum;
}

/** dx [T, In] += dy · w;  dw [Out, In] += dyᵀ · x. */
export function matmulBackward(args: { x: Tensor; w: Tensor; dOut: Tensor; dx: Tensor | null; dw: Tensor | null }): void {
  const [x, dy] = [floats(args.x), floats(args.dOut)];
  const weight = asRef(args.w);
  const [outDim, inDim] = [weight.rows, weight.cols];
  const tokens = x.length / inDim;
  const scratch = allocFor(inDim, args.x, args.w);
  const dx = args.dx ? floats(args.dx) : null;
  const dw = args.dw ? floats(args.dw) : null;
  for (let o = 0; o < outDim; o++) {
    const row = weight.readRow(o, scratch);
    for (let t = 0; t < tokens; t++) {
      const g = dy[t * outDim + o]!;
      if (g === 0) continue;
      if (dx) for (let i = 0; i < inDim; i++) dx[t * inDim + i]! += g * row[i]!;
      if (dw) for (let i = 0; i < inDim; i++) dw[o * inDim + i]! += g * x[t * inDim + i]!;
    }
  }
}

export function embedding(table: Tensor, ids: Int32Array): RefTensor {
  const weights = asRef(table);
  const width = weights.cols;
  const bad = ids.findIndex((id) => !(id >= 0 && id < weights.rows));
  checkShapes('embedding', bad < 0, () => `id ${ids[bad]} outside table ${showShape(table)}`);
  const out = allocFor(ids.length * width, table);
  const scratch = allocFor(width, table);
  ids.forEach((id, t) => out.set(weights.readRow(id, scratch), t * width));
  return activation(out, [ids.length, width]);
}

/** The gradient scatter-adds into the rows that were read (repeated ids sum). */
export function embeddingBackward(ids: Int32Array, dOut: Tensor, dTable: Tensor): void {
  const [dy, grad] = [floats(dOut), floats(dTable)];
  const width = asRef(dTable).cols;
  ids.forEach((id, t) => {
    for (let i = 0; i < width; i++) grad[id * width + i]! += dy[t * width + i]!;
  });
}

/** y = x / sqrt(mean(x²) + eps) · weight, over the last dimension (spec §3.1). */
export function rmsnorm(x: Tensor, weight: Tensor, eps: number): RefTensor {
  const input = floats(x);
  const gain = asRef(weight).readRow(0, allocFor(asRef(weight).cols, x));
  const width = gain.length;
  checkShapes('rmsnorm', asRef(x).cols === width, () => `x ${showShape(x)} does not match weight ${showShape(weight)}`);
  const out = allocFor(input.length, x, weight);
  const round = roundingOf(out);
  for (let start = 0; start < input.length; start += width) {
    const scale = round(inverseRms(input, start, width, eps));
    // Normalize, round to the activation type, then apply the gain: HF casts before multiplying by the weight.
    for (let i = 0; i < width; i++) out[start + i] = gain[i]! * round(input[start + i]! * scale);
  }
  return activation(out, asRef(x).shape);
}

function inverseRms(x: Floats, start: number, width: number, eps: number): number {
  let sumSquares = 0;
  for (let i = 0; i < width; i++) sumSquares += x[start + i]! ** 2;
  return 1 / Math.sqrt(sumSquares / width + eps);
}

/** With s = 1/rms and g = dy ⊙ weight: dx += s·g − x·s³·(g·x)/N;  dweight += Σ_rows dy ⊙ x·s. */
export function rmsnormBackward(args: { x: Tensor; weight: Tensor; eps: number; dOut: Tensor; dx: Tensor | null; dWeight: Tensor | null }): void {
  const [x, dy] = [floats(args.x), floats(args.dOut)];
  const gain = asRef(args.weight).readRow(0, allocFor(asRef(args.weight).cols, args.x));
  const width = gain.length;
  const dx = args.dx ? floats(args.dx) : null;
  const dw = args.dWeight ? floats(args.dWeight) : null;
  for (let start = 0; start < x.length; start += width) {
    const s = inverseRms(x, start, width, args.eps);
    let gx = 0;
    for (let i = 0; i < width; i++) gx += dy[start + i]! * gain[i]! * x[start + i]!;
    const correction = (s * s * s * gx) / width;
    for (let i = 0; i < width; i++) {
      if (dx) dx[start + i]! += s * dy[start + i]! * gain[i]! - x[start + i]! * correction;
      if (dw) dw[i]! += dy[start + i]! * x[start + i]! * s;
    }
  }
}

/** NeoX rotary embedding: dims (d, d + Hd/2) of each head rotate together by position · invFreq[d]. */
export function rope(x: Tensor, positions: Int32Array, opts: RopeOptions): RefTensor {
  checkShapes('rope', asRef(x).cols === opts.heads * opts.headDim && asRef(x).rows === positions.length, () => `x ${showShape(x)} is not [${positions.length}, ${opts.heads}·${opts.headDim}]`);
  const out = allocFor(sizeOf(x), x);
  rotate(floats(x), out, positions, opts, 1);
  return activation(out, asRef(x).shape);
}

/** A rotation's gradient is the inverse rotation of the output's gradient. */
export function ropeBackward(dOut: Tensor, positions: Int32Array, opts: RopeOptions, dx: Tensor): void {
  const back = allocFor(sizeOf(dOut), dOut);
  rotate(floats(dOut), back, positions, opts, -1);
  const grad = floats(dx);
  for (let i = 0; i < back.length; i++) grad[i]! += back[i]!;
}

/**
 * Float32 output: float32 frequencies, angle, cos and sin, as PyTorch computes them (spec §3.5). Float64 output:
 * every step in float64 (the gradient checks, and the PyTorch float64 training golden).
 */
function rotate(src: Floats, dst: Floats, positions: Int32Array, opts: RopeOptions, direction: 1 | -1): void {
  const { heads, headDim } = opts;
  const half = headDim / 2;
  const round = roundingOf(dst);
  const invFreq = dst instanceof Float64Array ? Float64Array.from({ length: half }, (_, j) => 1 / opts.theta ** ((2 * j) / headDim)) : ropeInverseFrequencies(headDim, opts.theta);
  positions.forEach((position, t) => {
    for (let j = 0; j < half; j++) {
      const angle = round(position * invFreq[j]!);
      const cos = round(Math.cos(angle));
      const sin = direction * round(Math.sin(angle));
      for (let h = 0; h < heads; h++) {
        const base = (t * heads + h) * headDim;
        const first = src[base + j]!;
        const second = src[base + j + half]!;
        dst[base + j] = first * cos - second * sin;
        dst[base + j + half] = second * cos + first * sin;
      }
    }
  });
}

export function add(a: Tensor, b: Tensor): RefTensor {
  const [left, right] = [floats(a), floats(b)];
  checkShapes('add', left.length === right.length, () => `${showShape(a)} + ${showShape(b)}`);
  const out = allocFor(left.length, a, b);
  for (let i = 0; i < left.length; i++) out[i] = left[i]! + right[i]!;
  return activation(out, asRef(a).shape);
}

export function scale(x: Tensor, factor: number): RefTensor {
  return activation(floats(x).map((v) => v * factor), asRef(x).shape);
}

/** x ⊙ keep / (1 − p): inverted dropout with a given 0/1 mask. */
export function dropout(x: Tensor, keep: Uint8Array, p: number): RefTensor {
  const values = floats(x);
  checkShapes('dropout', keep.length === values.length, () => `${showShape(x)} with a mask of ${keep.length}`);
  const factor = 1 / (1 - p);
  const out = allocFor(values.length, x);
  for (let i = 0; i < values.length; i++) if (keep[i]) out[i] = values[i]! * factor;
  return activation(out, asRef(x).shape);
}

/** target += factor · source. */
export function accumulate(target: Tensor, source: Tensor, factor = 1): void {
  const [dst, src] = [floats(target), floats(source)];
  checkShapes('accumulate', dst.length === src.length, () => `${showShape(target)} += ${showShape(source)}`);
  for (let i = 0; i < src.length; i++) dst[i]! += factor * src[i]!;
}

export function accumulateRows(target: Tensor, start: number, source: Tensor): void {
  const [dst, src] = [floats(target), floats(source)];
  const width = asRef(target).cols;
  checkShapes('accumulateRows', asRef(source).cols === width && start * width + src.length <= dst.length, () => `rows from ${start} of ${showShape(target)} += ${showShape(source)}`);
  for (let i = 0; i < src.length; i++) dst[start * width + i]! += src[i]!;
}

export function clamp(x: Tensor, limit: number): RefTensor {
  return activation(floats(x).map((value) => Math.min(limit, Math.max(-limit, value))), asRef(x).shape);
}

export function rows(x: Tensor, start: number, count: number): RefTensor {
  const tensor = asRef(x);
  const width = tensor.cols;
  checkShapes('rows', start >= 0 && count >= 0 && start + count <= tensor.rows, () => `rows [${start}, ${start + count}) of ${showShape(x)}`);
  return activation(floats(x).slice(start * width, (start + count) * width), [count, width]);
}

export function concatRows(parts: readonly Tensor[]): RefTensor {
  checkShapes('concatRows', parts.length > 0, () => 'no parts');
  const width = asRef(parts[0]!).cols;
  checkShapes('concatRows', parts.every((p) => asRef(p).cols === width), () => `parts of widths ${parts.map((p) => asRef(p).cols).join(', ')}`);
  const out = allocFor(parts.reduce((n, p) => n + sizeOf(p), 0), ...parts);
  let at = 0;
  for (const part of parts) {
    out.set(floats(part), at);
    at += sizeOf(part);
  }
  return activation(out, [out.length / width, width]);
}
