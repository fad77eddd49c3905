// Ablation statistics over seeds: mean ± standard error, the seed-mean curve, tokens-to-reach (first crossing,
// linear interpolation in tokens) and the noise verdict, on hand-made curves whose answers are worked by hand below.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { meanCurve, meanStandardError, pairedVerdict, tokensToReach, verdict } from '../src/train/ablation-stats.js';
import { summarizeAblation, type SeedRun } from '../src/train/ablation-summary.js';
import type { TrainingRun } from '../src/train/metrics-log.js';

const close = (actual: number | null, expected: number, tol = 1e-9) => {
  assert.ok(actual !== null && Math.abs(actual - expected) <= tol, `${actual} is not ${expected}`);
};

describe('meanStandardError', () => {
  it('is the mean and the sample standard deviation over √n', () => {
    // 1, 2, 3, 4: mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5; s² = 5/3; SE = √(5/3 / 4) = √(5/12).
    const m = meanStandardError([1, 2, 3, 4]);
    close(m.mean, 2.5);
    close(m.se, Math.sqrt(5 / 12));
    assert.equal(m.n, 4);
  });
  it('has no standard error for one value and leaves out non-finite values', () => {
    const one = meanStandardError([5.25]);
    assert.equal(one.mean, 5.25);
    assert.ok(Number.isNaN(one.se));
    const m = meanStandardError([2, NaN, 4]); // mean 3, s² = 2, SE = √(2/2) = 1
    close(m.mean, 3);
    close(m.se, 1);
    assert.equal(m.n, 2);
    assert.ok(Number.isNaN(meanStandardError([]).mean));
  });
});

describe('meanCurve', () => {
  it('averages the seeds at the token counts every seed evaluated', () => {
    const curve = meanCurve([
      [{ tokens: 0, value: 3 }, { tokens: 10, value: 2 }, { tokens: 20, value: 1 }],
      [{ tokens: 0, value: 5 }, { tokens: 10, value: 4 }],
    ]);
    assert.deepEqual(curve.map((p) => p.tokens), [0, 10]);
    close(curve[0]!.mean, 4);
    close(curve[0]!.se, 1); // values 3 and 5: s² = 2, SE = √(2/2)
    close(curve[1]!.mean, 3);
  });
});

describe('tokensToReach', () => {
  const curve = [{ tokens: 100, value: 5 }, { tokens: 200, value: 4 }, { tokens: 300, value: 3 }];
  it('interpolates linearly between the evaluations around the crossing', () => {
    close(tokensToReach(curve, 3.5), 250); // halfway from 4 to 3
    close(tokensToReach(curve, 4.75), 125); // a quarter of the way from 5 to 4
  });
  it('returns an evaluation exactly at the target, the first point when it is already below, null when never reached', () => {
    close(tokensToReach(curve, 4), 200);
    close(tokensToReach(curve, 6), 100);
    assert.equal(tokensToReach(curve, 2.9), null);
    assert.equal(tokensToReach([], 1), null);
  });
  it('takes the first crossing of a curve that goes back up', () => {
    // 5 → 3.9 crosses 4 at 1/1.1 of the way from 100 to 200 tokens; the later 4.2 and 3 do not matter.
    const bumpy = [{ tokens: 100, value: 5 }, { tokens: 200, value: 3.9 }, { tokens: 300, value: 4.2 }, { tokens: 400, value: 3 }];
    close(tokensToReach(bumpy, 4), 100 + 100 / 1.1);
  });
});

describe('verdict', () => {
  const lower = { mean: 5, se: 0.01, n: 3 };
  it('says yes when the paper\'s ordering holds beyond twice the standard error of the difference', () => {
    const v = verdict(lower, { mean: 5.05, se: 0.01, n: 3 }); // 0.05 > 2·√0.0002 = 0.0283
    assert.equal(v.verdict, 'yes');
    close(v.difference, 0.05, 1e-12);
    close(v.se, Math.sqrt(0.0002), 1e-12);
  });
  it('says within noise below that, and with one seed', () => {
    assert.equal(verdict(lower, { mean: 5.02, se: 0.01, n: 3 }).verdict, 'within noise'); // 0.02 < 0.0283
    assert.equal(verdict({ mean: 5, se: NaN, n: 1 }, { mean: 6, se: NaN, n: 1 }).verdict, 'within noise');
  });
  it('says no when the opposite ordering is beyond the noise', () => {
    assert.equal(verdict(lower, { mean: 4.9, se: 0.01, n: 3 }).verdict, 'no');
  });
  it('pairs the seeds: a shift every seed shares cancels', () => {
    // Differences 0.012, 0.018, 0.009: mean 0.013, deviations −0.001, 0.005, −0.004, s² = 0.000042/2, SE = √(0.000021/3).
    const v = pairedVerdict([5.174, 5.181, 5.233], [5.186, 5.199, 5.242]);
    close(v.difference, 0.013, 1e-12);
    close(v.se, Math.sqrt(0.000021 / 3), 1e-12);
    assert.equal(v.verdict, 'yes'); // 0.013 > 2 · 0.00265
    // The same numbers as independent samples: means 5.196 and 5.209, each SE ≈ 0.018, within noise.
    assert.equal(verdict(meanStandardError([5.174, 5.181, 5.233]), meanStandardError([5.186, 5.199, 5.242])).verdict, 'within noise');
    assert.equal(pairedVerdict([1, 2], [1.5, 1.5]).verdict, 'within noise'); // differences +0.5, −0.5
  });
});

/** A run with only validation records (domain "all") at 100, 200, 300 tokens. */
function run(label: string, values: readonly number[]): TrainingRun {
  const valid = values.map((ce, i) => ({ kind: 'valid' as const, step: i + 1, tokens: 100 * (i + 1), domain: 'all', ce, bitsPerByte: NaN }));
  const train = values.map((ce, i) => ({ kind: 'train' as const, step: i + 1, tokens: 100 * (i + 1), loss: ce, ce, lbl: 0, zloss: 0, lr: 0, gradNorm: 0, tokensPerSecond: 1 }));
  return { file: `${label}.jsonl`, label, train, valid, tasks: [], warnings: [] };
}

describe('summarizeAblation', () => {
  const runs: SeedRun[] = [
    { variant: 'moe', seed: 0, run: run('moe', [6.0, 5.0, 4.8]), usage: { wallSeconds: 1800, cpuSeconds: 3600, threads: 2, cpu: 'test CPU' } },
    { variant: 'dense', seed: 0, run: run('dense', [6.3, 5.5, 5.0]), usage: { wallSeconds: 1800, cpuSeconds: 1800, threads: 2, cpu: 'test CPU' } },
    { variant: 'moe', seed: 1, run: run('moe', [6.2, 5.4, 5.0]) },
    { variant: 'dense', seed: 1, run: run('dense', [6.5, 5.7, 5.2]) },
  ];
  const summary = summarizeAblation({ ablation: 'x', question: 'q', paper: 'p', labels: ['moe', 'dense'], reference: 'dense', expected: [{ lower: 'moe', higher: 'dense' }] }, runs);

  it('gives each variant its per-seed finals with mean ± SE', () => {
    const [moe, dense] = summary.variants;
    assert.deepEqual(moe!.finalValidCe, [4.8, 5.0]);
    close(moe!.finalValid.mean, 4.9);
    close(moe!.finalValid.se, 0.1); // 4.8, 5.0: s² = 0.02, SE = √(0.02/2)
    close(dense!.finalValid.mean, 5.1);
    assert.equal(dense!.finalTokens, 300);
  });

  it('reads the tokens the MoE needs to reach the dense final loss on the seed-mean curve and per seed', () => {
    const [reach] = summary.tokensToReach;
    assert.equal(summary.tokensToReach.length, 1);
    close(reach!.target, 5.1);
    // Mean MoE curve 6.1, 5.2, 4.9: crosses 5.1 a third of the way from 200 to 300 → 233.3 tokens; ratio 300 / 233.3 = 9/7.
    close(reach!.tokens, 700 / 3, 1e-9);
    close(reach!.ratio, 9 / 7, 1e-9);
    // Per seed against that seed's dense final: seed 0 reaches 5.0 exactly at 200 tokens; seed 1 crosses 5.2
    // halfway from 5.4 (200) to 5.0 (300) = 250 tokens. Ratios 1.5 and 1.2.
    assert.deepEqual(reach!.perSeed.map((s) => s.target), [5.0, 5.2]);
    close(reach!.perSeed[0]!.tokens, 200, 1e-9);
    close(reach!.perSeed[1]!.tokens, 250, 1e-9);
    close(reach!.ratioOverSeeds.mean, 1.35, 1e-9);
    close(reach!.ratioOverSeeds.se, 0.15, 1e-9); // 1.5, 1.2: s² = 0.045, SE = √(0.045/2)
  });

  it('checks the paper\'s ordering against seed noise and sums the recorded CPU time', () => {
    // Same seeds, so paired: dense − MoE is 0.2 under both seeds (SE 0), the ordering holds.
    assert.equal(summary.findings[0]!.paired, true);
    assert.equal(summary.findings[0]!.verdict, 'yes');
    close(summary.findings[0]!.difference, 0.2, 1e-12);
    close(summary.findings[0]!.se, 0, 1e-12);
    // Unpaired (seeds that differ): 0.2 against √(0.1² + 0.1²) = 0.141, 0.2 < 0.283, within noise.
    const shifted = runs.map((r) => (r.variant === 'dense' ? { ...r, seed: r.seed + 10 } : r));
    const unpaired = summarizeAblation({ ablation: 'x', question: 'q', paper: 'p', labels: ['moe', 'dense'], expected: [{ lower: 'moe', higher: 'dense' }] }, shifted).findings[0]!;
    assert.equal(unpaired.paired, false);
    assert.equal(unpaired.verdict, 'within noise');
    close(unpaired.se, Math.sqrt(0.02), 1e-12);
    assert.equal(summary.compute.runs, 4);
    assert.equal(summary.compute.runsWithUsage, 2);
    close(summary.compute.cpuHours, 1.5);
    close(summary.compute.wallHours, 1);
    assert.equal(summary.compute.cpu, 'test CPU');
  });
});
