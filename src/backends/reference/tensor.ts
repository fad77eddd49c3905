/**
 * Storage of the reference backend: a typed array holding the bits of its dtype, row-major. Activations are
 * float32, or float64 on a float64 backend (gradient checks); an op's output is float64 when any float input is.
 */
import type { Tensor, TensorDType } from '../../core/backend.js';
import { typedView, widenInto, type DType } from '../../core/dtype.js';
import { OlmoeError } from '../../core/errors.js';

export type Floats = Float32Array | Float64Array;
/** f32/f64 values, bf16/f16 bit patterns, or the bytes of quantized blocks. */
export type Storage = Floats | Uint16Array | Uint8Array;

export class RefTensor implements Tensor {
  /** The native backend's gradient accumulators (`empty`): no values yet, the first op writes them. */
  unwritten = false;

  constructor(
    readonly dtype: TensorDType,
    readonly shape: readonly number[],
    readonly data: Storage,
  ) {}

  get rows(): number {
    return this.shape.length === 1 ? 1 : this.shape[0]!;
  }

  /** Elements per row (the last dimension). */
  get cols(): number {
    return this.shape[this.shape.length - 1]!;
  }

  /** Row `row` as floats: a view for f32/f64 storage (when `out` is of the same kind), else widened into `out`. */
  readRow(row: number, out: Floats): Floats {
    const at = row * this.cols;
    if (this.dtype === 'f64' || (this.dtype === 'f32' && out instanceof Float32Array)) return (this.data as Floats).subarray(at, at + this.cols);
    if (this.dtype === 'f32') out.set((this.data as Float32Array).subarray(at, at + this.cols));
    else if (out instanceof Float32Array) widenInto(this.dtype, this.data, at, this.cols, out);
    else out.set(widened(this.dtype, this.data, at, this.cols));
    return out;
  }
}

function widened(dtype: DType, data: Storage, at: number, count: number): Float32Array {
  const out = new Float32Array(count);
  widenInto(dtype, data, at, count, out);
  return out;
}

export function activation(data: Floats, shape: readonly number[]): RefTensor {
  return new RefTensor(data instanceof Float64Array ? 'f64' : 'f32', shape, data);
}

export function asRef(x: Tensor): RefTensor {
  if (!(x instanceof RefTensor)) throw new OlmoeError('input', 'tensor does not belong to this backend');
  return x;
}

/** The values of an activation tensor (f32 or f64). */
export function floats(x: Tensor): Floats {
  const t = asRef(x);
  if (t.dtype !== 'f32' && t.dtype !== 'f64') throw new OlmoeError('input', `expected an f32 or f64 activation, got ${t.dtype}`);
  return t.data as Floats;
}

/** Float32 values of an f32 activation (the native kernels' operands). */
export function f32(x: Tensor): Float32Array {
  const t = asRef(x);
  if (t.dtype !== 'f32') throw new OlmoeError('input', `expected an f32 activation, got ${t.dtype}`);
  return t.data as Float32Array;
}

/** Every value of a tensor as floats of its precision (weights widened). */
export function valuesOf(x: Tensor): Floats {
  const t = asRef(x);
  if (t.dtype === 'f32' || t.dtype === 'f64') return t.data as Floats;
  return widened(t.dtype, t.data, 0, t.shape.reduce((a, b) => a * b, 1));
}

/** A zeroed array for an op's output: float64 when any of its inputs is, else float32. */
export function allocFor(n: number, ...inputs: readonly Tensor[]): Floats {
  return inputs.some((t) => t.dtype === 'f64') ? new Float64Array(n) : new Float32Array(n);
}

/** Rounding of a stored result: float32 for float32 outputs, none for float64. */
export function roundingOf(values: Floats): (x: number) => number {
  return values instanceof Float64Array ? (x) => x : Math.fround;
}

export const storageFor: (dtype: DType, bytes: Uint8Array) => Storage = typedView;

/** The reference backend is the oracle other backends are tested against: it refuses mismatched shapes. */
export function checkShapes(op: string, ok: boolean, describe: () => string): void {
  if (!ok) throw new OlmoeError('input', `${op}: ${describe()}`);
}

export const showShape = (x: Tensor): string => `[${x.shape.join(', ')}]`;

export const sizeOf = (x: Tensor): number => x.shape.reduce((a, b) => a * b, 1);
