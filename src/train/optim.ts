/**
 * AdamW and global gradient-norm clipping with the semantics of PyTorch's `torch.optim.AdamW` (decoupled weight
 * decay, bias-corrected moments) and `torch.nn.utils.clip_grad_norm_`, the optimizer of OLMoE (paper Table C3).
 * The update runs on the backend (core/training.ts `adamw`); state is of the parameters' precision (fp32 in training,
 * like PyTorch's).
 */
import type { Tensor } from '../core/backend.js';
import { InputError } from '../core/errors.js';
import type { AdamWTensors, TrainingBackend } from '../core/training.js';

/** One trainable tensor on the backend. `decay` is false for norm gains and other 1-D parameters. */
export interface Param {
  readonly name: string;
  readonly value: Tensor;
  readonly grad: Tensor;
  readonly decay: boolean;
}

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** OLMoE pretraining (paper Table C3): β = (0.9, 0.95), ε = 1e-8, weight decay 0.1. */
export const OLMOE_ADAMW: AdamWOptions = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

/** `step` updates taken so far; first and second moments on the host, one array per param in constructor order. */
export interface AdamWState {
  step: number;
  m: Float32Array[];
  v: Float32Array[];
}

export class AdamW {
  private readonly tensors: readonly AdamWTensors[];
  private readonly opts: AdamWOptions;
  private steps = 0;

  constructor(
    private readonly backend: TrainingBackend,
    private readonly params: readonly Param[],
    opts: Partial<AdamWOptions> = {},
  ) {
    for (const p of params) {
      if (p.grad.shape.join() !== p.value.shape.join()) throw new InputError(`param ${p.name}: grad has shape [${p.grad.shape}], value [${p.value.shape}]`);
    }
    this.opts = validOptions({ ...OLMOE_ADAMW, ...opts });
    this.tensors = params.map((p) => ({ value: p.value, grad: p.grad, m: backend.zeros(p.value.shape), v: backend.zeros(p.value.shape), decay: p.decay }));
  }

  get stepCount(): number {
    return this.steps;
  }

  /** One update of every param from its current grad times `gradScale` (the clipping factor), at learning rate `lr`. */
  step(lr: number, gradScale = 1): void {
    if (!Number.isFinite(lr) || lr < 0) throw new InputError(`learning rate ${lr}: expected a finite number ≥ 0`);
    this.steps += 1;
    this.backend.adamw(this.tensors, { ...this.opts, lr, step: this.steps, gradScale });
  }

  /** A copy of the optimizer state (for checkpoints); later steps do not change it. */
  state(): AdamWState {
    const copy = (t: Tensor) => this.backend.toFloat32(t).slice();
    return { step: this.steps, m: this.tensors.map((t) => copy(t.m)), v: this.tensors.map((t) => copy(t.v)) };
  }

  /** Restore a state saved by state() into an optimizer over the same params (same order and sizes). */
  load(state: AdamWState): void {
    if (!Number.isSafeInteger(state.step) || state.step < 0) throw new InputError(`optimizer state: step ${state.step} is not a count`);
    const size = (t: Tensor) => t.shape.reduce((a, b) => a * b, 1);
    for (const [key, arrays] of [['m', state.m], ['v', state.v]] as const) {
      if (arrays.length !== this.params.length) throw new InputError(`optimizer state: ${arrays.length} ${key} arrays for ${this.params.length} params`);
      this.params.forEach((p, i) => {
        if (arrays[i]!.length !== size(p.value)) throw new InputError(`optimizer state: param ${p.name}: ${key} has ${arrays[i]!.length} elements, the param ${size(p.value)}`);
      });
    }
    this.tensors.forEach((t, i) => {
      this.backend.write(t.m, state.m[i]!);
      this.backend.write(t.v, state.v[i]!);
    });
    this.steps = state.step;
  }
}

function validOptions(o: AdamWOptions): AdamWOptions {
  const check = (key: keyof AdamWOptions, ok: (x: number) => boolean, expected: string) => {
    if (typeof o[key] !== 'number' || !ok(o[key])) throw new InputError(`AdamW ${key} ${o[key]}: expected ${expected}`);
  };
  check('beta1', (b) => b >= 0 && b < 1, 'a number in [0, 1)');
  check('beta2', (b) => b >= 0 && b < 1, 'a number in [0, 1)');
  check('eps', (e) => e > 0 && Number.isFinite(e), 'a finite number > 0');
  check('weightDecay', (w) => w >= 0 && Number.isFinite(w), 'a finite number ≥ 0');
  return o;
}

/**
 * The global L2 norm of all grads, and the factor that clips it to `maxNorm`: as in PyTorch, maxNorm / (norm + 1e-6)
 * whenever that is below 1, else 1. The optimizer applies the factor (`step(lr, scale)`); a non-finite norm comes
 * back with scale 1 and the caller stops (or skips) the step.
 */
export function clipGradNorm(backend: TrainingBackend, params: readonly Pick<Param, 'grad'>[], maxNorm: number): { norm: number; scale: number } {
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) throw new InputError(`max grad norm ${maxNorm}: expected a finite number > 0`);
  const norm = Math.sqrt(backend.sumOfSquares(params.map((p) => p.grad)));
  if (!Number.isFinite(norm)) return { norm, scale: 1 };
  return { norm, scale: Math.min(1, maxNorm / (norm + 1e-6)) };
}

export interface RmsPropOptions {
  /** Smoothing constant of the squared-gradient average (PyTorch `alpha`, default 0.99). */
  alpha: number;
  eps: number;
  /** L2 penalty added to the gradient (PyTorch's RMSprop weight_decay; not decoupled), on `decay` params only. */
  weightDecay: number;
  momentum: number;
}

/**
 * RMSProp with the semantics of PyTorch's `torch.optim.RMSprop` (centered = false), the optimizer the KTO runs of
 * the paper used (appendix G): v ← α·v + (1 − α)·g², buf ← μ·buf + g / (√v + ε), p ← p − lr·buf. The update runs on
 * the host in float64 over each parameter's float32 values (adaptation is the only user; its parameters fit on the
 * host). State as AdamW's for checkpoints: m is the momentum buffer (the last step's direction when μ = 0), v the
 * squared-gradient average.
 */
export class RmsProp {
  private readonly opts: RmsPropOptions;
  private readonly m: Float32Array[];
  private readonly v: Float32Array[];
  private steps = 0;

  constructor(
    private readonly backend: TrainingBackend,
    private readonly params: readonly Param[],
    opts: Partial<RmsPropOptions> = {},
  ) {
    this.opts = { alpha: 0.99, eps: 1e-8, weightDecay: 0, momentum: 0, ...opts };
    const { alpha, eps, weightDecay, momentum } = this.opts;
    if (!(alpha >= 0 && alpha < 1)) throw new InputError(`RMSProp alpha ${alpha}: expected a number in [0, 1)`);
    if (!(eps > 0 && Number.isFinite(eps))) throw new InputError(`RMSProp eps ${eps}: expected a finite number > 0`);
    if (!(weightDecay >= 0 && Number.isFinite(weightDecay))) throw new InputError(`RMSProp weightDecay ${weightDecay}: expected a finite number ≥ 0`);
    if (!(momentum >= 0 && momentum < 1)) throw new InputError(`RMSProp momentum ${momentum}: expected a number in [0, 1)`);
    const size = (p: Param) => p.value.shape.reduce((a, b) => a * b, 1);
    this.m = params.map((p) => new Float32Array(size(p)));
    this.v = params.map((p) => new Float32Array(size(p)));
  }

  get stepCount(): number {
    return this.steps;
  }

  step(lr: number, gradScale = 1): void {
    if (!Number.isFinite(lr) || lr < 0) throw new InputError(`learning rate ${lr}: expected a finite number ≥ 0`);
    this.steps += 1;
    const { alpha, eps, weightDecay, momentum } = this.opts;
    this.params.forEach((p, i) => {
      const value = Float64Array.from(this.backend.toFloat32(p.value));
      const grad = this.backend.toFloat32(p.grad);
      const [m, v] = [this.m[i]!, this.v[i]!];
      const decay = p.decay ? weightDecay : 0;
      for (let j = 0; j < value.length; j++) {
        const g = grad[j]! * gradScale + decay * value[j]!;
        v[j] = alpha * v[j]! + (1 - alpha) * g * g;
        const direction = g / (Math.sqrt(v[j]!) + eps);
        m[j] = momentum > 0 ? momentum * m[j]! + direction : direction;
        value[j] = value[j]! - lr * m[j]!;
      }
      this.backend.write(p.value, this.backend.precision === 'f64' ? value : Float32Array.from(value));
    });
  }

  state(): AdamWState {
    return { step: this.steps, m: this.m.map((a) => a.slice()), v: this.v.map((a) => a.slice()) };
  }

  load(state: AdamWState): void {
    if (!Number.isSafeInteger(state.step) || state.step < 0) throw new InputError(`optimizer state: step ${state.step} is not a count`);
    for (const [key, arrays, own] of [['m', state.m, this.m], ['v', state.v, this.v]] as const) {
      if (arrays.length !== own.length) throw new InputError(`optimizer state: ${arrays.length} ${key} arrays for ${own.length} params`);
      own.forEach((a, i) => {
        if (arrays[i]!.length !== a.length) throw new InputError(`optimizer state: param ${this.params[i]!.name}: ${key} has ${arrays[i]!.length} elements, the param ${a.length}`);
        a.set(arrays[i]!);
      });
    }
    this.steps = state.step;
  }
}

/** What the adaptation trainer needs of an optimizer (AdamW and RMSProp). */
export interface Optimizer {
  step(lr: number, gradScale?: number): void;
  state(): AdamWState;
  load(state: AdamWState): void;
}
