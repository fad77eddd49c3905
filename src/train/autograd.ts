/**
 * Tape-based reverse mode. Every op records a closure that reads its output's gradient and adds into its
 * inputs' gradients; `backward` replays the closures last to first. One tape computes in one precision:
 * float64 for the gradient checks, float32 for training. Heavy products go through `GemmKernels`, so the
 * native backend's kernels serve training too (ARCHITECTURE.md: backward kernels belong to the backends).
 */
import { InputError } from '../core/errors.js';
import type { GemmKernels } from './kernels.js';

export type Floats = Float32Array | Float64Array;
export type Precision = 'f32' | 'f64';

/** A value on the tape: row-major data, and (once backward reaches it) its gradient of the same size. */
export class Var {
  grad: Floats | null;
  constructor(
    readonly data: Floats,
    readonly shape: readonly number[],
    readonly requiresGrad: boolean,
    grad: Floats | null = null,
  ) {
    this.grad = grad;
  }

  get size(): number {
    return this.data.length;
  }

  /** The scalar of a one-element value (a loss). */
  item(): number {
    return this.data[0]!;
  }
}

export class Tape {
  private readonly steps: Array<() => void> = [];

  /** With `grad: false` (evaluation) leaves are constants, so no backward step is recorded. */
  constructor(
    readonly precision: Precision,
    readonly kernels: GemmKernels,
    readonly opts: { readonly grad?: boolean } = {},
  ) {}

  alloc(length: number): Floats {
    return this.precision === 'f64' ? new Float64Array(length) : new Float32Array(length);
  }

  /** A trainable leaf. Its gradient accumulates into `grad` (owned by the optimizer), across micro-batches. */
  leaf(data: Floats, shape: readonly number[], grad?: Floats): Var {
    checkSize(data.length, shape);
    return new Var(data, shape, this.opts.grad ?? true, grad ?? null);
  }

  constant(data: Floats, shape: readonly number[]): Var {
    checkSize(data.length, shape);
    return new Var(data, shape, false);
  }

  /** The output of an op whose inputs include `inputs`; it needs a gradient when any of them does. */
  output(data: Floats, shape: readonly number[], inputs: readonly Var[]): Var {
    return new Var(data, shape, inputs.some((v) => v.requiresGrad));
  }

  /** Record the backward step of an op producing `out`; skipped when nothing upstream needs a gradient. */
  record(out: Var, step: (outGrad: Floats) => void): void {
    if (!out.requiresGrad) return;
    this.steps.push(() => {
      if (out.grad) step(out.grad);
    });
  }

  /** The gradient buffer of `v`, allocated (zeroed) on first use. */
  gradOf(v: Var): Floats {
    if (!v.grad) v.grad = this.alloc(v.size);
    return v.grad;
  }

  /** d(scale · loss)/d(every value on the tape); loss must be a scalar. */
  backward(loss: Var, scale = 1): void {
    if (loss.size !== 1) throw new InputError(`backward needs a scalar loss, got shape [${loss.shape.join(', ')}]`);
    this.gradOf(loss)[0]! += scale;
    for (let i = this.steps.length - 1; i >= 0; i--) this.steps[i]!();
    this.steps.length = 0;
  }
}

function checkSize(length: number, shape: readonly number[]): void {
  const expected = shape.reduce((a, b) => a * b, 1);
  if (expected !== length) throw new InputError(`data of ${length} values does not fit shape [${shape.join(', ')}]`);
}
