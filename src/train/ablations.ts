/**
 * The paper's small-scale ablations (OLMoE §4), each a set of training configs that differ in one design choice
 * and share everything else (data, seed, steps, active compute), run one after the other into one folder.
 * What the paper reports is stated next to each, so the results read side by side.
 */
import { copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { withIo } from '../core/errors.js';
import { AtomicFile } from '../io/atomic-file.js';
import { latestCheckpoint } from './checkpoint.js';
import type { TrainConfig } from './config.js';
import type { TrainingBackend } from '../core/training.js';
import { readTrainingRun, type TaskLogRecord, type TrainingRun, type TrainLogRecord } from './metrics-log.js';
import { finalBest } from './plot-tasks.js';
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
  },
  {
    name: 'load-balancing',
    question: 'with vs without the load-balancing loss',
    paper: '§4.1.7 / Figure 13: without LBL a few experts take most tokens (collapse) and loss is worse; with LBL (0.01) load stays near uniform.',
    variants: [
      { label: 'with LBL (0.01)', model: {}, loss: { load_balancing: 0.01 } },
      { label: 'without LBL', model: {}, loss: { load_balancing: 0 } },
    ],
  },
  {
    name: 'routing',
    question: 'dropless token choice vs expert choice (capacity factor 1)',
    paper: '§4.1.6 / Figure 12: token choice beats expert choice at the same compute (expert choice is ~20% faster per step at scale but worse per token).',
    variants: [
      { label: 'token choice', model: { routing: 'token_choice' } },
      { label: 'expert choice (cf 1)', model: { routing: 'expert_choice', capacity_factor: 1 }, loss: { load_balancing: 0 } },
    ],
  },
  {
    name: 'shared-expert',
    question: 'a shared (always-active) expert vs routed experts only, at equal active parameters',
    paper: '§4.1.3 / Figure 9: a shared expert brings no gain (slightly worse) at equal compute, so OLMoE uses none.',
    variants: [
      { label: '8 experts top-2 (F=128)', model: { num_experts: 8, num_experts_per_tok: 2, intermediate_size: 128 } },
      { label: '8 experts top-1 + shared (F=128)', model: { num_experts: 8, num_experts_per_tok: 1, intermediate_size: 128, shared_expert_intermediate_size: 128 } },
    ],
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
  },
];

export interface AblationData {
  readonly tokenizer: string;
  readonly train: readonly string[];
  readonly valid: readonly string[];
  readonly steps: number;
  readonly sequenceLength: number;
  readonly batchSize: number;
  readonly seed: number;
  /** In-loop evaluation of every variant (task or suite files), every `evalTasksEvery` steps. */
  readonly evalTasks?: readonly string[];
  readonly evalTasksEvery?: number;
  readonly evalTasksLimit?: number;
}

/** The training config of one variant, written to `<out>/<variant index>`. */
export function ablationConfig(variant: AblationVariant, data: AblationData, out: string): TrainConfig {
  return {
    out, seed: data.seed, tokenizer: data.tokenizer,
    model: { ...ABLATION_BASE, ...variant.model },
    data: { train: [...data.train], valid: [...data.valid], sequence_length: data.sequenceLength, batch_size: data.batchSize, micro_batches: 1 },
    optimizer: { lr: 3e-3, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1, clip: 1.0, warmup_steps: Math.max(1, Math.round(data.steps / 20)), final_lr_ratio: 0.1 },
    loss: { load_balancing: 0.01, router_z: 0.001, ...variant.loss },
    steps: data.steps, precision: 'fp32', eval_every: Math.max(1, Math.round(data.steps / 10)), eval_batches: 4, checkpoint_every: 0,
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
  readonly say?: (line: string) => void;
  readonly onStep?: (label: string, record: TrainLogRecord) => void;
}

/**
 * Train every variant of `ablation` into `<runs>/<variant>` (a finished variant is kept, a killed one resumed),
 * then write to `out` each variant's metrics (`<variant>.jsonl`), the overlaid curves and `README.md`: the
 * question, the paper's finding, our numbers.
 */
export async function runAblation(ablation: Ablation, data: AblationData, out: string, opts: RunAblationOptions): Promise<string> {
  const runs: TrainingRun[] = [];
  withIo(out, 'create folder', () => mkdirSync(out, { recursive: true }));
  for (const variant of ablation.variants) {
    const dir = join(opts.runs, slug(variant.label));
    const config = ablationConfig(variant, data, dir);
    const metrics = join(dir, METRICS_FILE);
    const finished = existsSync(metrics) && readTrainingRun(metrics).train.at(-1)?.step === data.steps;
    if (!finished) {
      opts.say?.(`${ablation.name}: training "${variant.label}" (${data.steps} steps)`);
      await train({ config, backend: opts.backend, resume: latestCheckpoint(dir) !== null, say: opts.say, onStep: (r) => opts.onStep?.(variant.label, r) });
    }
    withIo(out, 'write', () => copyFileSync(metrics, join(out, `${slug(variant.label)}.jsonl`)));
    runs.push(readTrainingRun(join(out, `${slug(variant.label)}.jsonl`), variant.label));
  }
  await plotTraining(runs, out);
  const report = ablationReport(ablation, data, runs);
  const file = new AtomicFile(join(out, 'README.md'));
  file.write(Buffer.from(report));
  file.finish();
  return report;
}

function slug(label: string): string {
  return label.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

function ablationReport(ablation: Ablation, data: AblationData, runs: readonly TrainingRun[]): string {
  const last = (run: TrainingRun) => run.train.at(-1);
  const finalValid = (run: TrainingRun) => run.valid.filter((v) => v.domain === 'all').at(-1);
  const maxShare = (run: TrainingRun) => {
    const load = last(run)?.expertLoad;
    return load ? Math.max(...load.map((layer) => Math.max(...layer))) : NaN;
  };
  const tasks = [...new Set(runs.flatMap((run) => run.tasks.map((t) => t.task)))];
  const rows = runs.map((run) => {
    const r = last(run)!;
    const v = finalValid(run);
    const active = ablation.variants.find((x) => x.label === run.label)!;
    const model = { ...ABLATION_BASE, ...active.model };
    const shared = model.shared_expert_intermediate_size ? ` + shared F ${model.shared_expert_intermediate_size}` : '';
    return `| ${run.label} | ${model.num_experts} × F ${model.intermediate_size}, top-${model.num_experts_per_tok}${shared} | ${r.ce.toFixed(3)} | ${v ? v.ce.toFixed(3) : '–'} | ${v ? v.bitsPerByte.toFixed(3) : '–'} | ${maxShare(run).toFixed(3)} (uniform ${(1 / model.num_experts).toFixed(3)}) | ${Math.round(median(run.train.map((x) => x.tokensPerSecond)))} |${tasks.map((task) => ` ${accuracyCell(finalBest(run, task))} |`).join('')}`;
  });
  return [
    `# Ablation: ${ablation.question}`,
    '',
    `**Paper:** ${ablation.paper}`,
    '',
    `**Here:** ${data.steps} steps × ${data.batchSize} × ${data.sequenceLength} tokens (${(data.steps * data.batchSize * data.sequenceLength).toLocaleString('en-US')} tokens), ` +
      `D = ${ABLATION_BASE.hidden_size}, ${ABLATION_BASE.num_hidden_layers} layers, same data, seed ${data.seed} and schedule for every variant; written by \`olmoe ablate ${ablation.name}\`.`,
    '',
    `| variant | experts | final train CE | final valid CE | valid bits/byte | max expert share (any layer) | tokens/s (median) |${tasks.map((t) => ` ${t} acc. % |`).join('')}`,
    `|---|---|---:|---:|---:|---:|---:|${tasks.map(() => '---:|').join('')}`,
    ...rows,
    ...(tasks.length ? ['', 'Task accuracy: the last in-loop evaluation, best formulation (its primary normalization) ± standard error; curves in tasks.svg.'] : []),
    '',
    '![loss](loss.svg)',
    '',
    '![validation](validation.svg)',
    '',
    '![expert load](expert-load.svg)',
    '',
    'Details per domain: [summary.md](summary.md). Curves: loss, validation, expert-load, routing-entropy, grad-norm, lr, throughput (.svg/.png). ' +
      'Metrics of each variant: the `.jsonl` files here (`olmoe plot-train` redraws them).',
    '',
  ].join('\n');
}

function accuracyCell(r: TaskLogRecord | undefined): string {
  return r ? `${(100 * r.accuracy).toFixed(1)} ± ${(100 * r.stderr).toFixed(1)}` : '–';
}

function median(values: readonly number[]): number {
  const sorted = values.filter(Number.isFinite).sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)]! : NaN;
}
