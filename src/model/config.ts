/**
 * OlmoeConfig: the flat typed record of an HF `config.json` (spec §1). Unknown keys are ignored; missing,
 * mistyped or impossible values are rejected with the key named. Routing switches are config, never constants.
 */
import { ConfigError, preview, UnsupportedError } from '../core/errors.js';
import { readJsonObject } from '../io/json.js';

export interface OlmoeConfig {
  readonly vocabSize: number;
  readonly hiddenSize: number; // D
  /** Per-expert FFN width F (spec §1.1: intermediate_size is per expert). */
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number; // H
  readonly numKVHeads: number; // Hkv
  readonly headDim: number; // Hd = D / H
  readonly numExperts: number; // E
  readonly numExpertsPerTok: number; // K
  /**
   * Width of an always-active shared expert added to the routed ones (paper §4.1.3), 0 for none. Not an HF
   * OlmoeForCausalLM key: checkpoints with a shared expert load in olmoe only. Key `shared_expert_intermediate_size`.
   */
  readonly sharedExpertSize: number;
  readonly normTopKProb: boolean;
  readonly rmsNormEps: number;
  readonly ropeTheta: number;
  readonly maxPositionEmbeddings: number;
  readonly tieWordEmbeddings: boolean;
  readonly clipQkv: number | null;
  readonly eosTokenIds: readonly number[];
  readonly bosTokenId: number | null;
  readonly padTokenId: number | null;
  /** torch_dtype as declared (informational; tensors carry their own dtype). */
  readonly torchDtype: string | null;
}

type Json = Record<string, unknown>;

export function readConfigFile(path: string): OlmoeConfig {
  return parseConfig(readJsonObject(path));
}

export function parseConfig(json: unknown): OlmoeConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new ConfigError('(root)', 'must be a JSON object');
  const raw = json as Json;
  checkModelType(raw);
  const hiddenSize = positiveInt(raw, 'hidden_size');
  const numHeads = positiveInt(raw, 'num_attention_heads');
  const numKVHeads = raw.num_key_value_heads == null ? numHeads : positiveInt(raw, 'num_key_value_heads');
  const numExperts = positiveInt(raw, 'num_experts');
  const numExpertsPerTok = positiveInt(raw, 'num_experts_per_tok');
  checkShapes({ hiddenSize, numHeads, numKVHeads, numExperts, numExpertsPerTok }, raw);
  return {
    vocabSize: positiveInt(raw, 'vocab_size'),
    hiddenSize,
    intermediateSize: positiveInt(raw, 'intermediate_size'),
    numLayers: positiveInt(raw, 'num_hidden_layers'),
    numHeads,
    numKVHeads,
    headDim: hiddenSize / numHeads,
    numExperts,
    numExpertsPerTok,
    sharedExpertSize: raw.shared_expert_intermediate_size == null || raw.shared_expert_intermediate_size === 0 ? 0 : positiveInt(raw, 'shared_expert_intermediate_size'),
    normTopKProb: bool(raw, 'norm_topk_prob', false),
    rmsNormEps: atMostOne(positiveNumber(raw, 'rms_norm_eps', 1e-5), 'rms_norm_eps'),
    ropeTheta: ropeTheta(raw),
    maxPositionEmbeddings: positiveInt(raw, 'max_position_embeddings'),
    tieWordEmbeddings: bool(raw, 'tie_word_embeddings', false),
    clipQkv: raw.clip_qkv == null ? null : positiveNumber(raw, 'clip_qkv'),
    eosTokenIds: tokenIds(raw, 'eos_token_id'),
    bosTokenId: optionalTokenId(raw, 'bos_token_id'),
    padTokenId: optionalTokenId(raw, 'pad_token_id'),
    torchDtype: typeof raw.torch_dtype === 'string' ? raw.torch_dtype : typeof raw.dtype === 'string' ? raw.dtype : null,
  };
}

function checkModelType(raw: Json): void {
  if (raw.model_type !== undefined && raw.model_type !== 'olmoe') {
    throw new UnsupportedError(`config.json: model_type ${preview(raw.model_type)} is not supported (expected "olmoe")`);
  }
}

function checkShapes(c: { hiddenSize: number; numHeads: number; numKVHeads: number; numExperts: number; numExpertsPerTok: number }, raw: Json): void {
  if (c.hiddenSize % c.numHeads !== 0) {
    throw new ConfigError('hidden_size', `${c.hiddenSize} is not divisible by num_attention_heads (${c.numHeads})`);
  }
  if ((c.hiddenSize / c.numHeads) % 2 !== 0) throw new ConfigError('hidden_size', `head dim ${c.hiddenSize / c.numHeads} must be even for RoPE`);
  if (c.numHeads % c.numKVHeads !== 0) {
    throw new ConfigError('num_key_value_heads', `${c.numKVHeads} does not divide num_attention_heads (${c.numHeads})`);
  }
  if (c.numExpertsPerTok > c.numExperts) {
    throw new ConfigError('num_experts_per_tok', `${c.numExpertsPerTok} is more than num_experts (${c.numExperts})`);
  }
  if (raw.head_dim != null && raw.head_dim !== c.hiddenSize / c.numHeads) {
    throw new UnsupportedError(`config.json: head_dim ${preview(raw.head_dim)} differs from hidden_size / num_attention_heads; OLMoE derives it`);
  }
  const hiddenAct = raw.hidden_act ?? 'silu';
  if (hiddenAct !== 'silu') throw new UnsupportedError(`config.json: hidden_act ${preview(hiddenAct)} is not supported (OLMoE uses "silu")`);
  if (raw.attention_bias === true) throw new UnsupportedError('config.json: attention_bias true is not supported (OLMoE has no biases)');
}

/** rope_theta (HF v4) or rope_parameters.rope_theta (HF v5); only the default, unscaled rope is OLMoE's. */
function ropeTheta(raw: Json): number {
  if (raw.rope_scaling != null) throw new UnsupportedError(`config.json: rope_scaling ${preview(raw.rope_scaling)} is not supported (OLMoE uses none)`);
  const params = raw.rope_parameters;
  if (params != null) {
    if (typeof params !== 'object' || Array.isArray(params)) throw new ConfigError('rope_parameters', 'must be an object');
    const p = params as Json;
    if (p.rope_type != null && p.rope_type !== 'default') throw new UnsupportedError(`config.json: rope_parameters.rope_type ${preview(p.rope_type)} is not supported`);
    return atLeastOne(positiveNumber(p, 'rope_theta', 10000, 'rope_parameters.rope_theta'), 'rope_parameters.rope_theta');
  }
  return atLeastOne(positiveNumber(raw, 'rope_theta', 10000), 'rope_theta');
}

/** RoPE's base: below 1 the inverse frequencies θ^(−2i/Hd) grow without bound (1e-300 gives infinities). */
function atLeastOne(theta: number, key: string): number {
  if (theta < 1) throw new ConfigError(key, `${theta} is below 1; RoPE needs a base ≥ 1 (OLMoE uses 10000)`);
  return theta;
}

/**
 * Upper bounds far above any released model (OLMoE-1B-7B: 16 layers, 64 experts, 4096 positions), so that a
 * corrupt or hostile count is refused by name before anything is sized by it.
 */
export const CONFIG_LIMITS: Readonly<Record<string, number>> = {
  vocab_size: 1 << 24, hidden_size: 1 << 16, intermediate_size: 1 << 20, shared_expert_intermediate_size: 1 << 20,
  num_hidden_layers: 1024, num_attention_heads: 1024, num_key_value_heads: 1024, num_experts: 4096,
  num_experts_per_tok: 4096, max_position_embeddings: 1 << 24,
};

function positiveInt(raw: Json, key: string): number {
  const value = raw[key];
  if (value === undefined) throw new ConfigError(key, 'missing');
  if (!Number.isSafeInteger(value) || (value as number) <= 0) throw new ConfigError(key, `${preview(value)} is not a positive integer`);
  const limit = CONFIG_LIMITS[key];
  if (limit !== undefined && (value as number) > limit) throw new ConfigError(key, `${value} is larger than olmoe accepts (${limit})`);
  return value as number;
}

function positiveNumber(raw: Json, key: string, fallback?: number, label = key): number {
  const value = raw[key] ?? fallback;
  if (value === undefined) throw new ConfigError(label, 'missing');
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw new ConfigError(label, `${preview(value)} is not a positive number`);
  return value;
}

function atMostOne(value: number, key: string): number {
  if (value > 1) throw new ConfigError(key, `${value} is above 1; RMSNorm's epsilon is a small guard (OLMoE uses 1e-5)`);
  return value;
}

function bool(raw: Json, key: string, fallback: boolean): boolean {
  const value = raw[key] ?? fallback;
  if (typeof value !== 'boolean') throw new ConfigError(key, `${preview(value)} is not true or false`);
  return value;
}

function optionalTokenId(raw: Json, key: string): number | null {
  const value = raw[key];
  if (value == null) return null;
  if (!Number.isSafeInteger(value) || (value as number) < 0) throw new ConfigError(key, `${preview(value)} is not a token id`);
  return value as number;
}

/** eos_token_id may be an id, a list of ids, or absent. */
export function tokenIds(raw: Json, key: string, file = 'config.json'): number[] {
  const value = raw[key];
  if (value == null) return [];
  const list = Array.isArray(value) ? value : [value];
  if (!list.every((v) => Number.isSafeInteger(v) && v >= 0)) throw new ConfigError(key, `${preview(value)} is not a token id or list of ids`, file);
  return list as number[];
}

/** Total and per-token active parameter counts (spec §2.1). */
export function parameterCounts(c: OlmoeConfig): { total: number; active: number } {
  const attention = c.hiddenSize * (c.numHeads + 2 * c.numKVHeads) * c.headDim + c.numHeads * c.headDim * c.hiddenSize;
  const norms = 2 * c.hiddenSize + c.numHeads * c.headDim + c.numKVHeads * c.headDim;
  const router = c.numExperts * c.hiddenSize;
  const expert = 3 * c.hiddenSize * c.intermediateSize;
  const shared = 3 * c.hiddenSize * c.sharedExpertSize;
  const embeddings = c.vocabSize * c.hiddenSize * (c.tieWordEmbeddings ? 1 : 2) + c.hiddenSize;
  const perLayerShared = attention + norms + router + shared;
  return {
    total: embeddings + c.numLayers * (perLayerShared + c.numExperts * expert),
    active: embeddings + c.numLayers * (perLayerShared + c.numExpertsPerTok * expert),
  };
}

/** The HF `config.json` of a config (what `parseConfig` reads back to the same record). */
export function toHfConfigJson(c: OlmoeConfig, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    architectures: ['OlmoeForCausalLM'], model_type: 'olmoe', attention_bias: false, attention_dropout: 0.0, clip_qkv: c.clipQkv,
    bos_token_id: c.bosTokenId, eos_token_id: c.eosTokenIds.length === 1 ? c.eosTokenIds[0] : c.eosTokenIds, pad_token_id: c.padTokenId,
    hidden_act: 'silu', hidden_size: c.hiddenSize, initializer_range: 0.02, intermediate_size: c.intermediateSize,
    max_position_embeddings: c.maxPositionEmbeddings, norm_topk_prob: c.normTopKProb, num_attention_heads: c.numHeads,
    num_experts: c.numExperts, num_experts_per_tok: c.numExpertsPerTok, num_hidden_layers: c.numLayers, num_key_value_heads: c.numKVHeads,
    output_router_logits: false, rms_norm_eps: c.rmsNormEps, rope_scaling: null, rope_theta: c.ropeTheta, router_aux_loss_coef: 0.01,
    tie_word_embeddings: c.tieWordEmbeddings, torch_dtype: c.torchDtype ?? 'float32', use_cache: true, vocab_size: c.vocabSize,
    ...(c.sharedExpertSize ? { shared_expert_intermediate_size: c.sharedExpertSize } : {}), ...extra,
  };
}
