/**
 * LoRA (Hu et al. 2021) on one linear layer y = W·x, W [out, in]: y = W·x + s·B·(A·x) with A [r, in], B [out, r]
 * and s = alpha / r (PEFT's scaling; alpha / √r with use_rslora). Merging writes W + s·B·A into the weight, which
 * computes the same function; B = 0 (PEFT's initialisation) leaves W exactly as it was.
 * Legend: r rank, in / out the layer's input / output features.
 */
import { InputError } from '../../core/errors.js';
import type { Rng } from '../../core/rng.js';

export interface LoraModule {
  /** The adapted module's HF name, e.g. `model.layers.0.self_attn.q_proj`. */
  readonly name: string;
  readonly inFeatures: number;
  readonly outFeatures: number;
  readonly rank: number;
  /** s in y = W·x + s·B·A·x. */
  readonly scaling: number;
  /** [r, in] row-major (PEFT's lora_A.weight). */
  readonly a: Float32Array;
  /** [out, r] row-major (PEFT's lora_B.weight). */
  readonly b: Float32Array;
}

/** PEFT's scaling: alpha / r, or alpha / √r with rank-stabilised LoRA (Kalajdzievski 2023). */
export function loraScaling(alpha: number, rank: number, useRslora = false): number {
  return useRslora ? alpha / Math.sqrt(rank) : alpha / rank;
}

/**
 * A fresh module as PEFT initialises it (init_lora_weights=True): A from kaiming_uniform(a=√5), i.e. uniform in
 * ±1/√in, and B = 0, so the adapted model starts as the base model.
 */
export function initLoraModule(shape: { name: string; inFeatures: number; outFeatures: number }, rank: number, scaling: number, rng: Rng): LoraModule {
  const bound = 1 / Math.sqrt(shape.inFeatures);
  const a = new Float32Array(rank * shape.inFeatures);
  for (let i = 0; i < a.length; i++) a[i] = (2 * rng() - 1) * bound;
  return { ...shape, rank, scaling, a, b: new Float32Array(shape.outFeatures * rank) };
}

/** s·B·A [out, in], accumulated in float64 per element. */
export function loraDelta(module: LoraModule): Float64Array {
  const { inFeatures: n, outFeatures: m, rank: r, a, b, scaling } = module;
  const delta = new Float64Array(m * n);
  for (let o = 0; o < m; o++) {
    for (let k = 0; k < r; k++) {
      const bk = b[o * r + k]!;
      if (bk === 0) continue;
      const row = k * n;
      for (let i = 0; i < n; i++) delta[o * n + i] += bk * a[row + i]!;
    }
  }
  for (let i = 0; i < delta.length; i++) delta[i] *= scaling;
  return delta;
}

/**
 * The merged weight W + s·B·A, rounded once to float32. Where the update is exactly zero the weight is kept as is
 * (adding +0 would turn a −0 weight into +0), so B = 0 reproduces W bit for bit.
 */
export function mergeLora(weight: Float32Array, module: LoraModule): Float32Array {
  if (weight.length !== module.outFeatures * module.inFeatures) {
    throw new InputError(`${module.name}: the weight has ${weight.length} values, the adapter expects [${module.outFeatures}, ${module.inFeatures}]`);
  }
  const delta = loraDelta(module);
  const merged = new Float32Array(weight.length);
  for (let i = 0; i < weight.length; i++) merged[i] = delta[i] === 0 ? weight[i]! : weight[i]! + delta[i]!;
  return merged;
}
