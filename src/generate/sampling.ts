/**
 * Sampling as a chain of pure functions over logits (order as in HF's logits processors:
 * repetition penalty → temperature → top-k → top-p → min-p), then a draw with a seeded RNG.
 * Filters mask tokens with -Infinity and never remove the most likely token. None writes its input: each returns a
 * new array (or `out`, where given: not the input), or the input itself when it changes nothing.
 */
import { InputError } from '../core/errors.js';
import type { Rng } from '../core/rng.js';
import { topIndicesDescending } from '../core/sort.js';

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

/** Whether a score is left (not masked): one function for every call of topIndicesDescending. */
const finite = (value: number): boolean => value > -Infinity;

/** Index of the largest logit; the lowest index among equals. */
export function argmax(logits: Float32Array): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

/** CTRL-style penalty (as HF): a seen token's logit is divided by the penalty if positive, else multiplied. */
export function applyRepetitionPenalty(logits: Float32Array, seen: Iterable<number>, penalty: number): Float32Array {
  if (penalty === 1) return logits;
  const out = logits.slice();
  for (const id of new Set(seen)) {
    if (id < 0 || id >= out.length) continue;
    const value = out[id]!;
    out[id] = value > 0 ? value / penalty : value * penalty;
  }
  return out;
}

export function applyTemperature(logits: Float32Array, temperature: number, out: Float32Array = new Float32Array(logits.length)): Float32Array {
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! / temperature;
  return out;
}

export function topKFilter(logits: Float32Array, k: number, out?: Float32Array): Float32Array {
  if (k <= 0 || k >= logits.length) return logits;
  const top = topIndicesDescending(logits, k, finite);
  if (top.length < k) return logits; // k or fewer tokens left: all stay
  return masked(logits, logits[top[k - 1]!]!, out);
}

/** Keep the smallest set of most likely tokens whose probabilities sum to at least p. */
export function topPFilter(logits: Float32Array, p: number, out?: Float32Array): Float32Array {
  if (p >= 1) return logits;
  const probs = softmax(logits);
  // The most likely tokens, in growing numbers until they reach p (a peaked distribution needs few); past a 16th of
  // the vocabulary a sort of all probabilities is faster.
  for (let count = 64; count <= logits.length / 16; count *= 4) {
    const order = topIndicesDescending(logits, count, finite);
    let cumulative = 0;
    for (let j = 0; j < order.length; j++) {
      cumulative += probs[order[j]!]!;
      if (cumulative >= p) return kept(logits, order.slice(0, j + 1), out);
    }
    if (order.length < count) return kept(logits, order, out); // every token left, short of p
  }
  return topPSorted(logits, probs, p, out);
}

/**
 * topPFilter by a sort of the probabilities: summed from the largest, the same terms in the same order as the tokens
 * by logit (a larger logit has the larger probability), so the same cut; at the cut, equal ones go by index.
 */
function topPSorted(logits: Float32Array, probs: Float64Array, p: number, out: Float32Array = new Float32Array(logits.length)): Float32Array {
  const finite = new Float64Array(logits.length);
  let count = 0;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > -Infinity) finite[count++] = probs[i]!;
  const sorted = finite.subarray(0, count).sort();
  let cumulative = 0;
  let cut = -1;
  let ties = 0; // tokens at the cut's probability that stay
  for (let j = sorted.length - 1; j >= 0; j--) {
    cumulative += sorted[j]!;
    if (cumulative >= p) {
      cut = sorted[j]!;
      for (let k = j; k < sorted.length && sorted[k] === cut; k++) ties++;
      break;
    }
  }
  out.fill(-Infinity);
  for (let i = 0; i < logits.length; i++) {
    if (!(logits[i]! > -Infinity)) continue;
    if (probs[i]! > cut || (probs[i] === cut && ties-- > 0)) out[i] = logits[i]!;
  }
  return out;
}

/** -Infinity but at `ids`. */
function kept(logits: Float32Array, ids: readonly number[], out: Float32Array = new Float32Array(logits.length)): Float32Array {
  out.fill(-Infinity);
  for (const id of ids) out[id] = logits[id]!;
  return out;
}

/** Keep tokens whose probability is at least minP × the top probability. */
export function minPFilter(logits: Float32Array, minP: number, out?: Float32Array): Float32Array {
  if (minP <= 0) return logits;
  const max = logits[argmax(logits)]!;
  return masked(logits, max + Math.log(minP), out); // p_i ≥ minP·p_max  ⇔  logit_i ≥ logit_max + ln(minP)
}

/** logits with the values below `threshold` set to -Infinity, into `out` (else a new array). */
function masked(logits: Float32Array, threshold: number, out: Float32Array = new Float32Array(logits.length)): Float32Array {
  for (let i = 0; i < logits.length; i++) out[i] = logits[i]! < threshold ? -Infinity : logits[i]!;
  return out;
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

/** The chain's two working arrays (each step writes the one it does not read): a fresh 200 KB a step cost page faults. */
const working = [new Float32Array(0), new Float32Array(0)];
/** Whichever working array is not `input`, `length` long. */
function workingOther(input: Float32Array, length: number): Float32Array {
  const at = working[0] === input ? 1 : 0;
  if (working[at]!.length !== length) working[at] = new Float32Array(length);
  return working[at]!;
}

/** The whole chain: next token id from the logits of the last position. */
export function sampleToken(logits: Float32Array, opts: SamplingOptions, rng: Rng, seen: readonly number[]): number {
  let scores = applyRepetitionPenalty(logits, seen, opts.repetitionPenalty ?? 1);
  if (opts.greedy) return argmax(scores);
  const topK = opts.topK ?? 0;
  if (topK > 0 && topK <= scores.length / 4) {
    const candidates = topKCandidates(scores, topK, opts.temperature ?? 1);
    if (candidates) return sampleAmong(candidates, opts, rng);
  }
  scores = applyTemperature(scores, opts.temperature ?? 1, workingOther(scores, scores.length));
  scores = topKFilter(scores, opts.topK ?? 0, workingOther(scores, scores.length));
  scores = topPFilter(scores, opts.topP ?? 1, workingOther(scores, scores.length));
  scores = minPFilter(scores, opts.minP ?? 0, workingOther(scores, scores.length));
  // The draw over the tokens the filters left (top-k's 50 of 50,304): the same nonzero probabilities in the same order
  // (a masked token's exp is exactly 0, adding nothing to the total), so the same token for the same u.
  let count = 0;
  for (let i = 0; i < scores.length; i++) if (scores[i]! > -Infinity) count++;
  if (count > scores.length / 4) return drawFromProbabilities(softmax(scores), rng());
  const [ids, values] = [new Int32Array(count), new Float32Array(count)];
  for (let i = 0, j = 0; i < scores.length; i++) if (scores[i]! > -Infinity) [ids[j], values[j++]] = [i, scores[i]!];
  return ids[drawFromProbabilities(softmax(values), rng())]!;
}

/** Tokens `ids` (ascending) and their values after temperature, the rest of the vocabulary masked. */
interface Candidates {
  readonly ids: Int32Array;
  readonly values: Float32Array;
}

/**
 * The tokens top-k keeps after temperature, as the chain computes them over the whole vocabulary (applyTemperature,
 * then topKFilter): temperature's float32 rounding is monotonic, so the k-th largest value after it is the k-th
 * largest logit's, and a token stays when its own value after it is at least that (ties included). Null when fewer
 * than k tokens are left (top-k then keeps all of them: the chain's own path).
 */
function topKCandidates(scores: Float32Array, k: number, temperature: number): Candidates | null {
  const top = topIndicesDescending(scores, k, finite);
  if (top.length < k) return null;
  const cutoff = Math.fround(scores[top[k - 1]!]! / temperature);
  // Only a logit above `loose` can reach the cutoff (one comparison for most of the vocabulary): rounded to float32,
  // s / T ≥ cutoff needs s / T above the next float32 below the cutoff; the margin covers the product's rounding.
  const below = (cutoff - Math.abs(cutoff) * 2 ** -23 - 2 ** -149) * temperature;
  const loose = below - Math.abs(below) * 2 ** -40;
  const ids = atOrAbove(scores, loose, cutoff, temperature);
  return { ids: Int32Array.from(ids), values: Float32Array.from(ids, (i) => Math.fround(scores[i]! / temperature)) };
}

/** The tokens whose score reaches `cutoff` after temperature (`loose`: a bound below which none does). */
function atOrAbove(scores: Float32Array, loose: number, cutoff: number, temperature: number): number[] {
  const ids: number[] = [];
  for (let i = 0; i < scores.length; i++) if (scores[i]! >= loose && Math.fround(scores[i]! / temperature) >= cutoff) ids.push(i);
  return ids;
}

/**
 * sampleToken's top-p, min-p and draw over the tokens top-k left (topKCandidates), with the same numbers as over the
 * whole vocabulary: a masked token's probability is exactly 0, so softmax, the top-p order and its sums, min-p's
 * maximum and the draw's cumulative sums are the same over the candidates alone (test/sampling.test.ts checks the
 * token for evenly spaced draws). Decode's sampling with top-k over OLMoE's 50,304 logits took ~0.7–1.5 ms a token
 * by the whole-vocabulary chain.
 */
function sampleAmong(candidates: Candidates, opts: SamplingOptions, rng: Rng): number {
  let values = topPFilter(candidates.values, opts.topP ?? 1);
  values = minPFilter(values, opts.minP ?? 0);
  let count = 0;
  for (let i = 0; i < values.length; i++) if (values[i]! > -Infinity) count++;
  const [ids, left] = [new Int32Array(count), new Float32Array(count)];
  for (let i = 0, j = 0; i < values.length; i++) if (values[i]! > -Infinity) [ids[j], left[j++]] = [candidates.ids[i]!, values[i]!];
  return ids[drawFromProbabilities(softmax(left), rng())]!;
}
