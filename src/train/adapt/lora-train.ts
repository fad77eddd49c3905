/**
 * LoRA on the training model — the contract between the adaptation commands (sft/dpo/kto) and the adapter's
 * place in the one forward definition. attachLora freezes the base, adds A and B of every targeted module as
 * trainable parameters, and makes TrainModel.forward compute y = x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ for them.
 * (Being implemented: until then attachLora refuses, so no run trains a silently unadapted model.)
 */
import { UnsupportedError } from '../../core/errors.js';
import type { Rng } from '../../core/rng.js';
import type { TrainModel, TrainParam } from '../model.js';
import type { LoraSettings } from './peft.js';

export interface LoraTraining {
  /** A and B of every adapted module (PEFT's order); the only parameters the optimizer updates. */
  readonly params: readonly TrainParam[];
  /** The adapted modules' HF names. */
  readonly modules: readonly string[];
  /** Trainable values / all values of base + adapter. */
  readonly trainableCount: number;
  readonly totalCount: number;
  /** Write the adapter in PEFT's layout (adapter_config.json + adapter_model.safetensors), atomically. */
  save(dir: string): void;
}

export function attachLora(_model: TrainModel, _settings: LoraSettings, _rng: Rng): LoraTraining {
  throw new UnsupportedError('LoRA training is not available in this build yet');
}
