/**
 * The learning-rate schedule of OLMoE pretraining (paper Table C3): linear warmup, then cosine decay to a tenth of
 * the peak. Steps count from 0: step s is the (s+1)-th optimizer update.
 */
import { InputError } from '../core/errors.js';

export interface ScheduleOptions {
  peakLr: number;
  /** Updates spent warming up; 0 starts at the peak. */
  warmupSteps: number;
  /** The step at which the cosine reaches its floor. */
  totalSteps: number;
  /** The floor as a share of the peak (OLMoE: 0.1). */
  finalLrRatio: number;
}

/**
 * lr(s) = peak·(s+1)/warmup for s < warmup (so the last warmup step is at the peak and no step has lr 0);
 * then floor + (peak − floor)·(1 + cos(π·(s − warmup)/(total − warmup)))/2 up to `totalSteps`; the floor after.
 */
export function learningRate(step: number, o: ScheduleOptions): number {
  checkSchedule(o);
  if (!Number.isSafeInteger(step) || step < 0) throw new InputError(`learning-rate step ${step}: expected an integer ≥ 0`);
  if (step < o.warmupSteps) return (o.peakLr * (step + 1)) / o.warmupSteps;
  const floor = o.finalLrRatio * o.peakLr;
  if (step >= o.totalSteps) return floor;
  const progress = (step - o.warmupSteps) / (o.totalSteps - o.warmupSteps);
  return floor + ((o.peakLr - floor) * (1 + Math.cos(Math.PI * progress))) / 2;
}

export function checkSchedule(o: ScheduleOptions): void {
  if (!(o.peakLr > 0) || !Number.isFinite(o.peakLr)) throw new InputError(`peakLr ${o.peakLr}: expected a finite number > 0`);
  if (!Number.isSafeInteger(o.warmupSteps) || o.warmupSteps < 0) throw new InputError(`warmupSteps ${o.warmupSteps}: expected an integer ≥ 0`);
  if (!Number.isSafeInteger(o.totalSteps) || o.totalSteps <= o.warmupSteps) {
    throw new InputError(`totalSteps ${o.totalSteps}: expected an integer > warmupSteps (${o.warmupSteps})`);
  }
  if (!(o.finalLrRatio >= 0 && o.finalLrRatio <= 1)) throw new InputError(`finalLrRatio ${o.finalLrRatio}: expected a number in [0, 1]`);
}
