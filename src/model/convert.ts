/**
 * Write a GGUF (arch "olmoe", spec §5) from any checkpoint this project loads: HF folder → GGUF conversion,
 * and quantization (q8_0, q4_0, q4_k_m) from either format. Tensors stream one at a time (experts one by one into
 * the stacked tensors), widened to float32 and re-encoded, so memory stays near the largest single tensor.
 */
import { join } from 'node:path';
import { byteSize, encodeFloats, type DType } from '../core/dtype.js';
import { QUANT_BLOCKS } from '../core/quant.js';
import { InputError } from '../core/errors.js';
import type { GgufFile } from '../io/gguf.js';
import { GgufWriter, type GgufMetadataValue, type GgufTensorSpec } from '../io/gguf-writer.js';
import { readJsonObject, readJsonObjectIfExists } from '../io/json.js';
import { readTensorBytes, readTensorFloat32, type TensorEntry } from '../io/safetensors.js';
import { TOKEN_TYPES } from '../tokenizer/gguf.js';
import { MAX_TOKEN_ID } from '../tokenizer/tokenizer.js';
import type { OlmoeConfig } from './config.js';
import { matchCheckpoint, type Checkpoint } from './load.js';
import { weightTable, type WeightSpec } from './weights.js';

export const GGUF_TARGETS = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k_m'] as const;
export type GgufTarget = (typeof GGUF_TARGETS)[number];

/** llama.cpp's LlamaFileType codes. */
const FILE_TYPES: Record<GgufTarget, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, q4_k_m: 15, bf16: 32 };

type Metadata = Array<[string, GgufMetadataValue]>;

export interface ConvertOptions {
  target: GgufTarget;
  name?: string;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
  /** Called once per tensor that cannot take the wanted type (its rows do not fill whole blocks), and once with a count. */
  onFallback?: (message: string) => void;
}

interface OutputTensor {
  spec: GgufTensorSpec;
  /** HF tensors whose values, concatenated, make this GGUF tensor (E experts for the stacked ones). */
  parts: TensorEntry[];
}

export function writeGguf(checkpoint: Checkpoint, out: string, opts: ConvertOptions): void {
  const { config } = checkpoint;
  const entries = new Map(matchCheckpoint(config, checkpoint.tensors).map((e) => [e.name, e]));
  const outputs = plan(config, entries, opts.target);
  reportFallbacks(outputs, config, opts);
  const metadata: Metadata = [...modelMetadata(config, opts), ...tokenizerMetadata(checkpoint, config)];
  const writer = new GgufWriter(out, metadata, outputs.map((o) => o.spec));
  const total = outputs.reduce((sum, o) => sum + o.parts.reduce((s, p) => s + p.byteLength, 0), 0);
  let done = 0;
  try {
    for (const output of outputs) {
      for (const part of output.parts) {
        writer.write(reencode(part, output.spec.dtype));
        opts.onProgress?.((done += part.byteLength), total);
      }
    }
    writer.finish();
  } catch (error) {
    writer.abort();
    throw error;
  }
}

function reencode(part: TensorEntry, dtype: DType): Uint8Array {
  return part.dtype === dtype ? readTensorBytes(part) : encodeFloats(dtype, readTensorFloat32(part));
}

/** GGUF tensors in llama.cpp's order, with their types; stacked experts gather E HF tensors each. */
function plan(config: OlmoeConfig, entries: Map<string, TensorEntry>, target: GgufTarget): OutputTensor[] {
  const byGguf = new Map<string, { specs: WeightSpec[] }>();
  for (const spec of weightTable(config)) {
    const group = byGguf.get(spec.gguf) ?? byGguf.set(spec.gguf, { specs: [] }).get(spec.gguf)!;
    group.specs.push(spec);
  }
  return [...byGguf].map(([name, { specs }]) => {
    const shape = specs.length > 1 ? [specs.length, ...specs[0]!.shape] : specs[0]!.shape;
    return { spec: { name, shape, dtype: tensorType(name, shape, config, target) }, parts: specs.map((s) => entries.get(s.hf)!) };
  });
}

/** As llama-quantize does: each tensor whose row length does not fit the wanted type's blocks, and the count. */
function reportFallbacks(outputs: OutputTensor[], config: OlmoeConfig, opts: ConvertOptions): void {
  if (!opts.onFallback) return;
  let count = 0;
  for (const { spec } of outputs) {
    const wanted = wantedType(spec.name, spec.shape, config, opts.target);
    if (wanted === spec.dtype) continue;
    count++;
    const rowLength = spec.shape[spec.shape.length - 1]!;
    opts.onFallback(`${spec.name}: rows of ${rowLength} values are not a multiple of ${blockElements(wanted)} (a ${wanted} block); written as ${spec.dtype}`);
  }
  if (count > 0) opts.onFallback(`${count} of ${outputs.length} tensors fell back from the ${opts.target} types: this model's rows are too short for them`);
}

function blockElements(dtype: DType): number {
  return (QUANT_BLOCKS as Partial<Record<DType, { elements: number }>>)[dtype]?.elements ?? 1;
}

/**
 * The type of one tensor: norms and the router stay f32 (llama-quantize never quantizes ffn_gate_inp); q4_0 puts
 * the output head in q6_k; q4_k_m uses q6_k for the output head and for attn_v / ffn_down in the layers
 * llama.cpp's use_more_bits picks. A row that does not fit a block falls back to q8_0, then f16.
 */
export function tensorType(name: string, shape: readonly number[], config: OlmoeConfig, target: GgufTarget): DType {
  const wanted = wantedType(name, shape, config, target);
  for (const candidate of [wanted, 'q8_0', 'f16'] as DType[]) {
    try {
      byteSize(candidate, shape);
      return candidate;
    } catch {
      // the row length is not a multiple of this type's block; try the next
    }
  }
  return 'f32';
}

/** The type `target` asks for, before checking that the rows fit its blocks. */
function wantedType(name: string, shape: readonly number[], config: OlmoeConfig, target: GgufTarget): DType {
  if (shape.length === 1 || name.endsWith('ffn_gate_inp.weight')) return 'f32';
  const layer = Number(/^blk\.(\d+)\./.exec(name)?.[1] ?? -1);
  const n = config.numLayers;
  const moreBits = layer >= 0 && (layer < n / 8 || layer >= (7 * n) / 8 || (layer - Math.floor(n / 8)) % 3 === 2);
  let wanted: DType;
  if (target === 'q4_k_m') {
    const highPrecision = name === 'output.weight' || (moreBits && /attn_v|ffn_down/.test(name));
    wanted = highPrecision ? 'q6_k' : 'q4_k';
  } else if (target === 'q4_0') {
    wanted = name === 'output.weight' ? 'q6_k' : 'q4_0';
  } else {
    wanted = target;
  }
  return wanted;
}

function modelMetadata(c: OlmoeConfig, opts: ConvertOptions): Metadata {
  const u32 = (value: number): GgufMetadataValue => ({ type: 'u32', value });
  const f32 = (value: number): GgufMetadataValue => ({ type: 'f32', value });
  const metadata: Metadata = [
    ['general.architecture', { type: 'string', value: 'olmoe' }],
    ['general.name', { type: 'string', value: opts.name ?? 'OLMoE' }],
    ['general.file_type', u32(FILE_TYPES[opts.target])],
    ['olmoe.context_length', u32(c.maxPositionEmbeddings)],
    ['olmoe.embedding_length', u32(c.hiddenSize)],
    ['olmoe.block_count', u32(c.numLayers)],
    ['olmoe.feed_forward_length', u32(c.intermediateSize)],
    ['olmoe.attention.head_count', u32(c.numHeads)],
    ['olmoe.attention.head_count_kv', u32(c.numKVHeads)],
    ['olmoe.rope.freq_base', f32(c.ropeTheta)],
    ['olmoe.attention.layer_norm_rms_epsilon', f32(c.rmsNormEps)],
    ['olmoe.expert_count', u32(c.numExperts)],
    ['olmoe.expert_used_count', u32(c.numExpertsPerTok)],
  ];
  if (!['f32', 'f16', 'bf16'].includes(opts.target)) metadata.push(['general.quantization_version', u32(2)]);
  if (c.normTopKProb) metadata.push(['olmoe.expert_weights_norm', { type: 'bool', value: true }]);
  if (c.sharedExpertSize) metadata.push(['olmoe.expert_shared_feed_forward_length', u32(c.sharedExpertSize)]);
  return metadata;
}

/** tokenizer.ggml.* keys with the types llama.cpp reads them with. */
const TOKENIZER_KEY_TYPES: Record<string, GgufMetadataValue['type'] | 'string[]' | 'i32[]' | 'f32[]'> = {
  'tokenizer.ggml.model': 'string',
  'tokenizer.ggml.pre': 'string',
  'tokenizer.ggml.tokens': 'string[]',
  'tokenizer.ggml.token_type': 'i32[]',
  'tokenizer.ggml.scores': 'f32[]',
  'tokenizer.ggml.merges': 'string[]',
  'tokenizer.ggml.bos_token_id': 'u32',
  'tokenizer.ggml.eos_token_id': 'u32',
  'tokenizer.ggml.padding_token_id': 'u32',
  'tokenizer.ggml.unknown_token_id': 'u32',
  'tokenizer.ggml.add_bos_token': 'bool',
  'tokenizer.ggml.add_eos_token': 'bool',
  'tokenizer.chat_template': 'string',
};

function tokenizerMetadata(checkpoint: Checkpoint, config: OlmoeConfig): Metadata {
  return checkpoint.gguf ? copiedTokenizerMetadata(checkpoint.gguf) : hfTokenizerMetadata(checkpoint.path, config);
}

function copiedTokenizerMetadata(gguf: GgufFile): Metadata {
  const out: Metadata = [];
  for (const [key, type] of Object.entries(TOKENIZER_KEY_TYPES)) {
    const value = gguf.metadata.get(key);
    if (value === undefined) continue;
    if (type.endsWith('[]')) out.push([key, { type: 'array', elementType: type.slice(0, -2) as 'string', values: value as (string | number)[] }]);
    else out.push([key, { type, value } as GgufMetadataValue]);
  }
  return out;
}

/** tokens by id (padded to the vocabulary with [PAD{i}] as llama.cpp's converter does), types, merges, ids. */
function hfTokenizerMetadata(dir: string, config: OlmoeConfig): Metadata {
  const json = readJsonObject(join(dir, 'tokenizer.json'));
  const settings = { ...readJsonObjectIfExists(join(dir, 'special_tokens_map.json')), ...readJsonObjectIfExists(join(dir, 'tokenizer_config.json')) };
  const model = json.model as { type?: string; vocab?: Record<string, number>; merges?: (string | [string, string])[] };
  if (model?.type !== 'BPE' || !model.vocab) throw new InputError(`${dir}/tokenizer.json: only byte-level BPE tokenizers convert to GGUF (found ${model?.type})`);
  const added = (json.added_tokens ?? []) as { id: number; content: string; special: boolean }[];
  let size = config.vocabSize;
  for (const id of [...Object.values(model.vocab), ...added.map((t) => t.id)]) {
    if (!Number.isSafeInteger(id) || id < 0 || id >= MAX_TOKEN_ID) throw new InputError(`${dir}/tokenizer.json: token id ${JSON.stringify(id)} is not an id below ${MAX_TOKEN_ID}`);
    size = Math.max(size, id + 1);
  }
  const tokens: string[] = Array.from({ length: size }, (_, i) => `[PAD${i}]`);
  const types: number[] = new Array(size).fill(TOKEN_TYPES.unused);
  for (const [token, id] of Object.entries(model.vocab)) [tokens[id], types[id]] = [token, TOKEN_TYPES.normal];
  for (const token of added) [tokens[token.id], types[token.id]] = [token.content, token.special ? TOKEN_TYPES.control : TOKEN_TYPES.userDefined];
  const idOf = (value: unknown) => {
    const content = typeof value === 'string' ? value : (value as { content?: string } | null)?.content;
    const id = content === undefined ? -1 : tokens.indexOf(content);
    return id >= 0 ? id : undefined;
  };
  const normalizer = (json.normalizer as { type?: string } | null)?.type;
  const metadata: Metadata = [
    ['tokenizer.ggml.model', { type: 'string', value: 'gpt2' }],
    ['tokenizer.ggml.pre', { type: 'string', value: normalizer === 'NFC' ? 'olmo' : 'gpt-2' }],
    ['tokenizer.ggml.tokens', { type: 'array', elementType: 'string', values: tokens }],
    ['tokenizer.ggml.token_type', { type: 'array', elementType: 'i32', values: types }],
    ['tokenizer.ggml.merges', { type: 'array', elementType: 'string', values: (model.merges ?? []).map((m) => (Array.isArray(m) ? m.join(' ') : m)) }],
    ['tokenizer.ggml.add_bos_token', { type: 'bool', value: settings.add_bos_token === true }],
  ];
  const ids: [string, number | undefined][] = [
    ['tokenizer.ggml.eos_token_id', idOf(settings.eos_token) ?? config.eosTokenIds[0]],
    ['tokenizer.ggml.bos_token_id', idOf(settings.bos_token) ?? config.bosTokenId ?? undefined],
    ['tokenizer.ggml.padding_token_id', idOf(settings.pad_token) ?? config.padTokenId ?? undefined],
  ];
  for (const [key, id] of ids) if (id !== undefined) metadata.push([key, { type: 'u32', value: id }]);
  if (typeof settings.chat_template === 'string') metadata.push(['tokenizer.chat_template', { type: 'string', value: settings.chat_template }]);
  return metadata;
}
