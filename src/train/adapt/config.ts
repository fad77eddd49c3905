/**
 * Configs of `olmoe sft|dpo|kto CONFIG.json` (the commands come with the reworked training engine; the schemas and
 * their checks are here so data and settings can be validated now). Defaults follow the paper's adaptation recipe
 * (appendix C/G: open-instruct's Tülu 2 settings) and TRL where the paper is silent:
 * - SFT: lr 2e-5, constant after warmup (paper: "constant LR after warmup"), loss summed per token, packing on,
 *   load balancing off (appendix B.3: slightly worse when on).
 * - DPO: β 0.1, lr 5e-7 (Tülu 2), the reference's log-probs cached.
 * - KTO: β 0.1, desirable = undesirable = 1, RMSProp as the paper used.
 * Unknown keys are refused by name, as in the pretraining config, so a typo never trains with a default.
 */
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { z } from 'zod';
import { ConfigError } from '../../core/errors.js';
import { readJsonObject } from '../../io/json.js';
import type { LoraSettings } from './peft.js';

const positiveInt = z.int().min(1, 'must be a positive integer');
const fraction = z.number().min(0, 'must be in [0, 1]').max(1, 'must be in [0, 1]');

const loraSchema = z.strictObject({
  r: positiveInt.default(16),
  alpha: z.number().positive().default(32),
  dropout: z.number().min(0).max(0.99).default(0.05),
  /** Attention projections to adapt. */
  attention: z.array(z.enum(['q_proj', 'k_proj', 'v_proj', 'o_proj'])).default(['q_proj', 'k_proj', 'v_proj', 'o_proj']),
  /** Experts' projections: none, or gate/up/down of every expert. */
  experts: z.enum(['none', 'all']).default('none'),
  /** The router (mlp.gate) only when asked. */
  router: z.boolean().default(false),
  use_rslora: z.boolean().default(false),
});

const dataSchema = z.strictObject({
  train: z.array(z.string().min(1)).min(1, 'name at least one JSONL file'),
  valid: z.array(z.string().min(1)).default([]),
  max_length: z.int().min(2, 'must be at least 2').default(2048),
  /** Over max_length: drop the sequence or cut it from the right (both counted). */
  overflow: z.enum(['drop', 'truncate']).default('drop'),
  batch_size: positiveInt.default(8),
  micro_batches: positiveInt.default(1),
});

const optimizerSchema = (lr: number, kind: readonly [string, ...string[]]) =>
  z
    .strictObject({
      kind: z.enum(kind).default(kind[0]),
      lr: z.number().positive().default(lr),
      betas: z.tuple([fraction, fraction]).default([0.9, 0.999]),
      eps: z.number().positive().default(1e-8),
      weight_decay: z.number().min(0).default(0),
      clip: z.number().positive().default(1.0),
      warmup_steps: z.int().min(0).default(0),
      /** constant after warmup (the paper's SFT and DPO), or linear decay to 0 (open-instruct's default). */
      schedule: z.enum(['constant', 'linear']).default('constant'),
      /** RMSProp's smoothing constant (PyTorch RMSprop `alpha`); betas are AdamW's. */
      alpha: z.number().min(0).max(0.9999).default(0.99),
    })
    .prefault({});

const common = {
  /** Starting checkpoint (folder or hub id); DPO/KTO: also the reference model. */
  model: z.string().min(1),
  out: z.string().min(1),
  seed: z.int().min(0).default(0),
  epochs: positiveInt.default(2),
  /** Overrides epochs when set. */
  steps: positiveInt.optional(),
  lora: loraSchema.optional(),
  checkpoint_every: z.int().min(0).default(0),
  data: dataSchema,
};

const sftSchema = z.strictObject({
  ...common,
  optimizer: optimizerSchema(2e-5, ['adamw']),
  /** Per token (the paper, open-instruct's "sum" then divided by tokens in the batch) or per sequence (TRL's default). */
  loss_reduction: z.enum(['token', 'sequence']).default('token'),
  packing: z.boolean().default(true),
  /** Load-balancing loss coefficient during SFT; 0 = off (appendix B.3). Per-expert load is logged either way. */
  load_balancing: z.number().min(0).default(0),
});

const dpoSchema = z.strictObject({
  ...common,
  optimizer: optimizerSchema(5e-7, ['adamw']),
  loss: z.enum(['dpo', 'dpo_norm', 'simpo']).default('dpo'),
  beta: z.number().positive().default(0.1),
  label_smoothing: z.number().min(0).max(0.49).default(0),
  /** SimPO's target margin γ. */
  gamma: z.number().min(0).optional(),
  /** Folder of reference log-prob caches. */
  reference_cache: z.string().min(1).optional(),
});

const ktoSchema = z.strictObject({
  ...common,
  optimizer: optimizerSchema(5e-7, ['rmsprop', 'adamw']),
  beta: z.number().positive().default(0.1),
  desirable_weight: z.number().positive().default(1),
  undesirable_weight: z.number().positive().default(1),
  reference_cache: z.string().min(1).optional(),
});

export type SftConfig = z.infer<typeof sftSchema>;
export type LoraConfig = z.infer<typeof loraSchema>;
export type DpoConfig = z.infer<typeof dpoSchema>;
export type KtoConfig = z.infer<typeof ktoSchema>;
export type AdaptKind = 'sft' | 'dpo' | 'kto';

function parseWith<T>(schema: z.ZodType<T>, json: unknown, file: string): T {
  const result = schema.safeParse(json);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const key = issue.path.join('.') || '(root)';
  const message = issue.code === 'unrecognized_keys' ? `unknown key(s) ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}` : issue.message;
  throw new ConfigError(key, message, file);
}

/** A key the chosen optimizer would ignore (AdamW's betas under RMSProp, RMSProp's alpha under AdamW) is an error. */
function checkOptimizerKeys(json: unknown, kind: string, file: string): void {
  const raw = typeof json === 'object' && json !== null ? (json as { optimizer?: unknown }).optimizer : undefined;
  if (typeof raw !== 'object' || raw === null) return;
  const foreign = kind === 'rmsprop' ? ['betas'] : ['alpha'];
  for (const key of foreign) {
    if (key in raw) throw new ConfigError(`optimizer.${key}`, `is not a setting of ${kind} (${key === 'betas' ? "AdamW's; RMSProp takes alpha" : "RMSProp's; AdamW takes betas"})`, file);
  }
}

/** Checks across keys, named by key. */
function checkCommon(config: { steps?: number; optimizer: { warmup_steps: number; kind: string }; lora?: z.infer<typeof loraSchema> }, file: string, json?: unknown): void {
  checkOptimizerKeys(json, config.optimizer.kind, file);
  if (config.steps !== undefined && config.optimizer.warmup_steps >= config.steps) {
    throw new ConfigError('optimizer.warmup_steps', `${config.optimizer.warmup_steps} must be less than steps (${config.steps})`, file);
  }
  const lora = config.lora;
  if (lora && lora.experts === 'all' && lora.dropout > 0) {
    throw new ConfigError('lora.dropout', `${lora.dropout} with experts "all": an expert's adapter is merged into its weight, which cannot drop per-token inputs; set dropout 0 or experts "none"`, file);
  }
  if (lora && lora.attention.length === 0 && lora.experts === 'none' && !lora.router) throw new ConfigError('lora', 'adapts no module: name attention projections, experts "all" or router true', file);
}

export function parseSftConfig(json: unknown, file = 'sft config'): SftConfig {
  const config = parseWith(sftSchema, json, file);
  checkCommon(config, file, json);
  return config;
}

export function parseDpoConfig(json: unknown, file = 'dpo config'): DpoConfig {
  const config = parseWith(dpoSchema, json, file);
  checkCommon(config, file, json);
  if (config.gamma !== undefined && config.loss !== 'simpo') throw new ConfigError('gamma', `is SimPO's target margin; loss is "${config.loss}"`, file);
  return config;
}

export function parseKtoConfig(json: unknown, file = 'kto config'): KtoConfig {
  const config = parseWith(ktoSchema, json, file);
  checkCommon(config, file, json);
  if (config.data.valid.length > 0) throw new ConfigError('data.valid', 'KTO has no held-out evaluation yet; remove it (evaluate the result with olmoe eval)', file);
  return config;
}

/** Read and validate an adaptation config; relative paths in it are relative to the file. */
export function readAdaptConfig<K extends AdaptKind>(kind: K, path: string): K extends 'sft' ? SftConfig : K extends 'dpo' ? DpoConfig : KtoConfig {
  const parse = { sft: parseSftConfig, dpo: parseDpoConfig, kto: parseKtoConfig }[kind] as (json: unknown, file: string) => SftConfig | DpoConfig | KtoConfig;
  const config = parse(readJsonObject(path), path);
  const at = (p: string) => resolve(dirname(resolve(path)), p);
  const resolved = {
    ...config,
    out: at(config.out),
    model: existsSync(at(config.model)) ? at(config.model) : config.model, // otherwise a hub id, kept as written
    data: { ...config.data, train: config.data.train.map(at), valid: config.data.valid.map(at) },
    ...('reference_cache' in config && config.reference_cache ? { reference_cache: at(config.reference_cache) } : {}),
  };
  return resolved as K extends 'sft' ? SftConfig : K extends 'dpo' ? DpoConfig : KtoConfig;
}

/** PEFT target_modules suffixes of each choice of the config's lora block (module names of model/weights.ts). */
const EXPERT_PROJECTIONS = ['gate_proj', 'up_proj', 'down_proj'];
const ROUTER = 'mlp.gate';

/**
 * The config's `lora` block as PEFT settings: attention projections by name, every expert's gate/up/down when
 * experts is "all", the router (mlp.gate) only when asked. `base` is recorded as PEFT's base_model_name_or_path.
 */
export function loraSettings(lora: LoraConfig, base: string | null): LoraSettings {
  const targetModules = [...lora.attention, ...(lora.experts === 'all' ? EXPERT_PROJECTIONS : []), ...(lora.router ? [ROUTER] : [])];
  return { r: lora.r, alpha: lora.alpha, dropout: lora.dropout, targetModules, useRslora: lora.use_rslora, baseModelNameOrPath: base };
}
