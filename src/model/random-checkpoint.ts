/**
 * Write a random-weight OLMoE checkpoint in HF layout, streamed tensor by tensor so that a full-size
 * OLMoE-1B-7B (13.8 GB in bf16) never needs more than a few MB of memory. Weights ~ N(0, σ) as HF's
 * initializer (σ = initializer_range), norms = 1. Used for tests, benchmarks and the demo.
 */
import { mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeFloats, type FloatDType } from '../core/dtype.js';
import { InputError, withIo } from '../core/errors.js';
import { removeStaleStaging, stagingPath } from '../io/atomic-file.js';
import { SafetensorsWriter, tensorByteLength, type TensorSpec } from '../io/safetensors-writer.js';
import { createRng, type Rng } from '../core/rng.js';
import { byteLevelTokenizerJson, EOS_TOKEN, PAD_TOKEN } from '../tokenizer/byte-level.js';
import { parseConfig, type OlmoeConfig } from './config.js';
import { weightTable } from './weights.js';

export interface RandomCheckpointOptions {
  layers: number;
  experts: number;
  topK: number;
  hidden: number;
  heads: number;
  kvHeads?: number;
  /** Per-expert FFN width. */
  intermediate: number;
  vocab: number;
  context: number;
  dtype: FloatDType;
  seed: number;
  shards?: number;
  std?: number;
  normTopKProb?: boolean;
  onProgress?: (written: number, total: number) => void;
}

/** OLMoE-1B-7B's shape (spec §1.1). */
export const OLMOE_1B_7B = { layers: 16, experts: 64, topK: 8, hidden: 2048, heads: 16, intermediate: 1024, vocab: 50304, context: 4096 };

/**
 * Write the checkpoint into a temporary sibling folder, then move its files into `dir` (replacing an earlier
 * checkpoint's weight files there), so an interrupted run never leaves a half-written model behind.
 */
export function writeRandomCheckpoint(dir: string, opts: RandomCheckpointOptions): OlmoeConfig {
  const { json: tokenizerJson, eosId, padId, size } = byteLevelTokenizerJson();
  if (opts.vocab < size) throw new InputError(`vocab ${opts.vocab} is smaller than the byte-level tokenizer's ${size} ids`);
  const configJson = hfConfigJson(opts, eosId, padId);
  const config = parseConfig(configJson);
  const staging = stagingPath(dir);
  removeStaleStaging(dir); // what a killed earlier run left
  withIo(staging, 'create folder', () => mkdirSync(staging, { recursive: true }));
  try {
    writeWeights(staging, config, opts);
    writeJson(join(staging, 'config.json'), configJson);
    writeJson(join(staging, 'generation_config.json'), { eos_token_id: eosId, pad_token_id: padId });
    writeJson(join(staging, 'tokenizer.json'), tokenizerJson);
    writeJson(join(staging, 'tokenizer_config.json'), { add_bos_token: false, add_eos_token: false, bos_token: null, eos_token: EOS_TOKEN, pad_token: PAD_TOKEN, clean_up_tokenization_spaces: false, model_max_length: opts.context });
    moveInto(staging, dir);
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
  return config;
}

/** Move every file of `staging` into `dir`, first removing weight files that would otherwise mix with the new ones. */
function moveInto(staging: string, dir: string): void {
  withIo(dir, 'create folder', () => mkdirSync(dir, { recursive: true }));
  for (const name of readdirSync(dir)) {
    if (/^model.*\.safetensors(\.index\.json)?$/.test(name)) withIo(join(dir, name), 'remove', () => rmSync(join(dir, name)));
  }
  for (const name of readdirSync(staging)) withIo(join(dir, name), 'write', () => renameSync(join(staging, name), join(dir, name)));
}

function hfConfigJson(o: RandomCheckpointOptions, eosId: number, padId: number): Record<string, unknown> {
  return {
    architectures: ['OlmoeForCausalLM'], model_type: 'olmoe', attention_bias: false, attention_dropout: 0.0, clip_qkv: null,
    bos_token_id: null, eos_token_id: eosId, pad_token_id: padId, hidden_act: 'silu',
    hidden_size: o.hidden, initializer_range: o.std ?? 0.02, intermediate_size: o.intermediate, max_position_embeddings: o.context,
    norm_topk_prob: o.normTopKProb ?? false, num_attention_heads: o.heads, num_experts: o.experts, num_experts_per_tok: o.topK,
    num_hidden_layers: o.layers, num_key_value_heads: o.kvHeads ?? o.heads, output_router_logits: false, rms_norm_eps: 1e-5,
    rope_scaling: null, rope_theta: 10000.0, router_aux_loss_coef: 0.01, tie_word_embeddings: false,
    torch_dtype: { f32: 'float32', bf16: 'bfloat16', f16: 'float16' }[o.dtype], use_cache: true, vocab_size: o.vocab,
    olmoe_note: 'random weights written by `olmoe create-random`; generates noise',
  };
}

function writeWeights(dir: string, config: OlmoeConfig, opts: RandomCheckpointOptions): void {
  const specs: TensorSpec[] = weightTable(config).map((w) => ({ name: w.hf, dtype: opts.dtype, shape: w.shape }));
  const shards = splitIntoShards(specs, opts.shards ?? 1);
  const total = specs.reduce((sum, s) => sum + tensorByteLength(s), 0);
  const rng = createRng(opts.seed);
  let written = 0;
  const names = shards.map((_, i) => (shards.length === 1 ? 'model.safetensors' : `model-${pad5(i + 1)}-of-${pad5(shards.length)}.safetensors`));
  shards.forEach((shard, i) => {
    const writer = new SafetensorsWriter(join(dir, names[i]!), shard);
    try {
      for (const spec of shard) {
        for (const chunk of randomChunks(spec, opts.std ?? 0.02, rng)) writer.write(chunk);
        opts.onProgress?.((written += tensorByteLength(spec)), total);
      }
      writer.finish();
    } catch (error) {
      writer.abort();
      throw error;
    }
  });
  if (shards.length > 1) writeIndex(dir, shards, names, total);
}

function* randomChunks(spec: TensorSpec, std: number, rng: Rng): Generator<Uint8Array> {
  const count = spec.shape.reduce((a, b) => a * b, 1);
  const isNorm = spec.shape.length === 1; // every 1-D OLMoE weight is an RMSNorm gain
  const chunkSize = 1 << 20;
  for (let start = 0; start < count; start += chunkSize) {
    const values = new Float32Array(Math.min(chunkSize, count - start));
    if (isNorm) values.fill(1);
    else fillNormal(values, std, rng);
    yield encodeFloats(spec.dtype, values);
  }
}

/** Box–Muller: two normal samples per pair of uniforms. */
function fillNormal(values: Float32Array, std: number, rng: Rng): void {
  for (let i = 0; i < values.length; i += 2) {
    const radius = std * Math.sqrt(-2 * Math.log(1 - rng()));
    const angle = 2 * Math.PI * rng();
    values[i] = radius * Math.cos(angle);
    if (i + 1 < values.length) values[i + 1] = radius * Math.sin(angle);
  }
}

function splitIntoShards(specs: TensorSpec[], count: number): TensorSpec[][] {
  if (!Number.isInteger(count) || count < 1) throw new InputError(`shards must be a positive integer, got ${count}`);
  const total = specs.reduce((sum, s) => sum + tensorByteLength(s), 0);
  const shards: TensorSpec[][] = [[]];
  let filled = 0;
  for (const spec of specs) {
    if (filled >= (total / count) * shards.length && shards.length < count) shards.push([]);
    shards[shards.length - 1]!.push(spec);
    filled += tensorByteLength(spec);
  }
  return shards;
}

function writeIndex(dir: string, shards: TensorSpec[][], names: string[], total: number): void {
  const weightMap: Record<string, string> = {};
  shards.forEach((shard, i) => shard.forEach((spec) => (weightMap[spec.name] = names[i]!)));
  writeJson(join(dir, 'model.safetensors.index.json'), { metadata: { total_size: total }, weight_map: weightMap });
}

function pad5(n: number): string {
  return String(n).padStart(5, '0');
}

function writeJson(path: string, value: unknown): void {
  withIo(path, 'write', () => writeFileSync(path, JSON.stringify(value, null, 2) + '\n'));
}
