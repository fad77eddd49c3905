/**
 * An OLMoE GGUF file seen as a checkpoint: config from its `olmoe.*` metadata (spec §5), tensors renamed to HF
 * names through the weight table, and stacked expert tensors ([E, F, D] in one GGUF tensor) cut into per-expert
 * slices that still point into the file, so they map without copying.
 */
import { byteSize } from '../core/dtype.js';
import { ConfigError, FormatError, preview, UnsupportedError, WeightError } from '../core/errors.js';
import { metadataNumber, type GgufFile } from '../io/gguf.js';
import type { TensorEntry } from '../io/safetensors.js';
import { parseConfig, type OlmoeConfig } from './config.js';
import { weightTable } from './weights.js';

/** The HF config.json that the GGUF metadata describes. */
export function ggufConfig(gguf: GgufFile): OlmoeConfig {
  const architecture = gguf.metadata.get('general.architecture');
  if (architecture !== 'olmoe') {
    throw new UnsupportedError(`${gguf.file}: GGUF architecture ${preview(architecture)} is not OLMoE ("olmoe")`);
  }
  const required = (key: string) => {
    const value = metadataNumber(gguf, `olmoe.${key}`);
    if (value === undefined) throw new FormatError(gguf.file, `metadata olmoe.${key} is missing or not a number`);
    return value;
  };
  const optional = (key: string) => metadataNumber(gguf, key);
  const embedding = gguf.tensors.get('token_embd.weight');
  if (!embedding) throw new FormatError(gguf.file, 'has no token_embd.weight tensor');
  const heads = required('attention.head_count');
  try {
    return parseConfig(configJson(gguf, required, optional, embedding.shape[0]!, heads));
  } catch (error) {
    // parseConfig's errors name a config.json this file does not have: name the file and the metadata key instead.
    if (!(error instanceof ConfigError)) throw error;
    throw new ConfigError(error.key, `${error.problem} (read from metadata ${GGUF_KEYS[error.key] ?? error.key})`, gguf.file);
  }
}

/** The GGUF metadata key that each config.json key is read from. */
const GGUF_KEYS: Record<string, string> = {
  vocab_size: 'token_embd.weight (rows)', hidden_size: 'olmoe.embedding_length', intermediate_size: 'olmoe.expert_feed_forward_length / olmoe.feed_forward_length',
  num_hidden_layers: 'olmoe.block_count', num_attention_heads: 'olmoe.attention.head_count', num_key_value_heads: 'olmoe.attention.head_count_kv',
  num_experts: 'olmoe.expert_count', shared_expert_intermediate_size: 'olmoe.expert_shared_feed_forward_length', num_experts_per_tok: 'olmoe.expert_used_count',
  max_position_embeddings: 'olmoe.context_length', rope_theta: 'olmoe.rope.freq_base', rms_norm_eps: 'olmoe.attention.layer_norm_rms_epsilon',
  eos_token_id: 'tokenizer.ggml.eos_token_id', bos_token_id: 'tokenizer.ggml.bos_token_id', pad_token_id: 'tokenizer.ggml.padding_token_id',
};

function configJson(gguf: GgufFile, required: (key: string) => number, optional: (key: string) => number | undefined, vocab: number, heads: number): Record<string, unknown> {
  return {
    model_type: 'olmoe',
    vocab_size: vocab,
    hidden_size: required('embedding_length'),
    intermediate_size: optional('olmoe.expert_feed_forward_length') ?? required('feed_forward_length'),
    num_hidden_layers: required('block_count'),
    num_attention_heads: heads,
    num_key_value_heads: optional('olmoe.attention.head_count_kv') ?? heads,
    num_experts: required('expert_count'),
    shared_expert_intermediate_size: optional('olmoe.expert_shared_feed_forward_length'),
    num_experts_per_tok: required('expert_used_count'),
    max_position_embeddings: required('context_length'),
    rope_theta: optional('olmoe.rope.freq_base') ?? 10000,
    rms_norm_eps: optional('olmoe.attention.layer_norm_rms_epsilon') ?? 1e-5,
    // llama.cpp's olmoe graph never renormalizes the top-k weights (spec §5).
    norm_topk_prob: gguf.metadata.get('olmoe.expert_weights_norm') === true,
    tie_word_embeddings: !gguf.tensors.has('output.weight'),
    eos_token_id: optional('tokenizer.ggml.eos_token_id') ?? null,
    bos_token_id: optional('tokenizer.ggml.bos_token_id') ?? null,
    pad_token_id: optional('tokenizer.ggml.padding_token_id') ?? null,
  };
}

/**
 * Tensors by HF name. Names the table does not know stay under their GGUF name, so strict loading reports
 * them as extra; a stacked expert tensor of the wrong shape is an error naming it.
 */
export function ggufTensorsByHfName(config: OlmoeConfig, gguf: GgufFile): Map<string, TensorEntry> {
  const out = new Map<string, TensorEntry>();
  const used = new Set<string>();
  for (const spec of weightTable(config)) {
    const entry = gguf.tensors.get(spec.gguf);
    if (!entry) continue;
    used.add(spec.gguf);
    const expert = /\.mlp\.experts\.(\d+)\./.exec(spec.hf);
    if (!expert) {
      out.set(spec.hf, { ...entry, name: spec.hf });
      continue;
    }
    const index = Number(expert[1]);
    const stackedShape = [config.numExperts, ...spec.shape];
    if (entry.shape.join() !== stackedShape.join()) {
      throw new WeightError(`tensor shape mismatch: ${spec.gguf} is [${entry.shape.join(', ')}] in ${gguf.file}, config requires [${stackedShape.join(', ')}]`);
    }
    const sliceBytes = byteSize(entry.dtype, spec.shape);
    out.set(spec.hf, { ...entry, name: spec.hf, shape: spec.shape, offset: entry.offset + index * sliceBytes, byteLength: sliceBytes });
  }
  for (const [name, entry] of gguf.tensors) if (!used.has(name)) out.set(name, entry);
  return out;
}
