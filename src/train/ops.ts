/**
 * Differentiable dense ops: each computes its forward value and records its backward rule on the tape.
 * Every rule is checked against central finite differences in float64 (test/train-gradcheck.test.ts).
 * Dimension legend: T tokens, In/Out linear sides, N normalized width, H heads, Hd head dim, V vocab.
 */
import { InputError } from '../core/errors.js';
import type { Floats, Tape, Var } from './autograd.js';

function expectShape(op: string, ok: boolean, detail: () => string): void {
  if (!ok) throw new InputError(`${op}: ${detail()}`);
}

/** table [V, D], ids [T] → [T, D]; the gradient scatter-adds into the rows that were read. */
export function embedding(tape: Tape, table: Var, ids: Int32Array): Var {
  const [vocab, width] = table.shape as [number, number];
  const bad = ids.findIndex((id) => !(id >= 0 && id < vocab));
  expectShape('embedding', bad < 0, () => `token id ${ids[bad]} outside the table of ${vocab} rows`);
  const data = tape.alloc(ids.length * width);
  ids.forEach((id, t) => data.set(table.data.subarray(id * width, (id + 1) * width), t * width));
  const out = tape.output(data, [ids.length, width], [table]);
  tape.record(out, (dy) => {
    const dTable = tape.gradOf(table);
    ids.forEach((id, t) => {
      for (let i = 0; i < width; i++) dTable[id * width + i]! += dy[t * width + i]!;
    });
  });
  return out;
}

/** x [T, In] · w [Out, In]ᵀ → [T, Out] (PyTorch Linear, no bias). */
export function linear(tape: Tape, x: Var, w: Var): Var {
  const [outDim, inDim] = w.shape as [number, number];
  const tokens = x.size / inDim;
  expectShape('linear', x.shape[x.shape.length - 1] === inDim, () => `x [${x.shape}] does not match weight [${w.shape}]`);
  const data = tape.alloc(tokens * outDim);
  tape.kernels.gemm({ m: tokens, n: outDim, k: inDim, a: x.data, b: w.data, c: data, transB: true });
  const out = tape.output(data, [tokens, outDim], [x, w]);
  tape.record(out, (dy) => {
    // dx [T, In] = dy [T, Out] · w [Out, In];  dw [Out, In] += dyᵀ · x
    if (x.requiresGrad) tape.kernels.gemm({ m: tokens, n: inDim, k: outDim, a: dy, b: w.data, c: tape.gradOf(x), accumulate: true });
    if (w.requiresGrad) tape.kernels.gemm({ m: outDim, n: inDim, k: tokens, a: dy, b: x.data, c: tape.gradOf(w), transA: true, accumulate: true });
  });
  return out;
}

/** y = x / sqrt(mean(x²) + eps) ⊙ weight over rows of width N (spec §3.1). */
export function rmsnorm(tape: Tape, x: Var, weight: Var, eps: number): Var {
  const width = weight.size;
  expectShape('rmsnorm', x.size % width === 0, () => `x [${x.shape}] does not match weight [${weight.shape}]`);
  const rows = x.size / width;
  const inverseRms = new Float64Array(rows);
  const data = tape.alloc(x.size);
  for (let r = 0; r < rows; r++) {
    const at = r * width;
    let sumSquares = 0;
    for (let i = 0; i < width; i++) sumSquares += x.data[at + i]! ** 2;
    const scale = (inverseRms[r] = 1 / Math.sqrt(sumSquares / width + eps));
    for (let i = 0; i < width; i++) data[at + i] = x.data[at + i]! * scale * weight.data[i]!;
  }
  const out = tape.output(data, x.shape, [x, weight]);
  tape.record(out, (dy) => {
    const dx = x.requiresGrad ? tape.gradOf(x) : null;
    const dw = weight.requiresGrad ? tape.gradOf(weight) : null;
    for (let r = 0; r < rows; r++) {
      const at = r * width;
      const scale = inverseRms[r]!;
      // With g = dy ⊙ weight: dx = scale·g − x·scale³·(g·x)/N;  dweight = Σ_rows dy ⊙ x·scale.
      let gx = 0;
      for (let i = 0; i < width; i++) gx += dy[at + i]! * weight.data[i]! * x.data[at + i]!;
      const correction = (scale * scale * scale * gx) / width;
      for (let i = 0; i < width; i++) {
        if (dx) dx[at + i]! += scale * dy[at + i]! * weight.data[i]! - x.data[at + i]! * correction;
        if (dw) dw[i]! += dy[at + i]! * x.data[at + i]! * scale;
      }
    }
  });
  return out;
}

export interface RopeArgs {
  readonly positions: Int32Array;
  readonly heads: number;
  readonly headDim: number;
  /**
   * inv_freq[j] for j < Hd/2: float32 as the inference path computes it (spec §3.5), or float64 on a float64 tape
   * (the gradient checks and the PyTorch float64 training golden compute every step in float64).
   */
  readonly inverseFrequencies: Floats;
}

/** NeoX rotary embedding of x [T, H·Hd]: a rotation per (d, d + Hd/2) pair, so the backward rotates back. */
export function rope(tape: Tape, x: Var, args: RopeArgs): Var {
  const { positions, heads, headDim, inverseFrequencies } = args;
  const width = heads * headDim;
  expectShape('rope', x.size === positions.length * width, () => `x [${x.shape}] is not [${positions.length}, ${heads}·${headDim}]`);
  const data = tape.alloc(x.size);
  rotate(x.data, data, args, 1);
  const out = tape.output(data, x.shape, [x]);
  tape.record(out, (dy) => {
    const back = tape.alloc(dy.length);
    rotate(dy, back, { positions, heads, headDim, inverseFrequencies }, -1);
    const dx = tape.gradOf(x);
    for (let i = 0; i < back.length; i++) dx[i]! += back[i]!;
  });
  return out;
}

function rotate(src: Floats, dst: Floats, args: RopeArgs, direction: 1 | -1): void {
  const { positions, heads, headDim, inverseFrequencies } = args;
  const half = headDim / 2;
  positions.forEach((position, t) => {
    for (let j = 0; j < half; j++) {
      // float32 angle, as PyTorch forms θ = p · inv_freq in float32 before cos/sin (float64 on a float64 tape)
      const angle = inverseFrequencies instanceof Float32Array ? Math.fround(position * inverseFrequencies[j]!) : position * inverseFrequencies[j]!;
      const cos = Math.cos(angle);
      const sin = direction * Math.sin(angle);
      for (let h = 0; h < heads; h++) {
        const at = t * heads * headDim + h * headDim + j;
        const a = src[at]!;
        const b = src[at + half]!;
        dst[at] = a * cos - b * sin;
        dst[at + half] = b * cos + a * sin;
      }
    }
  });
}

export function add(tape: Tape, a: Var, b: Var): Var {
  expectShape('add', a.size === b.size, () => `[${a.shape}] + [${b.shape}]`);
  const data = tape.alloc(a.size);
  for (let i = 0; i < data.length; i++) data[i] = a.data[i]! + b.data[i]!;
  const out = tape.output(data, a.shape, [a, b]);
  tape.record(out, (dy) => {
    for (const input of [a, b]) {
      if (!input.requiresGrad) continue;
      const grad = tape.gradOf(input);
      for (let i = 0; i < dy.length; i++) grad[i]! += dy[i]!;
    }
  });
  return out;
}

/** Σ_i coefficients[i] · terms[i] over scalar values. */
export function weightedSum(tape: Tape, terms: readonly Var[], coefficients?: readonly number[]): Var {
  const coefficient = (i: number) => coefficients?.[i] ?? 1;
  const data = tape.alloc(1);
  terms.forEach((term, i) => (data[0]! += coefficient(i) * term.item()));
  const out = tape.output(data, [1], terms);
  tape.record(out, (dy) => terms.forEach((term, i) => term.requiresGrad && (tape.gradOf(term)[0]! += coefficient(i) * dy[0]!)));
  return out;
}

/** Token targets; a negative target is ignored (not counted in the mean). */
export const IGNORE_TARGET = -1;

/** Mean over counted tokens of −log softmax(logits)[target]; logits [T, V]. */
export function crossEntropy(tape: Tape, logits: Var, targets: Int32Array): Var {
  const vocab = logits.shape[1]!;
  expectShape('crossEntropy', logits.size === targets.length * vocab, () => `logits [${logits.shape}] for ${targets.length} targets`);
  const bad = targets.findIndex((id) => id >= vocab || (id < 0 && id !== IGNORE_TARGET));
  expectShape('crossEntropy', bad < 0, () => `target ${targets[bad]} outside the vocabulary of ${vocab}`);
  // Softmax rows kept from the forward (the backward is softmax − one-hot), so exp runs once per logit.
  const probs = logits.requiresGrad ? tape.alloc(logits.size) : null;
  let total = 0;
  let counted = 0;
  targets.forEach((target, t) => {
    const at = t * vocab;
    const lse = rowLogSumExp(logits.data, at, vocab);
    if (probs) for (let i = 0; i < vocab; i++) probs[at + i] = Math.exp(logits.data[at + i]! - lse);
    if (target === IGNORE_TARGET) return;
    total += lse - logits.data[at + target]!;
    counted++;
  });
  const data = tape.alloc(1);
  data[0] = counted ? total / counted : 0;
  const out = tape.output(data, [1], [logits]);
  tape.record(out, (dy) => {
    const dLogits = tape.gradOf(logits);
    const scale = dy[0]! / Math.max(counted, 1);
    targets.forEach((target, t) => {
      if (target === IGNORE_TARGET) return;
      const at = t * vocab;
      for (let i = 0; i < vocab; i++) dLogits[at + i]! += scale * probs![at + i]!;
      dLogits[at + target]! -= scale;
    });
  });
  return out;
}

export function rowLogSumExp(values: Floats, at: number, width: number): number {
  let max = -Infinity;
  for (let i = 0; i < width; i++) max = Math.max(max, values[at + i]!);
  let sum = 0;
  for (let i = 0; i < width; i++) sum += Math.exp(values[at + i]! - max);
  return max + Math.log(sum);
}
