/**
 * What an ablation's runs say, over seeds: each variant's final validation CE per seed with its mean ± standard
 * error, the seed-mean validation curve, the tokens each variant needs to reach the reference variant's final loss
 * (how the paper reads its MoE-vs-dense curves, §4.1.1), the paper's orderings checked against seed noise, and the compute used.
 * Written to `summary.json` beside the figures.
 */
import { InputError } from '../core/errors.js';
import type { TrainingRun } from './metrics-log.js';
import { meanCurve, meanStandardError, pairedVerdict, tokensToReach, verdict, type CurvePoint, type MeanCurvePoint, type MeanSe, type Verdict } from './ablation-stats.js';

/** CPU time one training run used (`usage.json` in its run folder). */
export interface RunUsage {
  readonly wallSeconds: number;
  /** User + system time of the process over the run, every thread (getrusage). */
  readonly cpuSeconds: number;
  readonly threads: number;
  readonly cpu: string;
}

/** One trained run of one variant under one seed. */
export interface SeedRun {
  readonly variant: string;
  readonly seed: number;
  readonly run: TrainingRun;
  readonly usage?: RunUsage;
}

/** A paper finding as an ordering: `lower` ends with a lower validation loss than `higher`. */
export interface ExpectedOrdering {
  readonly lower: string;
  readonly higher: string;
}

export interface VariantSummary {
  readonly label: string;
  readonly seeds: readonly number[];
  /** Validation CE over all domains at each seed's last evaluation. */
  readonly finalValidCe: readonly number[];
  readonly finalValid: MeanSe;
  readonly finalTrainCe: MeanSe;
  /** Step and tokens of the last evaluation (the same for every seed). */
  readonly finalStep: number;
  readonly finalTokens: number;
  readonly validCurve: readonly MeanCurvePoint[];
}

export interface TokensToReach {
  readonly variant: string;
  readonly reference: string;
  /** The reference's seed-mean final validation CE. */
  readonly target: number;
  /** Tokens the reference trained to reach its final loss (its whole run). */
  readonly referenceTokens: number;
  /** Tokens at which the variant's seed-mean curve reaches the target (interpolated); null if it never does. */
  readonly tokens: number | null;
  /** referenceTokens / tokens: how many times fewer tokens the variant needs; null if it never reaches. */
  readonly ratio: number | null;
  /** The same per seed: each seed's curve against the reference's final loss under that seed (the mean target if it lacks the seed). */
  readonly perSeed: readonly { seed: number; target: number; tokens: number | null; ratio: number | null }[];
  /** Mean ± SE of the per-seed ratios, over the seeds that reach the target. */
  readonly ratioOverSeeds: MeanSe;
}

export interface Finding extends ExpectedOrdering {
  readonly verdict: Verdict;
  /** Per-seed differences (both variants ran under the same seeds) or the difference of independent means. */
  readonly paired: boolean;
  /** mean(higher) − mean(lower): positive when the paper's ordering holds. */
  readonly difference: number;
  readonly se: number;
}

export interface Compute {
  readonly runs: number;
  readonly runsWithUsage: number;
  readonly cpuHours: number;
  readonly wallHours: number;
  readonly cpu: string;
}

export interface AblationSummary {
  readonly ablation: string;
  readonly question: string;
  readonly paper: string;
  readonly variants: readonly VariantSummary[];
  readonly tokensToReach: readonly TokensToReach[];
  readonly findings: readonly Finding[];
  readonly compute: Compute;
  readonly method: string;
}

export const SUMMARY_METHOD =
  'final = validation CE over all domains at the last evaluation; mean ± standard error over seeds (sample SD / √n); ' +
  'tokens-to-reach: first evaluation of the curve at or below the target, linearly interpolated in tokens with the evaluation before it; ' +
  'per-seed tokens-to-reach: each seed against the reference\'s final loss under the same seed; ' +
  'a finding reproduces ("yes") when the difference worse − better exceeds twice its standard error — taken over the per-seed differences when both variants ran the same seeds ' +
  '(seed s gives every variant the same data order), else √(SE₁² + SE₂²) — the opposite order beyond that is "no", otherwise "within noise".';

/** The validation curve (domain "all") of a run, in token order. */
export function validCurve(run: TrainingRun): CurvePoint[] {
  return run.valid.filter((v) => v.domain === 'all' && Number.isFinite(v.ce)).map((v) => ({ tokens: v.tokens, value: v.ce })).sort((a, b) => a.tokens - b.tokens);
}

export function summarizeVariant(label: string, runs: readonly SeedRun[]): VariantSummary {
  const mine = runs.filter((r) => r.variant === label);
  const curves = mine.map((r) => validCurve(r.run));
  const finals = curves.map((c) => c.at(-1)?.value ?? NaN);
  const lastValid = mine[0]?.run.valid.filter((v) => v.domain === 'all').at(-1);
  return {
    label,
    seeds: mine.map((r) => r.seed),
    finalValidCe: finals,
    finalValid: meanStandardError(finals),
    finalTrainCe: meanStandardError(mine.map((r) => r.run.train.at(-1)?.ce ?? NaN)),
    finalStep: lastValid?.step ?? NaN,
    finalTokens: lastValid?.tokens ?? NaN,
    validCurve: meanCurve(curves),
  };
}

/** Tokens `variant` needs to reach `reference`'s seed-mean final validation loss, on its seed-mean curve and per seed. */
export function reachReference(variant: VariantSummary, reference: VariantSummary, runs: readonly SeedRun[]): TokensToReach {
  const target = reference.finalValid.mean;
  const referenceTokens = reference.finalTokens;
  const ratioOf = (tokens: number | null) => (tokens === null || tokens <= 0 ? null : referenceTokens / tokens);
  const tokens = tokensToReach(variant.validCurve.map((p) => ({ tokens: p.tokens, value: p.mean })), target);
  // Per seed, against the reference's final loss under the same seed (same data order) when it ran that seed.
  const perSeed = runs.filter((r) => r.variant === variant.label).map((r) => {
    const index = reference.seeds.indexOf(r.seed);
    const seedTarget = index >= 0 ? reference.finalValidCe[index]! : target;
    const t = tokensToReach(validCurve(r.run), seedTarget);
    return { seed: r.seed, target: seedTarget, tokens: t, ratio: ratioOf(t) };
  });
  return {
    variant: variant.label, reference: reference.label, target, referenceTokens, tokens, ratio: ratioOf(tokens), perSeed,
    ratioOverSeeds: meanStandardError(perSeed.map((s) => s.ratio ?? NaN)),
  };
}

export interface SummaryInput {
  readonly ablation: string;
  readonly question: string;
  readonly paper: string;
  readonly labels: readonly string[];
  /** The variant whose final loss the others must reach (e.g. dense); none: no tokens-to-reach. */
  readonly reference?: string;
  readonly expected: readonly ExpectedOrdering[];
}

export function summarizeAblation(input: SummaryInput, runs: readonly SeedRun[]): AblationSummary {
  const variants = input.labels.map((label) => summarizeVariant(label, runs));
  const byLabel = (label: string) => {
    const found = variants.find((v) => v.label === label);
    if (!found) throw new InputError(`ablation ${input.ablation}: no variant labelled ${JSON.stringify(label)}`);
    return found;
  };
  const reference = input.reference === undefined ? undefined : byLabel(input.reference);
  const tokens = reference ? variants.filter((v) => v !== reference).map((v) => reachReference(v, reference, runs)) : [];
  const findings = input.expected.map((e) => finding(e, byLabel(e.lower), byLabel(e.higher)));
  return { ablation: input.ablation, question: input.question, paper: input.paper, variants, tokensToReach: tokens, findings, compute: computeUsed(runs), method: SUMMARY_METHOD };
}

/** The paper's ordering against seed noise: paired by seed when both variants ran the same seeds (two or more). */
function finding(e: ExpectedOrdering, lower: VariantSummary, higher: VariantSummary): Finding {
  const paired = lower.seeds.length >= 2 && lower.seeds.length === higher.seeds.length && lower.seeds.every((s, i) => higher.seeds[i] === s);
  return { ...e, paired, ...(paired ? pairedVerdict(lower.finalValidCe, higher.finalValidCe) : verdict(lower.finalValid, higher.finalValid)) };
}

/** Total CPU time of the runs that recorded it (runs trained before usage was recorded are counted apart). */
export function computeUsed(runs: readonly SeedRun[]): Compute {
  const recorded = runs.flatMap((r) => (r.usage ? [r.usage] : []));
  const cpus = [...new Set(recorded.map((u) => u.cpu))];
  return {
    runs: runs.length,
    runsWithUsage: recorded.length,
    cpuHours: recorded.reduce((s, u) => s + u.cpuSeconds, 0) / 3600,
    wallHours: recorded.reduce((s, u) => s + u.wallSeconds, 0) / 3600,
    cpu: cpus.join(', ') || 'unknown',
  };
}
