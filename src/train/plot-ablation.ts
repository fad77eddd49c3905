/**
 * The seeds figure of an ablation (`seeds.svg`): validation cross-entropy against training tokens, one thin line
 * per seed and the seed mean with a ±1 standard error band per variant, over the whole run and zoomed on its second
 * half (where the variants separate, if they do); the reference variant's final loss dashed with the point where each
 * other variant's mean curve reaches it (how the paper reads its MoE-vs-dense curves, §4.1.1); and the final loss per variant, every seed a
 * dot and the mean with ±1 standard error bars.
 */
import { titledSpec, type Spec } from '../plot/figures.js';
import type { AblationSummary, SeedRun } from './ablation-summary.js';
import { validCurve } from './ablation-summary.js';

type Row = Record<string, string | number>;

const TOKENS = { field: 'tokens', type: 'quantitative', title: 'training tokens', axis: { format: '~s' } } as const;
const CE = { type: 'quantitative', title: 'validation CE (nats)', scale: { zero: false } } as const;

export function seedsSpec(summary: AblationSummary, runs: readonly SeedRun[]): Spec | undefined {
  const labels = summary.variants.map((v) => v.label);
  const color = { field: 'variant', type: 'nominal', title: 'variant', scale: { domain: labels, scheme: 'tableau10' }, legend: { labelLimit: 320 } };
  const seedRows: Row[] = runs.flatMap((r) => validCurve(r.run).map((p) => ({ variant: r.variant, seed: r.seed, tokens: p.tokens, value: p.value })));
  if (seedRows.length === 0) return undefined;
  const meanRows: Row[] = summary.variants.flatMap((v) =>
    v.validCurve.map((p) => ({ variant: v.label, tokens: p.tokens, mean: p.mean, lo: p.mean - (Number.isFinite(p.se) ? p.se : 0), hi: p.mean + (Number.isFinite(p.se) ? p.se : 0) })));
  const reach = summary.tokensToReach;
  const target = reach[0]?.target;
  const reachRows: Row[] = reach.flatMap((t) => (t.tokens === null ? [] : [{ variant: t.variant, tokens: t.tokens, value: t.target }]));
  const maxTokens = Math.max(...seedRows.map((r) => r.tokens as number));
  const curves = (rows: { seeds: Row[]; means: Row[]; reach: Row[] }, title: string) => ({
    width: 340,
    height: 230,
    title,
    layer: [
      { data: { values: rows.means }, mark: { type: 'area', opacity: 0.2 }, encoding: { x: TOKENS, y: { field: 'lo', ...CE }, y2: { field: 'hi' }, color } },
      { data: { values: rows.seeds }, mark: { type: 'line', strokeWidth: 0.7, opacity: 0.45 }, encoding: { x: TOKENS, y: { field: 'value', ...CE }, color, detail: { field: 'seed', type: 'nominal' } } },
      { data: { values: rows.means }, mark: { type: 'line', strokeWidth: 2 }, encoding: { x: TOKENS, y: { field: 'mean', ...CE }, color } },
      ...(target === undefined ? [] : [{ data: { values: [{ target }] }, mark: { type: 'rule', strokeDash: [5, 3], color: '#444' }, encoding: { y: { field: 'target', type: 'quantitative' } } }]),
      ...(rows.reach.length ? [{ data: { values: rows.reach }, mark: { type: 'point', shape: 'diamond', size: 90, filled: true, stroke: '#000', strokeWidth: 0.8 }, encoding: { x: TOKENS, y: { field: 'value', ...CE }, color } }] : []),
    ],
  });
  const half = (r: Row) => (r.tokens as number) >= maxTokens / 2;
  const finals: Row[] = summary.variants.flatMap((v) => v.finalValidCe.map((ce, i) => ({ variant: v.label, seed: v.seeds[i]!, value: ce })));
  const finalMeans: Row[] = summary.variants.map((v) => ({ variant: v.label, mean: v.finalValid.mean, lo: v.finalValid.mean - (Number.isFinite(v.finalValid.se) ? v.finalValid.se : 0), hi: v.finalValid.mean + (Number.isFinite(v.finalValid.se) ? v.finalValid.se : 0) }));
  const x = { field: 'variant', type: 'nominal', title: null, sort: labels, axis: { labelAngle: -20, labelLimit: 200 } };
  const finalPanel = {
    width: 60 * labels.length + 60,
    height: 230,
    title: 'final validation CE',
    layer: [
      { data: { values: finals }, mark: { type: 'point', opacity: 0.6, size: 30 }, encoding: { x, y: { field: 'value', ...CE }, color } },
      { data: { values: finalMeans }, mark: { type: 'rule', strokeWidth: 2 }, encoding: { x, y: { field: 'lo', ...CE }, y2: { field: 'hi' }, color } },
      { data: { values: finalMeans }, mark: { type: 'tick', thickness: 2, size: 22 }, encoding: { x, y: { field: 'mean', ...CE }, color } },
    ],
  };
  const seeds = Math.max(...summary.variants.map((v) => v.seeds.length));
  const reachNote = reach.length
    ? `dashed: final loss of ${reach[0]!.reference} (seed mean); ◆ where each variant's mean curve reaches it: ${reach.map((t) => `${t.variant} ${t.ratio === null ? 'never' : `${t.ratio.toFixed(2)}× fewer tokens`}`).join('; ')}`
    : '';
  return titledSpec(`${summary.question}: ${seeds} seed${seeds === 1 ? '' : 's'} per variant`, [
    'thin lines: each seed; thick line and band: seed mean ± 1 standard error; right: each seed (dots), mean ± 1 SE (bar)',
    ...(reachNote ? [reachNote] : []),
  ], {
    hconcat: [
      curves({ seeds: seedRows, means: meanRows, reach: reachRows }, 'whole run'),
      curves({ seeds: seedRows.filter(half), means: meanRows.filter(half), reach: reachRows.filter(half) }, 'second half of the run'),
      finalPanel,
    ],
    resolve: { scale: { color: 'shared' } },
  });
}
