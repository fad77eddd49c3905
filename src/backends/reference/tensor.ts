/** Storage of the reference backend: a typed array holding the bits of its dtype, row-major. */
import type { Tensor } from '../../core/backend.js';
import { typedView, widenInto, type DType } from '../../core/dtype.js';
import { OlmoeError } from '../../core/errors.js';

/** f32 values, bf16/f16 bit patterns, or the bytes of quantized blocks. */
export type Storage = Float32Array | Uint16Array | Uint8Array;

export class RefTensor implements Tensor {
  constructor(
    readonly dtype: DType,
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

  /** Row `row` widened into `out` (float32). */
  readRow(row: number, out: Float32Array): Float32Array {
    widenInto(this.dtype, this.data, row * this.cols, this.cols, out);
    return out;
  }
}

export function activation(data: Float32Array, shape: readonly number[]): RefTensor {
  return new RefTensor('f32', shape, data);
}

export function asRef(x: Tensor): RefTensor {
  if (!(x instanceof RefTensor)) throw new OlmoeError('input', 'tensor does not belong to the reference backend');
  return x;
}

/** Float32 values of an activation tensor (activations are always f32 here). */
export function f32(x: Tensor): Float32Array {
  const t = asRef(x);
  if (t.dtype !== 'f32') throw new OlmoeError('input', `expected an f32 activation, got ${t.dtype}`);
  return t.data as Float32Array;
}

export const storageFor: (dtype: DType, bytes: Uint8Array) => Storage = typedView;

/** The reference backend is the oracle other backends are tested against: it refuses mismatched shapes. */
export function checkShapes(op: string, ok: boolean, describe: () => string): void {
  if (!ok) throw new OlmoeError('input', `${op}: ${describe()}`);
}

export const showShape = (x: Tensor): string => `[${x.shape.join(', ')}]`;
