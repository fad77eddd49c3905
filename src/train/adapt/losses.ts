/**
 * Preference losses as pure float64 functions of sequence log-probabilities (Σ log p over a completion's masked
 * tokens), each with its gradient with respect to the policy's log-probs — the only inputs that carry gradient:
 * an engine backpropagates `gradChosen[i]` (etc.) into every masked token's log-prob of that sequence.
 * The loss of a batch is the mean over its examples, as in TRL.
 *
 * - dpo (Rafailov et al. 2023; TRL DPOTrainer loss_type="sigmoid"): z = β·((πc − rc) − (πr − rr)),
 *   loss = −(1−ε)·log σ(z) − ε·log σ(−z) (label smoothing ε, the conservative DPO of TRL).
 * - dpo_norm (open-instruct dpo_tune_cache.py, used for Tülu 3): the same with log-probs divided by the
 *   completion's token count (policy and reference alike).
 * - simpo (Meng et al. 2024; TRL CPOTrainer loss_type="simpo" with cpo_alpha = 0): reference-free,
 *   z = β·(πc/|c| − πr/|r|) − γ.
 * - kto (Ethayarajh et al. 2024; TRL KTOTrainer.kto_loss): with r = π − ref and the KL reference point z₀,
 *   desirable: λD·(1 − σ(β·(r − z₀))), undesirable: λU·(1 − σ(β·(z₀ − r))). z₀ = max(0, mean over mismatched
 *   pairs of π − ref), detached: it passes no gradient (the KTO paper, §4; TRL `.detach()`).
 *
 * Rewards are β × the (normalised, for dpo_norm and simpo) log-ratio; accuracy is the share of pairs whose chosen
 * reward is strictly above the rejected one (TRL's rewards/accuracies), so it is 0 at step 0.
 */
import { InputError } from '../../core/errors.js';

export function logSigmoid(x: number): number {
  return x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x));
}

export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/** The log-probs of one preference pair. Counts are the completions' trained token numbers. */
export interface PairLogprobs {
  readonly policyChosen: number;
  readonly policyRejected: number;
  /** Unused by simpo. */
  readonly referenceChosen: number;
  readonly referenceRejected: number;
  readonly chosenTokens: number;
  readonly rejectedTokens: number;
}

export type PreferenceLossType = 'dpo' | 'dpo_norm' | 'simpo';

export interface PreferenceLossOptions {
  readonly type: PreferenceLossType;
  /** β: DPO's KL strength (TRL default 0.1); SimPO's reward scale (paper: 2–10). */
  readonly beta: number;
  /** ε in [0, 0.5): the assumed share of flipped labels (TRL label_smoothing); default 0. */
  readonly labelSmoothing?: number;
  /** SimPO's target margin γ (paper: 0.5–1.5); default 0. simpo only. */
  readonly gamma?: number;
}

export interface PreferenceMetrics {
  readonly 'rewards/chosen': number;
  readonly 'rewards/rejected': number;
  readonly 'rewards/margins': number;
  readonly 'rewards/accuracies': number;
  readonly 'logps/chosen': number;
  readonly 'logps/rejected': number;
}

export interface PreferenceLossResult {
  /** Mean over pairs. */
  readonly loss: number;
  readonly losses: readonly number[];
  /** ∂loss/∂policyChosen[i] and ∂loss/∂policyRejected[i] (of the mean loss). */
  readonly gradChosen: readonly number[];
  readonly gradRejected: readonly number[];
  readonly metrics: PreferenceMetrics;
}

function checkOptions(opts: PreferenceLossOptions): void {
  if (!(opts.beta > 0) || !Number.isFinite(opts.beta)) throw new InputError(`beta must be a positive number, not ${opts.beta}`);
  const epsilon = opts.labelSmoothing ?? 0;
  if (!(epsilon >= 0 && epsilon < 0.5)) throw new InputError(`label_smoothing must be in [0, 0.5), not ${epsilon}`);
  if (opts.gamma !== undefined && opts.type !== 'simpo') throw new InputError(`gamma is SimPO's margin; the ${opts.type} loss has none`);
}

function checkCounts(pair: PairLogprobs, i: number): void {
  if (!(pair.chosenTokens >= 1 && pair.rejectedTokens >= 1)) throw new InputError(`pair ${i}: a completion has no trained token (chosen ${pair.chosenTokens}, rejected ${pair.rejectedTokens})`);
}

/** The per-pair quantities of a loss type: scale of each policy log-prob into z, and the two rewards. */
function pairTerms(pair: PairLogprobs, opts: PreferenceLossOptions): { z: number; dzChosen: number; dzRejected: number; rewardChosen: number; rewardRejected: number } {
  const { beta } = opts;
  const normalise = opts.type !== 'dpo';
  const chosenScale = normalise ? 1 / pair.chosenTokens : 1;
  const rejectedScale = normalise ? 1 / pair.rejectedTokens : 1;
  const reference = opts.type === 'simpo' ? { chosen: 0, rejected: 0 } : { chosen: pair.referenceChosen * chosenScale, rejected: pair.referenceRejected * rejectedScale };
  const rewardChosen = beta * (pair.policyChosen * chosenScale - reference.chosen);
  const rewardRejected = beta * (pair.policyRejected * rejectedScale - reference.rejected);
  const z = rewardChosen - rewardRejected - (opts.type === 'simpo' ? (opts.gamma ?? 0) : 0);
  return { z, dzChosen: beta * chosenScale, dzRejected: -beta * rejectedScale, rewardChosen, rewardRejected };
}

const mean = (values: readonly number[]) => (values.length === 0 ? 0 : values.reduce((a, b) => a + b, 0) / values.length);

export function preferenceLoss(pairs: readonly PairLogprobs[], opts: PreferenceLossOptions): PreferenceLossResult {
  checkOptions(opts);
  if (pairs.length === 0) throw new InputError('a preference loss needs at least one pair');
  const epsilon = opts.labelSmoothing ?? 0;
  const n = pairs.length;
  const losses: number[] = [];
  const gradChosen: number[] = [];
  const gradRejected: number[] = [];
  const rewards = { chosen: [] as number[], rejected: [] as number[], correct: 0 };
  pairs.forEach((pair, i) => {
    checkCounts(pair, i);
    const t = pairTerms(pair, opts);
    losses.push(-(1 - epsilon) * logSigmoid(t.z) - epsilon * logSigmoid(-t.z));
    const dLossDz = (sigmoid(t.z) - (1 - epsilon)) / n; // d/dz of the mean
    gradChosen.push(dLossDz * t.dzChosen);
    gradRejected.push(dLossDz * t.dzRejected);
    rewards.chosen.push(t.rewardChosen);
    rewards.rejected.push(t.rewardRejected);
    if (t.rewardChosen > t.rewardRejected) rewards.correct++;
  });
  const metrics: PreferenceMetrics = {
    'rewards/chosen': mean(rewards.chosen),
    'rewards/rejected': mean(rewards.rejected),
    'rewards/margins': mean(rewards.chosen.map((c, i) => c - rewards.rejected[i]!)),
    'rewards/accuracies': rewards.correct / n,
    'logps/chosen': mean(pairs.map((p) => p.policyChosen)),
    'logps/rejected': mean(pairs.map((p) => p.policyRejected)),
  };
  return { loss: mean(losses), losses, gradChosen, gradRejected, metrics };
}

/** KTO's reference point: the mean policy − reference log-ratio of the mismatched pairs, clamped at 0 (detached). */
export function ktoKlEstimate(policyKl: readonly number[], referenceKl: readonly number[]): number {
  if (policyKl.length === 0 || policyKl.length !== referenceKl.length) throw new InputError(`the KL estimate needs as many policy as reference log-probs, at least one (got ${policyKl.length} and ${referenceKl.length})`);
  return Math.max(0, mean(policyKl.map((p, i) => p - referenceKl[i]!)));
}

export interface KtoExampleLogprobs {
  readonly policy: number;
  readonly reference: number;
  /** true: desirable. */
  readonly label: boolean;
}

export interface KtoLossOptions {
  readonly beta: number;
  /** λD, λU (TRL defaults 1); the KTO paper keeps λD·nD / (λU·nU) within [1, 4/3]. */
  readonly desirableWeight?: number;
  readonly undesirableWeight?: number;
  /** z₀ from ktoKlEstimate (a constant here: it carries no gradient). */
  readonly kl: number;
}

export interface KtoMetrics {
  readonly 'rewards/chosen': number;
  readonly 'rewards/rejected': number;
  readonly 'rewards/margins': number;
  readonly kl: number;
  readonly 'logps/chosen': number;
  readonly 'logps/rejected': number;
}

export interface KtoLossResult {
  readonly loss: number;
  readonly losses: readonly number[];
  /** ∂loss/∂policy[i] of the mean loss. */
  readonly grad: readonly number[];
  readonly metrics: KtoMetrics;
}

export function ktoLoss(examples: readonly KtoExampleLogprobs[], opts: KtoLossOptions): KtoLossResult {
  const { beta, kl } = opts;
  const weights = { desirable: opts.desirableWeight ?? 1, undesirable: opts.undesirableWeight ?? 1 };
  if (!(beta > 0) || !Number.isFinite(beta)) throw new InputError(`beta must be a positive number, not ${beta}`);
  if (!(weights.desirable >= 0 && weights.undesirable >= 0)) throw new InputError(`desirable/undesirable weights must be ≥ 0 (got ${weights.desirable}, ${weights.undesirable})`);
  if (!(kl >= 0) || !Number.isFinite(kl)) throw new InputError(`the KL reference point must be a finite number ≥ 0, not ${kl}`);
  if (examples.length === 0) throw new InputError('the KTO loss needs at least one example');
  const n = examples.length;
  const losses: number[] = [];
  const grad: number[] = [];
  for (const { policy, reference, label } of examples) {
    const ratio = policy - reference;
    // desirable: 1 − σ(β(r − z₀)); undesirable: 1 − σ(β(z₀ − r)); d(1 − σ(x))/dx = −σ(x)(1 − σ(x)).
    const x = label ? beta * (ratio - kl) : beta * (kl - ratio);
    const weight = label ? weights.desirable : weights.undesirable;
    const s = sigmoid(x);
    losses.push(weight * (1 - s));
    grad.push((weight * -s * (1 - s) * (label ? beta : -beta)) / n);
  }
  const rewardsOf = (label: boolean) => examples.filter((e) => e.label === label).map((e) => beta * (e.policy - e.reference));
  const logpsOf = (label: boolean) => examples.filter((e) => e.label === label).map((e) => e.policy);
  // A kind with no example here has no mean: NaN (the trainer leaves such a metric out of the micro-batch).
  const meanOf = (values: readonly number[]) => (values.length === 0 ? NaN : mean(values));
  const metrics: KtoMetrics = {
    'rewards/chosen': meanOf(rewardsOf(true)),
    'rewards/rejected': meanOf(rewardsOf(false)),
    'rewards/margins': meanOf(rewardsOf(true)) - meanOf(rewardsOf(false)),
    kl,
    'logps/chosen': meanOf(logpsOf(true)),
    'logps/rejected': meanOf(logpsOf(false)),
  };
  return { loss: mean(losses), losses, grad, metrics };
}
