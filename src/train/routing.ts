/**
 * Routing decisions for training (not differentiable: the chosen sets are constants, the gradient flows
 * through the gathered probabilities). Token choice: each token takes its K most probable experts, dropless
 * (spec §3.6; ties to the lower index). Expert choice (paper §4.1.5, Zhou et al. 2022): each expert takes its
 * C most probable tokens, so some tokens get several experts and some none.
 * Dimension legend: T tokens, E experts, K experts per token, C tokens per expert.
 */
import { indicesByValueDescending } from '../core/sort.js';
import type { Assignments } from './moe-ops.js';

export interface Route {
  readonly assignments: Assignments;
  /** Flat indices t·E + e into the [T, E] probabilities, in weight order. */
  readonly gatherIndex: Int32Array;
}

export function tokenChoice(probs: ArrayLike<number>, tokens: number, numExperts: number, topK: number): Route {
  const gatherIndex = new Int32Array(tokens * topK);
  const lists: number[][] = Array.from({ length: numExperts }, () => []);
  const slots: number[][] = Array.from({ length: numExperts }, () => []);
  const row = new Float64Array(numExperts);
  for (let t = 0; t < tokens; t++) {
    for (let e = 0; e < numExperts; e++) row[e] = probs[t * numExperts + e]!;
    indicesByValueDescending(row)
      .slice(0, topK)
      .forEach((e, k) => {
        gatherIndex[t * topK + k] = t * numExperts + e;
        lists[e]!.push(t);
        slots[e]!.push(t * topK + k);
      });
  }
  return { assignments: { tokens: lists.map((l) => Int32Array.from(l)), weightIndex: slots.map((s) => Int32Array.from(s)) }, gatherIndex };
}

export function expertChoice(probs: ArrayLike<number>, tokens: number, numExperts: number, capacity: number): Route {
  const perExpert = Math.min(capacity, tokens);
  const gatherIndex = new Int32Array(numExperts * perExpert);
  const column = new Float64Array(tokens);
  const lists: Int32Array[] = [];
  const slots: Int32Array[] = [];
  for (let e = 0; e < numExperts; e++) {
    for (let t = 0; t < tokens; t++) column[t] = probs[t * numExperts + e]!;
    const chosen = Int32Array.from(indicesByValueDescending(column).slice(0, perExpert));
    chosen.forEach((t, i) => (gatherIndex[e * perExpert + i] = t * numExperts + e));
    lists.push(chosen);
    slots.push(Int32Array.from(chosen, (_, i) => e * perExpert + i));
  }
  return { assignments: { tokens: lists, weightIndex: slots }, gatherIndex };
}
