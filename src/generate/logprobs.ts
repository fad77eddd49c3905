/**
 * Log-probabilities of tokens as OpenAI's `logprobs` report them: a token's log p under the model's raw logits
 * (log-softmax before any sampling transform — repetition penalty, temperature, top-k/p, min-p change what is drawn,
 * not what the model predicts; vLLM reports the same by default) and the N most likely tokens at that position.
 * Float64 math over one row of V logits.
 */

export interface Logprob {
  id: number;
  logprob: number;
}

export interface TokenLogprob extends Logprob {
  /** The N most likely tokens at this position, most likely first (equal logits: lower id first, as argmax). */
  top: Logprob[];
}

/** `id`'s log-probability under `logits` (one position's row, V values) and the `topN` most likely tokens'. */
export function tokenLogprob(logits: Float32Array, id: number, topN = 0): TokenLogprob {
  const logZ = logSumExp(logits);
  return { id, logprob: logits[id]! - logZ, top: topIndices(logits, topN).map((best) => ({ id: best, logprob: logits[best]! - logZ })) };
}

/** log Σ exp(row), shifted by the maximum so no term overflows. */
function logSumExp(row: Float32Array): number {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  return max + Math.log(sum);
}

/**
 * Indices of the `n` largest values, largest first, lower index first among equals. A partial selection: one pass
 * over V keeping a sorted list of n, so O(V) for the small n of `logprobs` (≤ 20) instead of sorting V values.
 */
export function topIndices(row: Float32Array, n: number): number[] {
  const best: number[] = [];
  if (n <= 0) return best;
  for (let i = 0; i < row.length; i++) {
    const value = row[i]!;
    if (best.length === n && !(value > row[best[n - 1]!]!)) continue; // an equal value keeps the earlier index ahead
    let at = best.length === n ? n - 1 : best.length;
    while (at > 0 && value > row[best[at - 1]!]!) at--;
    if (best.length === n) best.pop();
    best.splice(at, 0, i);
  }
  return best;
}
