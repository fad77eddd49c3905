/**
 * Statistics over an ablation's seeds: mean ± standard error of a final value, the seed-mean validation curve,
 * the tokens a curve needs to reach a target loss (how the paper reads its MoE-vs-dense curves, §4.1.1: "MoE reaches the
 * dense model's final loss with ~3× fewer tokens"), and whether a difference between two variants exceeds seed noise.
 */

export interface MeanSe {
  readonly mean: number;
  /** Standard error of the mean: the sample standard deviation (n − 1 denominator) over √n; NaN for one value. */
  readonly se: number;
  readonly n: number;
}

/** Mean and standard error of the finite values (non-finite ones, e.g. a diverged seed, are left out and not counted). */
export function meanStandardError(values: readonly number[]): MeanSe {
  const finite = values.filter(Number.isFinite);
  const n = finite.length;
  if (n === 0) return { mean: NaN, se: NaN, n: 0 };
  const mean = finite.reduce((s, v) => s + v, 0) / n;
  if (n === 1) return { mean, se: NaN, n };
  const variance = finite.reduce((s, v) => s + (v - mean) ** 2, 0) / (n - 1);
  return { mean, se: Math.sqrt(variance / n), n };
}

/** One evaluation of a run: training tokens seen so far and the validation loss then. */
export interface CurvePoint {
  readonly tokens: number;
  readonly value: number;
}

export interface MeanCurvePoint extends MeanSe {
  readonly tokens: number;
}

/**
 * The seed-mean curve: at every token count that each curve evaluated at, the mean ± standard error over the
 * curves. Token counts some seeds lack (a run cut short) are left out, so every point averages the same seeds.
 */
export function meanCurve(curves: readonly (readonly CurvePoint[])[]): MeanCurvePoint[] {
  if (curves.length === 0) return [];
  const byTokens = curves.map((curve) => new Map(curve.map((p) => [p.tokens, p.value])));
  const shared = [...byTokens[0]!.keys()].filter((t) => byTokens.every((m) => m.has(t))).sort((a, b) => a - b);
  return shared.map((tokens) => ({ tokens, ...meanStandardError(byTokens.map((m) => m.get(tokens)!)) }));
}

/**
 * Training tokens at which `curve` (points in increasing token order) first reaches `target` (value ≤ target),
 * read by linear interpolation between the last evaluation above the target and the first at or below it: the
 * loss between two evaluations is taken to fall linearly in tokens. A curve whose first point is already at or
 * below the target reaches it there; one that never does gives null.
 */
export function tokensToReach(curve: readonly CurvePoint[], target: number): number | null {
  for (let i = 0; i < curve.length; i++) {
    const point = curve[i]!;
    if (!(point.value <= target)) continue;
    if (i === 0) return point.tokens;
    const before = curve[i - 1]!;
    const fraction = (before.value - target) / (before.value - point.value);
    return before.tokens + fraction * (point.tokens - before.tokens);
  }
  return null;
}

/**
 * Does the paper's ordering hold here? `expectedLower` is the variant the paper finds better (lower loss).
 * The difference of the means counts when it exceeds twice its standard error √(SE₁² + SE₂²) (the seeds of the
 * two variants taken as independent samples); below that it is "within noise", as it is with one seed per variant.
 */
export type Verdict = 'yes' | 'no' | 'within noise';

export function verdict(expectedLower: MeanSe, expectedHigher: MeanSe): { verdict: Verdict; difference: number; se: number } {
  const difference = expectedHigher.mean - expectedLower.mean;
  const se = Math.sqrt(expectedLower.se ** 2 + expectedHigher.se ** 2);
  return { verdict: judge(difference, se), difference, se };
}

/**
 * The same question when both variants ran under the same seeds: seed s gives every variant the same data order,
 * so the per-seed differences (higher − lower) cancel what the seed does to both, and their mean ± standard error
 * decides. `lower[i]` and `higher[i]` must come from the same seed.
 */
export function pairedVerdict(expectedLower: readonly number[], expectedHigher: readonly number[]): { verdict: Verdict; difference: number; se: number } {
  const differences = expectedHigher.map((h, i) => h - expectedLower[i]!);
  const { mean, se } = meanStandardError(differences);
  return { verdict: judge(mean, se), difference: mean, se };
}

function judge(difference: number, se: number): Verdict {
  if (!Number.isFinite(se) || !Number.isFinite(difference) || Math.abs(difference) <= 2 * se) return 'within noise';
  return difference > 0 ? 'yes' : 'no';
}
