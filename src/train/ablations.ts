/**
 * The paper's small-scale ablations (OLMoE §4), each a set of training configs that differ in one design choice
 * and share everything else (data, seeds, steps, active compute), run one after the other into one folder, each
 * variant under one or several seeds so that a difference can be told from seed noise.
 * What the paper reports is stated next to each, so the results read side by side.
 */
import { copyFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { withIo } from '../core/errors.js';
import { AtomicFile } from '../io/atomic-file.js';
import { renderPng, renderSvg } from '../plot/figures.js';
import { ablationReport, type AblationSetup } from './ablation-report.js';
import { summarizeAblation, type ExpectedOrdering, type RunUsage, type SeedRun } from './ablation-summary.js';
import { latestCheckpoint } from './checkpoint.js';
import type { TrainConfig } from './config.js';
import type { TrainingBackend } from '../core/training.js';
import { readTrainingRun, type TrainLogRecord } from './metrics-log.js';
import { seedsSpec } from './plot-ablation.js';
import { plotTraining } from './plot.js';
import { METRICS_FILE, train } from './trainer.js';

export interface AblationVariant {
  readonly label: string;
  readonly model: Partial<TrainConfig['model']>;
  readonly loss?: Partial<TrainConfig['loss']>;
}

export interface Ablation {
  readonly name: string;
  readonly question: string;
  /** The paper's finding, with its section and figure. */
  readonly paper: string;
  readonly variants: readonly AblationVariant[];
  /** The variant whose final loss the others' tokens-to-reach is read against (how the paper reads its MoE-vs-dense curves, §4.1.1). */
  readonly reference?: string;
  /** The paper's finding as orderings of the final validation loss, each checked against seed noise. */
  readonly expected: readonly ExpectedOrdering[];
}

/** Base shape: D = 128, 2 layers, 4 heads; experts sized so every variant has the same active expert width K·F = 256. */
export const ABLATION_BASE: TrainConfig['model'] = {
  hidden_size: 128, num_hidden_layers: 2, num_attention_heads: 4, num_experts: 8, num_experts_per_tok: 2, intermediate_size: 128,
  norm_topk_prob: false, rms_norm_eps: 1e-5, rope_theta: 10000, routing: 'token_choice', capacity_factor: 1, init_std: 0.02,
  shared_expert_intermediate_size: 0,
};

export const ABLATIONS: readonly Ablation[] = [
  {
    name: 'moe-vs-dense',
    question: 'MoE vs a dense model with the same active parameters',
    paper: '§4.1.1 / Figure 4: at equal active parameters the MoE reaches the dense model\'s loss with about 3× fewer tokens (≈2× less compute) and ends lower.',
    variants: [
      { label: 'MoE 8 experts top-2 (F=128)', model: { num_experts: 8, num_experts_per_tok: 2, intermediate_size: 128 } },
      { label: 'dense (F=256)', model: { num_experts: 1, num_experts_per_tok: 1, intermediate_size: 256 }, loss: { load_balancing: 0, router_z: 0 } },
    ],
    reference: 'dense (F=256)',
    expected: [{ lower: 'MoE 8 experts top-2 (F=128)', higher: 'dense (F=256)' }],
  },
  {
    name: 'load-balancing',
    question: 'with vs without the load-balancing loss',
    paper: '§4.1.7 / Figure 13: without LBL a few experts take most tokens (collapse) and loss is worse; with LBL (0.01) load stays near uniform.',
    variants: [
      { label: 'with LBL (0.01)', model: {}, loss: { load_balancing: 0.01 } },
      { label: 'without LBL', model: {}, loss: { load_balancing: 0 } },
    ],
    reference: 'without LBL',
    expected: [{ lower: 'with LBL (0.01)', higher: 'without LBL' }],
  },
  {
    name: 'routing',
    question: 'dropless token choice vs expert choice (capacity factor 1)',
    paper: '§4.1.6 / Figure 12: token choice beats expert choice at the same compute (expert choice is ~20% faster per step at scale but worse per token).',
    variants: [
      { label: 'token choice', model: { routing: 'token_choice' } },
      { label: 'expert choice (cf 1)', model: { routing: 'expert_choice', capacity_factor: 1 }, loss: { load_balancing: 0 } },
    ],
    reference: 'expert choice (cf 1)',
    expected: [{ lower: 'token choice', higher: 'expert choice (cf 1)' }],
  },
  {
    name: 'shared-expert',
    question: 'a shared (always-active) expert vs routed experts only, at equal active parameters',
    paper: '§4.1.3 / Figure 9: a shared expert brings no gain (slightly worse) at equal compute, so OLMoE uses none.',
    variants: [
      { label: '8 experts top-2 (F=128)', model: { num_experts: 8, num_experts_per_tok: 2, intermediate_size: 128 } },
      { label: '8 experts top-1 + shared (F=128)', model: { num_experts: 8, num_experts_per_tok: 1, intermediate_size: 128, shared_expert_intermediate_size: 128 } },
    ],
    reference: '8 experts top-1 + shared (F=128)',
    expected: [{ lower: '8 experts top-2 (F=128)', higher: '8 experts top-1 + shared (F=128)' }],
  },
  {
    name: 'granularity',
    question: 'expert granularity at equal total and active parameters',
    paper: '§4.1.2 / Figure 6: 8 experts top-1 → 32 top-4 → 64 top-8 (finer experts, same compute) improves loss, with diminishing returns from 32 to 64.',
    variants: [
      { label: '8 experts top-1 (F=256)', model: { num_experts: 8, num_experts_per_tok: 1, intermediate_size: 256 } },
      { label: '32 experts top-4 (F=64)', model: { num_experts: 32, num_experts_per_tok: 4, intermediate_size: 64 } },
      { label: '64 experts top-8 (F=32)', model: { num_experts: 64, num_experts_per_tok: 8, intermediate_size: 32 } },
    ],
    reference: '8 experts top-1 (F=256)',
    expected: [
      { lower: '32 experts top-4 (F=64)', higher: '8 experts top-1 (F=256)' },
      { lower: '64 experts top-8 (F=32)', higher: '8 experts top-1 (F=256)' },
      { lower: '64 experts top-8 (F=32)', higher: '32 experts top-4 (F=64)' },
    ],
  },
];

export interface AblationData {
  readonly tokenizer: string;
  readonly train: readonly string[];
  readonly valid: readonly string[];
  readonly steps: number;
  readonly sequenceLength: number;
  readonly batchSize: number;
  /** The first seed; with `seeds` = n the runs use seed, seed + 1, …, seed + n − 1 (each fixes init and data order). */
  readonly seed: number;
  /** Runs per variant, one per seed (default 1). */
  readonly seeds?: number;
  /** Validation every n steps (default: steps / 10); reading tokens-to-reach needs it often (every 25–50 steps). */
  readonly evalEvery?: number;
  /** In-loop evaluation of every variant (task or suite files), every `evalTasksEvery` steps. */
  readonly evalTasks?: readonly string[];
  readonly evalTasksEvery?: number;
  readonly evalTasksLimit?: number;
}

/** The seeds an ablation runs every variant with. */
export function ablationSeeds(data: Pick<AblationData, 'seed' | 'seeds'>): number[] {
  return Array.from({ length: data.seeds ?? 1 }, (_, i) => data.seed + i);
}

/** Steps between validations: `evalEvery`, or a tenth of the run. */
export function validationInterval(data: Pick<AblationData, 'steps' | 'evalEvery'>): number {
  return data.evalEvery ?? Math.max(1, Math.round(data.steps / 10));
}

/** The training config of one variant under one seed (default: the first), written to `out`. */
export function ablationConfig(variant: AblationVariant, data: AblationData, out: string, seed = data.seed): TrainConfig {
  return {
    out, seed, tokenizer: data.tokenizer,
    model: { ...ABLATION_BASE, ...variant.model },
    data: { train: [...data.train], valid: [...data.valid], sequence_length: data.sequenceLength, batch_size: data.batchSize, micro_batches: 1 },
    optimizer: { lr: 3e-3, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1, clip: 1.0, warmup_steps: Math.max(1, Math.round(data.steps / 20)), final_lr_ratio: 0.1 },
    loss: { load_balancing: 0.01, router_z: 0.001, ...variant.loss },
    steps: data.steps, precision: 'fp32', eval_every: validationInterval(data), eval_batches: 4, checkpoint_every: 0,
    ...(data.evalTasks?.length
      ? { eval_tasks: [...data.evalTasks], eval_tasks_every: data.evalTasksEvery ?? Math.max(1, Math.round(data.steps / 10)), eval_tasks_limit: data.evalTasksLimit }
      : {}),
  };
}

export interface RunAblationOptions {
  /** Runs the training and the in-loop evaluation's inference model. */
  readonly backend: TrainingBackend;
  /** Where the variants' training runs (checkpoints included) go; the report folder gets only their metrics. */
  readonly runs: string;
  /** Native threads, recorded beside each run's CPU time. */
  readonly threads?: number;
  readonly say?: (line: string) => void;
  readonly onStep?: (label: string, record: TrainLogRecord, seed: number) => void;
}

export const USAGE_FILE = 'usage.json';
export const SUMMARY_FILE = 'summary.json';

/**
 * Where one run trains and which metrics file it leaves in the report folder. One seed keeps the layout of
 * single-seed ablations (`<runs>/<variant>`, `<variant>.jsonl`); several put each seed in its own folder and file.
 */
export function ablationRunPaths(runs: string, variant: AblationVariant, seed: number, seedCount: number): { dir: string; metrics: string } {
  const name = slug(variant.label);
  return seedCount === 1 ? { dir: join(runs, name), metrics: `${name}.jsonl` } : { dir: join(runs, name, `seed-${seed}`), metrics: `${name}.seed-${seed}.jsonl` };
}

/**
 * Train every variant of `ablation` under every seed into `<runs>/…` (seed by seed, so that a stopped ablation has
 * whole seeds; a finished run is kept, a killed one resumed), then write to `out` each run's metrics, the overlaid
 * curves of the first seed, the seeds figure (`seeds.svg`), `summary.json` (per-seed finals, mean ± standard
 * error, tokens-to-reach the reference, the paper's findings checked against seed noise, CPU time) and `README.md`.
 */
export async function runAblation(ablation: Ablation, data: AblationData, out: string, opts: RunAblationOptions): Promise<string> {
  const seeds = ablationSeeds(data);
  const seedRuns: SeedRun[] = [];
  withIo(out, 'create folder', () => mkdirSync(out, { recursive: true }));
  for (const seed of seeds) {
    for (const variant of ablation.variants) {
      const paths = ablationRunPaths(opts.runs, variant, seed, seeds.length);
      await trainVariant(ablation, variant, data, seed, paths.dir, opts);
      const copy = join(out, paths.metrics);
      withIo(out, 'write', () => copyFileSync(join(paths.dir, METRICS_FILE), copy));
      seedRuns.push({ variant: variant.label, seed, run: readTrainingRun(copy, variant.label), usage: readUsage(paths.dir) });
    }
  }
  await plotTraining(seedRuns.filter((r) => r.seed === seeds[0]).map((r) => r.run), out);
  const summary = summarizeAblation({ ablation: ablation.name, question: ablation.question, paper: ablation.paper, labels: ablation.variants.map((v) => v.label), reference: ablation.reference, expected: ablation.expected }, seedRuns);
  const setup = ablationSetup(data);
  // Each variant's training config under the first seed (the other seeds differ only in `seed` and `out`).
  const configs = ablation.variants.map((v) => ablationConfig(v, data, ablationRunPaths(opts.runs, v, seeds[0]!, seeds.length).dir));
  writeAtomic(join(out, SUMMARY_FILE), JSON.stringify({ ...summary, setup: { ...setup, configs } }, jsonNumbers, 2) + '\n');
  const spec = seedsSpec(summary, seedRuns);
  if (spec) {
    const svg = await renderSvg(spec);
    writeAtomic(join(out, 'seeds.svg'), svg);
    writeAtomic(join(out, 'seeds.png'), renderPng(svg));
  }
  const report = ablationReport(ablation, setup, summary, seedRuns);
  writeAtomic(join(out, 'README.md'), report);
  return report;
}

async function trainVariant(ablation: Ablation, variant: AblationVariant, data: AblationData, seed: number, dir: string, opts: RunAblationOptions): Promise<void> {
  const metrics = join(dir, METRICS_FILE);
  const finished = existsSync(metrics) && readTrainingRun(metrics).train.at(-1)?.step === data.steps;
  if (finished) return;
  opts.say?.(`${ablation.name}: training "${variant.label}", seed ${seed} (${data.steps} steps)`);
  const config = ablationConfig(variant, data, dir, seed);
  const started = performance.now();
  const cpu = process.cpuUsage();
  await train({ config, backend: opts.backend, resume: latestCheckpoint(dir) !== null, say: opts.say, onStep: (r) => opts.onStep?.(variant.label, r, seed) });
  const used = process.cpuUsage(cpu);
  // A resumed run adds to what its earlier part recorded.
  const before = readUsage(dir);
  const usage: RunUsage = {
    wallSeconds: (before?.wallSeconds ?? 0) + (performance.now() - started) / 1000,
    cpuSeconds: (before?.cpuSeconds ?? 0) + (used.user + used.system) / 1e6,
    threads: opts.threads ?? 0,
    cpu: cpus()[0]?.model ?? 'unknown',
  };
  writeAtomic(join(dir, USAGE_FILE), JSON.stringify(usage, null, 2) + '\n');
}

/** The CPU time a run recorded, or undefined for a run trained before it was recorded (or a malformed file). */
function readUsage(dir: string): RunUsage | undefined {
  const file = join(dir, USAGE_FILE);
  if (!existsSync(file)) return undefined;
  try {
    const value = JSON.parse(readFileSync(file, 'utf8')) as RunUsage;
    return Number.isFinite(value.cpuSeconds) && Number.isFinite(value.wallSeconds) ? value : undefined;
  } catch {
    return undefined;
  }
}

function ablationSetup(data: AblationData): AblationSetup & { tokensPerRun: number; evalBatchesPerDomain: number } {
  return {
    steps: data.steps, batchSize: data.batchSize, sequenceLength: data.sequenceLength, tokensPerRun: data.steps * data.batchSize * data.sequenceLength,
    seeds: ablationSeeds(data), evalEvery: validationInterval(data), evalBatchesPerDomain: 4, model: ABLATION_BASE,
  };
}

/** JSON has no NaN: undefined standard errors (one seed) and unreached targets are written as null. */
function jsonNumbers(_key: string, value: unknown): unknown {
  return typeof value === 'number' && !Number.isFinite(value) ? null : value;
}

function writeAtomic(path: string, content: string | Uint8Array): void {
  const file = new AtomicFile(path);
  file.write(typeof content === 'string' ? Buffer.from(content) : content);
  file.finish();
}

export function slug(label: string): string {
  return label.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}
