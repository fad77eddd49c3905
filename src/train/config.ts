/**
 * `olmoe train CONFIG.json`: one JSON file names the model shape, the data, the optimizer and the schedule.
 * Defaults are the paper's (Table C3; spec §3.8): AdamW β = (0.9, 0.95), ε = 1e-8, weight decay 0.1, clipping 1.0,
 * warmup then cosine to 10 % of the peak, init σ = 0.02 truncated at ±3σ, load balancing 0.01, z-loss 0.001.
 * Unknown keys are refused by name, so a typo never silently trains with a default.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../core/errors.js';
import { readJsonObject } from '../io/json.js';

const positiveInt = z.int().min(1, 'must be a positive integer');
const fraction = z.number().min(0, 'must be in [0, 1]').max(1, 'must be in [0, 1]');

const modelSchema = z.strictObject({
  hidden_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  num_key_value_heads: positiveInt.optional(),
  num_experts: positiveInt,
  num_experts_per_tok: positiveInt,
  /** Per-expert FFN width. */
  intermediate_size: positiveInt,
  max_position_embeddings: positiveInt.optional(),
  norm_topk_prob: z.boolean().default(false),
  rms_norm_eps: z.number().positive().default(1e-5),
  rope_theta: z.number().positive().default(10000),
  routing: z.enum(['token_choice', 'expert_choice']).default('token_choice'),
  capacity_factor: z.number().positive().default(1),
  /** Width of an always-active shared expert (paper §4.1.3); 0 = none. Such checkpoints load in olmoe only. */
  shared_expert_intermediate_size: z.int().min(0).default(0),
  init_std: z.number().positive().default(0.02),
  /** Sparse upcycling: start every expert from the MLP of this dense (1-expert) checkpoint. */
  upcycle_from: z.string().optional(),
});

const schema = z.strictObject({
  /** Run folder: checkpoints, metrics.jsonl, latest.json. */
  out: z.string().min(1),
  seed: z.int().min(0).default(0),
  /** tokenizer.json (its vocabulary size is the model's). */
  tokenizer: z.string().min(1),
  model: modelSchema,
  data: z.strictObject({
    train: z.array(z.string().min(1)).min(1, 'name at least one shard'),
    valid: z.array(z.string().min(1)).default([]),
    sequence_length: positiveInt,
    /** Sequences per micro-batch. */
    batch_size: positiveInt,
    /** Gradient accumulation: micro-batches per optimizer step. */
    micro_batches: positiveInt.default(1),
  }),
  optimizer: z
    .strictObject({
      lr: z.number().positive().default(4e-4),
      betas: z.tuple([fraction, fraction]).default([0.9, 0.95]),
      eps: z.number().positive().default(1e-8),
      weight_decay: z.number().min(0).default(0.1),
      clip: z.number().positive().default(1.0),
      warmup_steps: z.int().min(0).default(100),
      final_lr_ratio: fraction.default(0.1),
    })
    .default({ lr: 4e-4, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1, clip: 1.0, warmup_steps: 100, final_lr_ratio: 0.1 }),
  loss: z
    .strictObject({ load_balancing: z.number().min(0).default(0.01), router_z: z.number().min(0).default(0.001) })
    .default({ load_balancing: 0.01, router_z: 0.001 }),
  steps: positiveInt,
  /**
   * Matrix products in 'bf16' mixed precision (operands rounded to bfloat16, float32 sums; master weights, gradients,
   * optimizer state and every other op stay float32), as the paper trained; default 'fp32'. Not part of the resume
   * fingerprint: a run may switch when resumed (its continuation then differs from an unbroken run's bits).
   */
  precision: z.enum(['fp32', 'bf16']).default('fp32'),
  eval_every: z.int().min(0).default(0),
  eval_batches: positiveInt.default(8),
  checkpoint_every: z.int().min(0).default(0),
  /** Write checkpoints in this dtype too (HF folder `export/`) when the run ends, e.g. bf16 for a small download. */
  export_dtype: z.enum(['f32', 'bf16', 'f16']).optional(),
  /** In-loop evaluation (paper §4, appendix D): task or suite files as `olmoe eval --tasks` takes, scored every N steps. */
  eval_tasks: z.array(z.string().min(1)).optional(),
  eval_tasks_every: positiveInt.optional(),
  /** At most this many instances per task (sampled with the task's seed), so that in-loop evaluation stays cheap. */
  eval_tasks_limit: positiveInt.optional(),
});

export type TrainConfig = z.infer<typeof schema>;

/** Read and validate a training config; relative paths in it are relative to the file. */
export function readTrainConfig(path: string): TrainConfig {
  const config = parseTrainConfig(readJsonObject(path), path);
  const base = dirname(resolve(path));
  const at = (p: string) => resolve(base, p);
  return {
    ...config,
    out: at(config.out),
    tokenizer: at(config.tokenizer),
    data: { ...config.data, train: config.data.train.map(at), valid: config.data.valid.map(at) },
    model: { ...config.model, ...(config.model.upcycle_from ? { upcycle_from: at(config.model.upcycle_from) } : {}) },
    ...(config.eval_tasks ? { eval_tasks: checkTaskFiles(config.eval_tasks.map(at), path) } : {}),
  };
}

/** Every in-loop task file exists (its contents are checked when the run starts, before the first step). */
function checkTaskFiles(files: string[], configFile: string): string[] {
  files.forEach((file, i) => {
    if (!existsSync(file)) throw new ConfigError(`eval_tasks[${i}]`, `task file ${file} does not exist`, configFile);
  });
  return files;
}

/** eval_tasks and eval_tasks_every come together; the interval must fall within the run. */
function checkInLoopEval(config: TrainConfig, file: string): void {
  const { eval_tasks: tasks, eval_tasks_every: every, eval_tasks_limit: limit } = config;
  if (tasks?.length === 0) throw new ConfigError('eval_tasks', 'is empty: name at least one task file, or leave the key out', file);
  if (tasks && every === undefined) throw new ConfigError('eval_tasks_every', 'is missing: eval_tasks needs the interval in steps at which to score them', file);
  if (!tasks && (every !== undefined || limit !== undefined)) throw new ConfigError(every !== undefined ? 'eval_tasks_every' : 'eval_tasks_limit', 'is set but eval_tasks is not: name the task files to score', file);
  if (every !== undefined && every > config.steps) throw new ConfigError('eval_tasks_every', `${every} is more than steps (${config.steps}): the tasks would never be scored`, file);
}

export function parseTrainConfig(json: unknown, file = 'train config'): TrainConfig {
  const result = schema.safeParse(json);
  if (result.success) {
    const { optimizer, steps } = result.data;
    if (optimizer.warmup_steps >= steps) throw new ConfigError('optimizer.warmup_steps', `${optimizer.warmup_steps} must be less than steps (${steps})`, file);
    checkInLoopEval(result.data, file);
    return result.data;
  }
  const issue = result.error.issues[0]!;
  const key = issue.path.join('.') || '(root)';
  const message = issue.code === 'unrecognized_keys' ? `unknown key(s) ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}` : issue.message;
  throw new ConfigError(key, message, file);
}

/**
 * What a resumed run must share with the run that wrote the checkpoint: everything except the step budget,
 * the evaluation/checkpoint cadence and the output folder.
 */
export function resumeFingerprint(c: TrainConfig): string {
  const { model, data, optimizer, loss, seed } = c;
  return createHash('sha256').update(JSON.stringify({ model, data, optimizer, loss, seed })).digest('hex').slice(0, 16);
}
