/**
 * Sampling as a chain of pure functions over logits (order as in HF's logits processors:
 * repetition penalty → temperature → top-k → top-p → min-p), then a draw with a seeded RNG.
 * Filters mask tokens with -Infinity and never remove the most likely token.
 */
import { InputError } from '../core/errors.js';
import type { Rng } from '../core/rng.js';
import { indicesByValueDescending } from '../core/sort.js';

export interface SamplingOptions {
  /** Always take the most likely token (ties to the lower id); the other options are then ignored. */
  greedy?: boolean;
  temperature?: number; // > 0
  topK?: number; // 0 = off
  topP?: number; // (0, 1]; 1 = off
  minP?: number; // [0, 1); 0 = off
  repetitionPenalty?: number; // > 0; 1 = off
}

export function checkSamplingOptions(o: SamplingOptions): void {
  const bad = (name: string, value: unknown, rule: string) => new InputError(`${name} ${JSON.stringify(value)} is invalid: ${rule}`);
  if (o.temperature !== undefined && !(o.temperature > 0 && Number.isFinite(o.temperature))) throw bad('temperature', o.temperature, 'must be > 0 (use greedy for 0)');
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) throw bad('top-k', o.topK, 'must be an integer ≥ 0');
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw bad('top-p', o.topP, 'must be in (0, 1]');
  if (o.minP !== undefined && !(o.minP >= 0 && o.minP < 1)) throw bad('min-p', o.minP, 'must be in [0, 1)');
  if (o.repetitionPenalty !== undefined && !(o.repetitionPenalty > 0 && Number.isFinite(o.repetitionPenalty))) {
    throw bad('repetition penalty', o.repetitionPenalty, 'must be > 0');
  }
}

/** Index of the largest logit; the lowest index among equals. */
export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

/** CTRL-style penalty (as HF): a seen token's logit is divided by the penalty if positive, else multiplied. */
export function applyRepetitionPenalty(logits: Float32Array, seen: Iterable<number>, penalty: number): Float32Array {
  const out = logits.slice();
  if (penalty === 1) return out;
  for (const id of new Set(seen)) {
    if (id < 0 || id >= out.length) continue;
    const value = out[id]!;
    out[id] = value > 0 ? value / penalty : value * penalty;
  }
  return out;
}

export function applyTemperature(logits: Float32Array, temperature: number): Float32Array {
  return logits.map((value) => value / temperature);
}

export function topKFilter(logits: Float32Array, k: number): Float32Array {
  if (k <= 0 || k >= logits.length) return logits.slice();
  const threshold = indicesByValueDescending(logits, (value) => value > -Infinity)[k - 1]!;
  const cutoff = logits[threshold]!;
  return logits.map((value) => (value < cutoff ? -Infinity : value));
}

/** Keep the smallest set of most likely tokens whose probabilities sum to at least p. */
export function topPFilter(logits: Float32Array, p: number): Float32Array {
  if (p >= 1) return logits.slice();
  const probs = softmax(logits);
  const order = indicesByValueDescending(logits, (value) => value > -Infinity);
  const out = new Float32Array(logits.length).fill(-Infinity);
  let cumulative = 0;
  for (const id of order) {
    out[id] = logits[id]!;
    cumulative += probs[id]!;
    if (cumulative >= p) break;
  }
  return out;
}

/** Keep tokens whose probability is at least minP × the top probability. */
export function minPFilter(logits: Float32Array, minP: number): Float32Array {
  if (minP <= 0) return logits.slice();
  const max = logits[argmax(logits)]!;
  const threshold = max + Math.log(minP); // p_i ≥ minP·p_max  ⇔  logit_i ≥ logit_max + ln(minP)
  return logits.map((value) => (value < threshold ? -Infinity : value));
}

export function softmax(logits: Float32Array): Float64Array {
  const max = logits[argmax(logits)]!;
  const out = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) total += out[i] = Math.exp(logits[i]! - max);
  for (let i = 0; i < out.length; i++) out[i]! /= total;
  return out;
}

/** Draw an index from probabilities with a uniform number u ∈ [0, 1). */
export function drawFromProbabilities(probs: Float64Array, u: number): number {
  let cumulative = 0;
  let last = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i]! === 0) continue;
    last = i;
    cumulative += probs[i]!;
    if (u < cumulative) return i;
  }
  return last; // rounding left u just above the total
}

/** The whole chain: next token id from the logits of the last position. */
export function sampleToken(logits: Float32Array, opts: SamplingOptions, rng: Rng, seen: readonly number[]): number {
  let scores = applyRepetitionPenalty(logits, seen, opts.repetitionPenalty ?? 1);
  if (opts.greedy) return argmax(scores);
  scores = applyTemperature(scores, opts.temperature ?? 1);
  scores = topKFilter(scores, opts.topK ?? 0);
  scores = topPFilter(scores, opts.topP ?? 1);
  scores = minPFilter(scores, opts.minP ?? 0);
  return drawFromProbabilities(softmax(scores), rng());
}
