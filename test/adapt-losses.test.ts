/**
 * Preference losses: DPO at policy = reference is ln 2 with zero rewards and margins (the issue's bar); values
 * worked by hand (the literals were computed with Python's math module from the papers' formulas); every
 * gradient with respect to the policy log-probs agrees with float64 central differences; bad options are errors.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { InputError } from '../src/core/errors.js';
import { createRng } from '../src/core/rng.js';
import { ktoKlEstimate, ktoLoss, preferenceLoss, type KtoExampleLogprobs, type PairLogprobs, type PreferenceLossOptions } from '../src/train/adapt/losses.js';

const close = (actual: number, expected: number, tolerance: number, what: string) => assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual} vs ${expected}`);

/** One pair: policy (πc, πr) = (−10, −14), reference (−11, −12), 2 and 4 completion tokens. */
const PAIR: PairLogprobs = { policyChosen: -10, policyRejected: -14, referenceChosen: -11, referenceRejected: -12, chosenTokens: 2, rejectedTokens: 4 };

describe('DPO at step 0 (policy = reference)', () => {
  it('loss is ln 2, rewards and margins are 0, accuracy 0, for dpo and dpo_norm, with and without label smoothing', () => {
    const rng = createRng(3);
    const pairs = Array.from({ length: 7 }, () => {
      const chosen = -50 * rng();
      const rejected = -50 * rng();
      return { policyChosen: chosen, policyRejected: rejected, referenceChosen: chosen, referenceRejected: rejected, chosenTokens: 1 + Math.floor(20 * rng()), rejectedTokens: 1 + Math.floor(20 * rng()) };
    });
    for (const opts of [{ type: 'dpo', beta: 0.1 }, { type: 'dpo_norm', beta: 5 }, { type: 'dpo', beta: 0.1, labelSmoothing: 0.2 }] as PreferenceLossOptions[]) {
      const { loss, losses, metrics } = preferenceLoss(pairs, opts);
      close(loss, Math.LN2, 1e-15, `${JSON.stringify(opts)} loss`);
      for (const l of losses) close(l, Math.LN2, 1e-15, 'each pair');
      assert.equal(metrics['rewards/margins'], 0);
      assert.equal(metrics['rewards/chosen'], 0);
      assert.equal(metrics['rewards/rejected'], 0);
      assert.equal(metrics['rewards/accuracies'], 0, 'no pair is strictly preferred yet');
    }
  });
});

describe('hand-worked values', () => {
  it('dpo: z = β((πc − rc) − (πr − rr)) = 0.1·(1 + 2) = 0.3, loss = −log σ(0.3)', () => {
    const { loss, gradChosen, gradRejected, metrics } = preferenceLoss([PAIR], { type: 'dpo', beta: 0.1 });
    close(loss, 0.5543552444685271, 1e-15, 'loss');
    close(metrics['rewards/chosen'], 0.1, 1e-15, 'chosen reward β(πc − rc)');
    close(metrics['rewards/rejected'], -0.2, 1e-15, 'rejected reward');
    close(metrics['rewards/margins'], 0.3, 1e-15, 'margin');
    assert.equal(metrics['rewards/accuracies'], 1);
    assert.deepEqual([metrics['logps/chosen'], metrics['logps/rejected']], [-10, -14]);
    close(gradChosen[0]!, -0.0425557483188341, 1e-15, '∂/∂πc = β(σ(z) − 1)');
    close(gradRejected[0]!, 0.0425557483188341, 1e-15, '∂/∂πr = −∂/∂πc');
  });

  it('dpo with label smoothing 0.1: 0.9·(−log σ(z)) + 0.1·(−log σ(−z))', () => {
    close(preferenceLoss([PAIR], { type: 'dpo', beta: 0.1, labelSmoothing: 0.1 }).loss, 0.5843552444685272, 1e-15, 'loss');
  });

  it('dpo_norm: per-token log-probs, z = 0.1·((−5 + 5.5) − (−3.5 + 3)) = 0.1', () => {
    const { loss, metrics } = preferenceLoss([PAIR], { type: 'dpo_norm', beta: 0.1 });
    close(loss, 0.6443966600735709, 1e-15, 'loss');
    close(metrics['rewards/margins'], 0.1, 1e-15, 'margin');
  });

  it('simpo (β = 2, γ = 0.5): z = 2·(−10/2 + 14/4) − 0.5 = −3.5, no reference', () => {
    const unrelatedReference = { ...PAIR, referenceChosen: 123, referenceRejected: -456 };
    const { loss, metrics } = preferenceLoss([unrelatedReference], { type: 'simpo', beta: 2, gamma: 0.5 });
    close(loss, 3.5297504182726205, 1e-14, 'loss');
    close(metrics['rewards/chosen'], -10, 1e-15, 'β·πc/|c|');
    close(metrics['rewards/rejected'], -7, 1e-15, 'β·πr/|r|');
    assert.equal(metrics['rewards/accuracies'], 0);
  });

  it('kto (β = 0.1, z₀ = 0.5): desirable r = 2 and undesirable r = −1 both give x = 0.15; λU = 2 doubles the second', () => {
    const examples: KtoExampleLogprobs[] = [{ policy: -8, reference: -10, label: true }, { policy: -11, reference: -10, label: false }];
    const { losses, loss, metrics } = ktoLoss(examples, { beta: 0.1, kl: 0.5, undesirableWeight: 2 });
    close(losses[0]!, 0.4625701546562504, 1e-15, 'desirable 1 − σ(0.15)');
    close(losses[1]!, 0.9251403093125008, 1e-15, 'undesirable 2·(1 − σ(0.15))');
    close(loss, 0.6938552319843756, 1e-15, 'mean');
    close(metrics['rewards/chosen'], 0.2, 1e-15, 'β·r desirable');
    close(metrics['rewards/rejected'], -0.1, 1e-15, 'β·r undesirable');
    close(metrics['rewards/margins'], 0.3, 1e-15, 'margin');
  });

  it('the KL reference point is the mean mismatched log-ratio, clamped at 0', () => {
    close(ktoKlEstimate([-5, -6], [-5.5, -7]), 0.75, 1e-15, 'mean of 0.5 and 1');
    assert.equal(ktoKlEstimate([-6, -7], [-5, -6.5]), 0, 'a negative mean is clamped');
    assert.throws(() => ktoKlEstimate([-1], []), InputError);
  });
});

describe('gradients agree with float64 central differences', () => {
  const h = 1e-6;
  const rng = createRng(11);
  const randomPairs = (n: number): PairLogprobs[] =>
    Array.from({ length: n }, () => ({
      policyChosen: -40 * rng(), policyRejected: -40 * rng(), referenceChosen: -40 * rng(), referenceRejected: -40 * rng(),
      chosenTokens: 1 + Math.floor(30 * rng()), rejectedTokens: 1 + Math.floor(30 * rng()),
    }));

  const options: PreferenceLossOptions[] = [
    { type: 'dpo', beta: 0.1 },
    { type: 'dpo', beta: 0.5, labelSmoothing: 0.3 },
    { type: 'dpo_norm', beta: 5 },
    { type: 'simpo', beta: 2.5, gamma: 1.2 },
    { type: 'simpo', beta: 10, labelSmoothing: 0.1 },
  ];
  for (const opts of options) {
    it(JSON.stringify(opts), () => {
      const pairs = randomPairs(6);
      const result = preferenceLoss(pairs, opts);
      pairs.forEach((_, i) => {
        for (const [key, grad] of [['policyChosen', result.gradChosen[i]!], ['policyRejected', result.gradRejected[i]!]] as const) {
          const at = (delta: number) => preferenceLoss(pairs.map((p, j) => (j === i ? { ...p, [key]: p[key] + delta } : p)), opts).loss;
          const numeric = (at(h) - at(-h)) / (2 * h);
          close(grad, numeric, 1e-8 + 1e-6 * Math.abs(numeric), `pair ${i} ${key}`);
        }
      });
      assert.ok(result.gradChosen.some((g) => Math.abs(g) > 1e-4), 'the check is not vacuous');
    });
  }

  it('kto (z₀ held fixed: it carries no gradient)', () => {
    const examples: KtoExampleLogprobs[] = Array.from({ length: 8 }, (_, i) => ({ policy: -30 * rng(), reference: -30 * rng(), label: i % 3 !== 0 }));
    const opts = { beta: 0.3, kl: 0.7, desirableWeight: 1.5, undesirableWeight: 0.8 };
    const { grad } = ktoLoss(examples, opts);
    examples.forEach((_, i) => {
      const at = (delta: number) => ktoLoss(examples.map((e, j) => (j === i ? { ...e, policy: e.policy + delta } : e)), opts).loss;
      const numeric = (at(h) - at(-h)) / (2 * h);
      close(grad[i]!, numeric, 1e-9 + 1e-6 * Math.abs(numeric), `example ${i}`);
    });
    assert.ok(grad.filter((g, i) => (examples[i]!.label ? g < 0 : g > 0)).length === examples.length, 'raising a desirable log-prob lowers the loss, an undesirable one raises it');
  });
});

describe('bad options are errors', () => {
  it('names the option', () => {
    assert.throws(() => preferenceLoss([PAIR], { type: 'dpo', beta: 0 }), /beta must be a positive number/);
    assert.throws(() => preferenceLoss([PAIR], { type: 'dpo', beta: 0.1, labelSmoothing: 0.5 }), /label_smoothing must be in \[0, 0\.5\)/);
    assert.throws(() => preferenceLoss([PAIR], { type: 'dpo', beta: 0.1, gamma: 1 }), /gamma is SimPO's margin/);
    assert.throws(() => preferenceLoss([{ ...PAIR, rejectedTokens: 0 }], { type: 'dpo_norm', beta: 0.1 }), /pair 0: a completion has no trained token/);
    assert.throws(() => preferenceLoss([], { type: 'dpo', beta: 0.1 }), /at least one pair/);
    assert.throws(() => ktoLoss([{ policy: -1, reference: -1, label: true }], { beta: 0.1, kl: -1 }), /KL reference point must be a finite number ≥ 0/);
  });
});
