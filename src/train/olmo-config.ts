/**
 * A run's config as OLMo's training YAML, in the form of allenai/OLMoE's `configs/OLMoE-1B-7B-0924.yml` (OLMo's
 * TrainConfig on its MoE branch: model / optimizer / scheduler / data / evaluators, megablocks dMoE fields
 * `moe_*`). Every value that describes the run comes from the run's config; the rest are the GPU-side settings of
 * that file's form (FSDP, workers), chosen to change nothing in the math.
 *
 * Where the two trainers differ by construction, the YAML header says so:
 *   - OLMo's instance is `max_sequence_length` tokens predicting the last S − 1; this trainer's rows are S + 1
 *     tokens predicting S. Same context length, one prediction fewer per row.
 *   - OLMo counts steps from 1 (the step is incremented before the learning rate is set), this trainer from 0:
 *     with `warmup_min_lr: 0.0` the warmup is identical, the cosine runs one step ahead in OLMo.
 */
import { UnsupportedError } from '../core/errors.js';
import type { OlmoeConfig } from '../model/config.js';
import { commented, yamlFloat, type YamlValue } from '../io/yaml-writer.js';
import type { TrainConfig } from './config.js';
import type { ShardDType } from './data/shard.js';

export interface ExportedData {
  /** Memmap file names (in `root`), one per training shard. */
  train: readonly { path: string }[];
  /** One memmap per validation domain. */
  valid: readonly { path: string; domain: string }[];
  dtype: ShardDType;
  /** Folder prefix of the paths as OLMo will see them. */
  root: string;
}

export interface OlmoYaml {
  document: { [key: string]: YamlValue };
  header: string;
  notes: string[];
}

type Doc = { [key: string]: YamlValue };

/** Refuse what OLMo's MoE block (megablocks dMoE as OLMo configures it) cannot express. */
export function checkOlmoExpressible(config: TrainConfig): void {
  const m = config.model;
  if (m.routing !== 'token_choice') throw new UnsupportedError(`model.routing ${m.routing}: OLMo's MoE block (megablocks dMoE) routes by token choice only`);
  if (m.norm_topk_prob) throw new UnsupportedError('model.norm_topk_prob true: OLMo\'s MoE config has no field for renormalised top-k weights (OLMoE trains without them)');
  if (m.shared_expert_intermediate_size !== 0 && m.shared_expert_intermediate_size !== m.intermediate_size) {
    throw new UnsupportedError(`model.shared_expert_intermediate_size ${m.shared_expert_intermediate_size}: OLMo's moe_shared_expert has the routed experts' width (${m.intermediate_size}); another width cannot be expressed`);
  }
  if (!Number.isInteger(m.rope_theta)) throw new UnsupportedError(`model.rope_theta ${m.rope_theta}: OLMo's rope_theta is an integer`);
}

function modelSection(config: TrainConfig, model: OlmoeConfig, eosId: number): Doc {
  const m = config.model;
  return {
    d_model: model.hiddenSize,
    n_heads: model.numHeads,
    n_kv_heads: model.numKVHeads,
    n_layers: model.numLayers,
    // OLMo's SwiGLU projects to mlp_hidden_size and halves it (act.output_multiplier 0.5): the expert width is half.
    mlp_hidden_size: commented(`2 × the expert width ${m.intermediate_size} (OLMo's SwiGLU halves its projection)`, 2 * m.intermediate_size),
    weight_tying: false,
    alibi: false,
    rope: true,
    rope_theta: m.rope_theta,
    flash_attention: false,
    attention_dropout: yamlFloat(0),
    attention_layer_norm: commented('QK-norm over the whole q and k projections, with gains', true),
    attention_layer_norm_with_affine: true,
    include_bias: false,
    block_type: 'moe',
    layer_norm_type: 'rms',
    layer_norm_with_affine: true,
    layer_norm_eps: yamlFloat(m.rms_norm_eps),
    bias_for_layer_norm: false,
    activation_type: 'swiglu',
    residual_dropout: yamlFloat(0),
    embedding_dropout: yamlFloat(0),
    max_sequence_length: config.data.sequence_length,
    vocab_size: model.vocabSize,
    embedding_size: commented('no padding: the embedding has exactly the run\'s rows', model.vocabSize),
    eos_token_id: eosId,
    pad_token_id: commented(model.padTokenId === null ? 'the tokenizer has no padding token: EOS stands in' : 'the tokenizer\'s padding token', model.padTokenId ?? eosId),
    init_device: 'meta',
    init_fn: 'normal',
    init_std: yamlFloat(m.init_std),
    init_cutoff_factor: commented('truncated normal at ±3σ', yamlFloat(3)),
    moe_top_k: model.numExpertsPerTok,
    moe_num_experts: model.numExperts,
    moe_dropless: true,
    moe_mlp_impl: 'sparse',
    moe_shared_expert: m.shared_expert_intermediate_size > 0,
    moe_loss_weight: commented('load-balancing loss weight', yamlFloat(config.loss.load_balancing)),
    moe_zloss_weight: commented('router z-loss weight', yamlFloat(config.loss.router_z)),
  };
}

function optimizerSections(config: TrainConfig): Doc {
  const o = config.optimizer;
  return {
    optimizer: {
      name: 'adamw',
      learning_rate: yamlFloat(o.lr),
      eps: yamlFloat(o.eps),
      weight_decay: yamlFloat(o.weight_decay),
      decay_norm_and_bias: commented('this trainer decays matrices only: norm gains are not decayed', false),
      decay_embeddings: true,
      betas: o.betas.map(yamlFloat),
      metrics_log_interval: 10,
    },
    scheduler: {
      name: 'cosine_with_warmup',
      units: 'steps',
      t_warmup: o.warmup_steps,
      t_max: config.steps,
      alpha_f: yamlFloat(o.final_lr_ratio),
      warmup_min_lr: commented('warmup from 0 as this trainer does (OLMo\'s default starts at 10 %)', yamlFloat(0)),
    },
  };
}

function evaluatorsSection(data: ExportedData): YamlValue[] {
  if (data.valid.length === 0) return [];
  const datasets: Doc = {};
  for (const file of data.valid) datasets[`${file.domain}-validation`] = [`${data.root}/${file.path}`];
  return [{ label: 'validation', data: { num_workers: 0, drop_last: true, datasets } }];
}

function dataSection(data: ExportedData): Doc {
  return {
    pad_direction: 'right',
    num_workers: 4,
    drop_last: true,
    pin_memory: true,
    persistent_workers: true,
    timeout: 0,
    memmap_dtype: data.dtype,
    paths: data.train.map((file) => `${data.root}/${file.path}`),
  };
}

/** The YAML document of a run, its header comment, and what it cannot carry over. */
export function olmoTrainYaml(config: TrainConfig, model: OlmoeConfig, o: { eosId: number; data: ExportedData; runName: string }): OlmoYaml {
  checkOlmoExpressible(config);
  const { data: shape } = config;
  const notes: string[] = [];
  if (config.model.upcycle_from) notes.push(`the run starts from experts upcycled from ${config.model.upcycle_from}; OLMo's config cannot say so: load those weights yourself`);
  const everySteps = (n: number) => (n > 0 ? n : config.steps);
  const document: Doc = {
    run_name: o.runName,
    seed: config.seed,
    dry_run: false,
    model: modelSection(config, model, o.eosId),
    compile: null,
    ...optimizerSections(config),
    tokenizer: { identifier: 'tokenizer.json', truncate_direction: 'right' },
    save_folder: `runs/${o.runName}`,
    save_overwrite: false,
    save_interval: everySteps(config.checkpoint_every),
    save_num_checkpoints_to_keep: -1,
    sharded_checkpointer: 'olmo_core',
    load_path: null,
    max_duration: commented('optimizer steps', config.steps),
    global_train_batch_size: commented('sequences per optimizer step: batch_size × micro_batches', shape.batch_size * shape.micro_batches),
    device_train_microbatch_size: shape.batch_size,
    precision: config.precision === 'bf16'
      ? commented('this run trained with bf16 matrix products and float32 master weights: OLMo\'s automatic mixed precision', 'amp_bf16')
      : commented('this run trained in fp32; amp_bf16 is what the paper used on GPUs', 'fp32'),
    distributed_strategy: 'fsdp',
    fsdp: { wrapping_strategy: 'by_block', precision: 'mixed', sharding_strategy: 'FULL_SHARD' },
    max_grad_norm: yamlFloat(config.optimizer.clip),
    max_grad_norm_ratio: null,
    speed_monitor: { window_size: 1 },
    eval_interval: everySteps(config.eval_every),
    eval_subset_num_batches: config.eval_batches,
    device_eval_batch_size: shape.batch_size,
    evaluators: evaluatorsSection(o.data),
    data: dataSection(o.data),
  };
  const header = [
    `OLMo training config exported by \`olmoe export-olmo\` from run ${o.runName} (allenai/OLMoE configs/*.yml form).`,
    `Paths are relative to this folder (tokenizer.json, ${o.data.root}/): run OLMo's scripts/train.py from here, or move them and edit.`,
    `Differences by construction: OLMo instances are max_sequence_length tokens predicting S - 1 of them (this trainer: S + 1`,
    `tokens predicting S), and OLMo counts steps from 1, so after warmup its cosine runs one step ahead of this trainer's.`,
    ...notes.map((note) => `Note: ${note}.`),
  ].join('\n');
  return { document, header, notes };
}
