/**
 * AdamW and global gradient-norm clipping with the semantics of PyTorch's `torch.optim.AdamW` (decoupled weight
 * decay, bias-corrected moments) and `torch.nn.utils.clip_grad_norm_`, the optimizer of OLMoE (paper Table C3).
 * State is fp32 like PyTorch's; each element is computed in float64 and rounded once when stored.
 */
import { InputError } from '../core/errors.js';

/** One trainable tensor, flattened. `decay` is false for norm gains and other 1-D parameters. */
export interface Param {
  readonly name: string;
  readonly data: Float32Array;
  readonly grad: Float32Array;
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

/** `step` updates taken so far; first and second moments, one array per param in constructor order. */
export interface AdamWState {
  step: number;
  m: Float32Array[];
  v: Float32Array[];
}

export class AdamW {
  private readonly params: readonly Param[];
  private readonly opts: AdamWOptions;
  private readonly m: Float32Array[];
  private readonly v: Float32Array[];
  private steps = 0;

  constructor(params: readonly Param[], opts: Partial<AdamWOptions> = {}) {
    for (const p of params) {
      if (p.grad.length !== p.data.length) throw new InputError(`param ${p.name}: grad has ${p.grad.length} elements, data ${p.data.length}`);
    }
    this.params = params;
    this.opts = validOptions({ ...OLMOE_ADAMW, ...opts });
    this.m = params.map((p) => new Float32Array(p.data.length));
    this.v = params.map((p) => new Float32Array(p.data.length));
  }

  get stepCount(): number {
    return this.steps;
  }

  /** One update of every param from its current grad, at learning rate `lr`. */
  step(lr: number): void {
    if (!Number.isFinite(lr) || lr < 0) throw new InputError(`learning rate ${lr}: expected a finite number ≥ 0`);
    this.steps += 1;
    const { beta1, beta2 } = this.opts;
    const correction1 = 1 - beta1 ** this.steps;
    const correction2 = 1 - beta2 ** this.steps;
    this.params.forEach((p, i) => this.update(p, this.m[i]!, this.v[i]!, { lr, correction1, correction2 }));
  }

  private update(p: Param, m: Float32Array, v: Float32Array, s: { lr: number; correction1: number; correction2: number }): void {
    const { beta1, beta2, eps, weightDecay } = this.opts;
    // PyTorch decays first (p ← p·(1 − lr·wd)), then applies the Adam step to the decayed value.
    const keep = p.decay ? 1 - s.lr * weightDecay : 1;
    const stepSize = s.lr / s.correction1;
    const sqrtCorrection2 = Math.sqrt(s.correction2);
    const { data, grad } = p;
    for (let j = 0; j < data.length; j++) {
      const g = grad[j]!;
      m[j] = beta1 * m[j]! + (1 - beta1) * g;
      v[j] = beta2 * v[j]! + (1 - beta2) * g * g;
      // lr · m̂ / (√v̂ + ε) with m̂ = m / (1 − β1ᵗ), v̂ = v / (1 − β2ᵗ); uses the stored fp32 moments as PyTorch does
      data[j] = data[j]! * keep - (stepSize * m[j]!) / (Math.sqrt(v[j]!) / sqrtCorrection2 + eps);
    }
  }

  /** A copy of the optimizer state (for checkpoints); later steps do not change it. */
  state(): AdamWState {
    return { step: this.steps, m: this.m.map((a) => a.slice()), v: this.v.map((a) => a.slice()) };
  }

  /** Restore a state saved by state() from an optimizer over the same params (same order and sizes). */
  load(state: AdamWState): void {
    if (!Number.isSafeInteger(state.step) || state.step < 0) throw new InputError(`optimizer state: step ${state.step} is not a count`);
    for (const [key, arrays] of [['m', state.m], ['v', state.v]] as const) {
      if (arrays.length !== this.params.length) throw new InputError(`optimizer state: ${arrays.length} ${key} arrays for ${this.params.length} params`);
      this.params.forEach((p, i) => {
        if (arrays[i]!.length !== p.data.length) throw new InputError(`optimizer state: param ${p.name}: ${key} has ${arrays[i]!.length} elements, the param ${p.data.length}`);
      });
    }
    this.params.forEach((_, i) => {
      this.m[i]!.set(state.m[i]!);
      this.v[i]!.set(state.v[i]!);
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
 * Clip the global L2 norm of all grads to `maxNorm` and return the norm before clipping. As in PyTorch, grads are
 * scaled by maxNorm / (norm + 1e-6) whenever that factor is below 1. A non-finite norm is returned with the grads
 * left as they are: the caller stops (or skips) the step.
 */
export function clipGradNorm(params: readonly Param[], maxNorm: number): number {
  if (!(maxNorm > 0) || !Number.isFinite(maxNorm)) throw new InputError(`max grad norm ${maxNorm}: expected a finite number > 0`);
  let sumSquares = 0;
  for (const { grad } of params) {
    for (let j = 0; j < grad.length; j++) sumSquares += grad[j]! * grad[j]!;
  }
  const norm = Math.sqrt(sumSquares);
  if (!Number.isFinite(norm)) return norm;
  const scale = maxNorm / (norm + 1e-6);
  if (scale < 1) {
    for (const { grad } of params) {
      for (let j = 0; j < grad.length; j++) grad[j] = grad[j]! * scale;
    }
  }
  return norm;
}
