/**
 * The README.md of one ablation's folder: the question, the paper's finding, the setup, and our numbers over
 * seeds (mean ± standard error), the tokens each variant needs to reach the reference's final loss, whether each
 * of the paper's orderings holds beyond seed noise, and the CPU time the runs took.
 */
import type { TrainConfig } from './config.js';
import type { AblationSummary, SeedRun, VariantSummary } from './ablation-summary.js';
import type { MeanSe } from './ablation-stats.js';
import type { TaskLogRecord, TrainingRun } from './metrics-log.js';
import { finalBest } from './plot-tasks.js';

/** How the runs were set up (`summary.json`'s `setup`). */
export interface AblationSetup {
  readonly steps: number;
  readonly batchSize: number;
  readonly sequenceLength: number;
  readonly seeds: readonly number[];
  readonly evalEvery: number;
  readonly model: TrainConfig['model'];
}

/** What the report needs of an ablation's declaration. */
export interface ReportedAblation {
  readonly name: string;
  readonly question: string;
  readonly paper: string;
  readonly variants: readonly { readonly label: string; readonly model: Partial<TrainConfig['model']> }[];
}

export function ablationReport(ablation: ReportedAblation, data: AblationSetup, summary: AblationSummary, runs: readonly SeedRun[]): string {
  const { seeds } = data;
  const base = data.model;
  const first = runs.filter((r) => r.seed === seeds[0]).map((r) => r.run);
  const tasks = [...new Set(first.flatMap((run) => run.tasks.map((t) => t.task)))];
  const tokens = data.steps * data.batchSize * data.sequenceLength;
  const rows = summary.variants.map((v) => variantRow(ablation, base, v, runs.filter((r) => r.variant === v.label), tasks));
  const c = summary.compute;
  return [
    `# Ablation: ${ablation.question}`,
    '',
    `**Paper:** ${ablation.paper}`,
    '',
    `**Here:** ${data.steps} steps × ${data.batchSize} × ${data.sequenceLength} tokens (${tokens.toLocaleString('en-US')} tokens per run), ` +
      `D = ${base.hidden_size}, ${base.num_hidden_layers} layers, same data and schedule for every variant, ` +
      `${seeds.length === 1 ? `seed ${seeds[0]}` : `${seeds.length} seeds (${seeds.join(', ')}; each fixes init and data order)`}, ` +
      `validation every ${data.evalEvery} steps; written by \`olmoe ablate ${ablation.name}${seeds.length > 1 ? ` --seeds ${seeds.length}` : ''}\`.`,
    '',
    `| variant | experts | final valid CE | per seed | final train CE | max expert share (any layer) | tokens/s (median) |${tasks.map((t) => ` ${t} acc. % |`).join('')}`,
    `|---|---|---:|---|---:|---:|---:|${tasks.map(() => '---:|').join('')}`,
    ...rows,
    '',
    `CE: nats per token, ${seeds.length > 1 ? `mean ± standard error over the ${seeds.length} seeds` : 'one seed'}; max expert share: the last step's busiest expert, mean over seeds; tokens/s: median over every step of every seed.`,
    ...(tasks.length ? ['', `Task accuracy (seed ${seeds[0]}): the last in-loop evaluation, best formulation (its primary normalization) ± standard error; curves in tasks.svg.`] : []),
    '',
    ...findingLines(summary),
    ...reachLines(summary),
    `**Compute:** ${c.runs} runs${c.runsWithUsage < c.runs ? ` (${c.runsWithUsage} with recorded CPU time)` : ''}, ${c.cpuHours.toFixed(2)} CPU-hours (process user + system time) over ${c.wallHours.toFixed(2)} wall-clock hours on ${c.cpu}, a machine shared with other work.`,
    '',
    `Method: ${summary.method}`,
    '',
    '![seeds](seeds.svg)',
    '',
    `Curves of seed ${seeds[0]} (every metric the trainer logs):`,
    '',
    '![loss](loss.svg)',
    '',
    '![validation](validation.svg)',
    '',
    '![expert load](expert-load.svg)',
    '',
    `Numbers: [summary.json](summary.json) (every seed's final loss, means, standard errors, the seed-mean curves, tokens-to-reach). Seed ${seeds[0]} per domain: [summary.md](summary.md). ` +
      'Curves: loss, validation, expert-load, routing-entropy, grad-norm, lr, throughput (.svg/.png). ' +
      'Metrics of each run: the `.jsonl` files here (`olmoe plot-train` redraws them).',
    '',
  ].join('\n');
}

/** Mean ± standard error with three decimals; one seed shows the value alone. */
export function formatMeanSe(m: MeanSe, digits = 3): string {
  if (!Number.isFinite(m.mean)) return '–';
  return Number.isFinite(m.se) ? `${m.mean.toFixed(digits)} ± ${m.se.toFixed(digits)}` : m.mean.toFixed(digits);
}

function variantRow(ablation: ReportedAblation, base: TrainConfig['model'], v: VariantSummary, runs: readonly SeedRun[], tasks: readonly string[]): string {
  const variant = ablation.variants.find((x) => x.label === v.label)!;
  const model = { ...base, ...variant.model };
  const shared = model.shared_expert_intermediate_size ? ` + shared F ${model.shared_expert_intermediate_size}` : '';
  const share = mean(runs.map((r) => maxShare(r.run)));
  const speed = median(runs.flatMap((r) => r.run.train.map((x) => x.tokensPerSecond)));
  const perSeed = v.finalValidCe.map((ce) => ce.toFixed(3)).join(' · ');
  const firstRun = runs[0]?.run;
  return `| ${v.label} | ${model.num_experts} × F ${model.intermediate_size}, top-${model.num_experts_per_tok}${shared} | ${formatMeanSe(v.finalValid)} | ${perSeed} | ${formatMeanSe(v.finalTrainCe)} | ${share.toFixed(3)} (uniform ${(1 / model.num_experts).toFixed(3)}) | ${Math.round(speed)} |` +
    tasks.map((task) => ` ${accuracyCell(firstRun ? finalBest(firstRun, task) : undefined)} |`).join('');
}

function findingLines(summary: AblationSummary): string[] {
  if (!summary.findings.length) return [];
  return [
    '| paper: lower loss | than | difference ± SE | reproduces here? |',
    '|---|---|---:|---|',
    ...summary.findings.map((f) => `| ${f.lower} | ${f.higher} | ${Number.isFinite(f.se) ? `${f.difference.toFixed(3)} ± ${f.se.toFixed(3)}` : f.difference.toFixed(3)}${f.paired ? ' (per seed)' : ''} | ${f.verdict} |`),
    '',
    'Difference: the second variant\'s final validation CE minus the first\'s, positive when the paper\'s ordering holds; "per seed": the mean ± SE of the ' +
      'differences seed by seed (each seed gives both variants the same data order, so what a seed does to both cancels).',
    '',
  ];
}

function reachLines(summary: AblationSummary): string[] {
  if (!summary.tokensToReach.length) return [];
  const t0 = summary.tokensToReach[0]!;
  return [
    `**Tokens to reach the final validation loss of ${t0.reference}** (${t0.target.toFixed(3)}, seed mean, after ${t0.referenceTokens.toLocaleString('en-US')} tokens), read as the paper reads its MoE-vs-dense curves (§4.1.1):`,
    '',
    '| variant | tokens (seed-mean curve) | × fewer tokens | per seed, against the same seed\'s final loss (× fewer) | mean ± SE over seeds |',
    '|---|---:|---:|---|---:|',
    ...summary.tokensToReach.map((t) => `| ${t.variant} | ${t.tokens === null ? 'not reached' : Math.round(t.tokens).toLocaleString('en-US')} | ${t.ratio === null ? '–' : t.ratio.toFixed(2)} | ` +
      `${t.perSeed.map((s) => (s.ratio === null ? 'not reached' : s.ratio.toFixed(2))).join(' · ')} | ${formatMeanSe(t.ratioOverSeeds, 2)}${t.ratioOverSeeds.n < t.perSeed.length ? ` (${t.ratioOverSeeds.n} seeds reach it)` : ''} |`),
    '',
    'Read within one schedule: the target is reached at the end of the reference\'s cosine decay, while the other curve is still at a higher ' +
      'learning rate before its own end, so this understates the tokens a variant trained to that shorter length would save; ' +
      '"not reached" means its curve stays above the target for the whole run.',
    '',
  ];
}

function maxShare(run: TrainingRun): number {
  const load = run.train.at(-1)?.expertLoad;
  return load ? Math.max(...load.map((layer) => Math.max(...layer))) : NaN;
}

function accuracyCell(r: TaskLogRecord | undefined): string {
  return r ? `${(100 * r.accuracy).toFixed(1)} ± ${(100 * r.stderr).toFixed(1)}` : '–';
}

function mean(values: readonly number[]): number {
  const finite = values.filter(Number.isFinite);
  return finite.length ? finite.reduce((s, v) => s + v, 0) / finite.length : NaN;
}

function median(values: readonly number[]): number {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)]! : NaN;
}
