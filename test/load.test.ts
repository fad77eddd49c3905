/**
 * Strict checkpoint loading: small random checkpoints load and run; corrupted ones (tensors missing, extra or
 * misshaped, bad config.json, bad shard index) are rejected with typed errors naming what is wrong; sharding,
 * tied embeddings and dtype conversion do not change the logits.
 */
import assert from 'node:assert/strict';
import { copyFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { float32ToF16Bits, widenInto, type DType } from '../src/core/dtype.js';
import { ConfigError, FormatError, OlmoeError, UnsupportedError, WeightError } from '../src/core/errors.js';
import { INDEX_FILE, listCheckpointTensors } from '../src/io/checkpoint.js';
import { readSafetensorsHeader, readTensorBytes, type TensorEntry } from '../src/io/safetensors.js';
import { writeSafetensors } from '../src/io/safetensors-writer.js';
import { parameterCounts, parseConfig, type OlmoeConfig } from '../src/model/config.js';
import { loadModel, matchCheckpoint, type LoadProgress } from '../src/model/load.js';
import type { OlmoeModel } from '../src/model/olmoe.js';
import { weightTable } from '../src/model/weights.js';
import { tempDir, tinyModelDir } from './helpers.js';
import { editConfig, logitsOf as logitsOfModel, maxAbsDiff, randomCheckpoint, readAll, readJson, rewrite } from './checkpoints.js';

const IDS = Int32Array.from([1, 72, 101, 108, 108, 111, 299, 0]);
const load = (dir: string): Promise<OlmoeModel> => loadModel(dir, { backend: new ReferenceBackend() });
const logitsOf = (model: OlmoeModel, ids: Int32Array = IDS): Float32Array => logitsOfModel(model, ids);

/** The load of `dir` must fail with an error of class `kind` whose message matches every pattern. */
async function assertLoadFails(dir: string, kind: new (...args: never[]) => OlmoeError, ...patterns: RegExp[]): Promise<void> {
  await assert.rejects(load(dir), (error: unknown) => {
    assert.ok(error instanceof kind, `expected ${kind.name}, got ${String(error)}`);
    for (const pattern of patterns) assert.match((error as Error).message, pattern);
    return true;
  });
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

describe('loading a valid random checkpoint', () => {
  for (const dtype of ['f32', 'bf16', 'f16'] as const) {
    it(`${dtype}: loads every tensor with its stored dtype and returns finite [T, V] logits`, async () => {
      const { dir, config } = randomCheckpoint({ dtype });
      const events: LoadProgress[] = [];
      const model = await loadModel(dir, { backend: new ReferenceBackend(), onProgress: (p) => events.push({ ...p }) });
      assert.equal(model.config.numExperts, 4);
      assert.equal(model.weights.embed.dtype, dtype);
      assert.deepEqual(model.weights.layers[1]!.experts.down[3]!.shape, [32, 16]);
      const logits = logitsOf(model);
      assert.equal(logits.length, IDS.length * config.vocabSize);
      assert.ok(logits.every(Number.isFinite));
      const last = events.at(-1)!;
      assert.equal(events.length, weightTable(config).length);
      assert.equal(last.tensors, last.totalTensors);
      assert.equal(last.loadedBytes, last.totalBytes);
      assert.equal(last.totalBytes, parameterCounts(config).total * { f32: 4, bf16: 2, f16: 2 }[dtype]);
    });
  }

  it('the same seed gives the same logits, a different seed different ones', async () => {
    const a = logitsOf(await load(randomCheckpoint().dir));
    const b = logitsOf(await load(randomCheckpoint().dir));
    const c = logitsOf(await load(randomCheckpoint({ seed: 8 }).dir));
    assert.deepEqual(a, b);
    assert.ok(maxAbsDiff(a, c) > 1e-3);
  });
});

describe('checkpoint tensors that do not match the config', () => {
  it('a missing tensor → WeightError naming it', async () => {
    const { dir } = randomCheckpoint();
    const missing = 'model.layers.1.mlp.experts.2.up_proj.weight';
    rewrite(dir, readAll(dir).filter((t) => t.name !== missing));
    await assertLoadFails(dir, WeightError, /missing 1 tensor/, new RegExp(escape(missing)));
  });

  it('a missing lm_head when the config is untied → WeightError naming lm_head.weight', async () => {
    const { dir } = randomCheckpoint();
    rewrite(dir, readAll(dir).filter((t) => t.name !== 'lm_head.weight'));
    await assertLoadFails(dir, WeightError, /missing/, /lm_head\.weight/);
  });

  it('an extra tensor → WeightError naming it', async () => {
    const { dir } = randomCheckpoint();
    const extra = { name: 'model.layers.0.mlp.experts.4.gate_proj.weight', dtype: 'f32' as const, shape: [16, 32], bytes: new Uint8Array(16 * 32 * 4) };
    rewrite(dir, [...readAll(dir), extra]);
    await assertLoadFails(dir, WeightError, /1 tensor\(s\) an OLMoE with this config does not use/, new RegExp(escape(extra.name)));
  });

  it('a misshaped tensor → WeightError naming it and both shapes', async () => {
    const { dir } = randomCheckpoint();
    const name = 'model.layers.1.mlp.gate.weight'; // [E, D] = [4, 32]
    rewrite(dir, readAll(dir).map((t) => (t.name === name ? { ...t, shape: [32, 4] } : t)));
    await assertLoadFails(dir, WeightError, /shape mismatch/, new RegExp(`${escape(name)} is \\[32, 4\\] .*config requires \\[4, 32\\]`));
  });

  it('a tensor of the right size but wrong rank → WeightError naming both shapes', async () => {
    const { dir } = randomCheckpoint();
    const name = 'model.layers.0.self_attn.q_norm.weight'; // [32]
    rewrite(dir, readAll(dir).map((t) => (t.name === name ? { ...t, shape: [2, 16] } : t)));
    await assertLoadFails(dir, WeightError, new RegExp(`${escape(name)} is \\[2, 16\\] .*config requires \\[32\\]`));
  });

  it('many missing tensors are listed with a count of the rest', async () => {
    const { dir } = randomCheckpoint();
    rewrite(dir, readAll(dir).filter((t) => !t.name.includes('.experts.')));
    await assertLoadFails(dir, WeightError, /missing 24 tensor\(s\)/, /model\.layers\.0\.mlp\.experts\.0\.gate_proj\.weight/, /… and 19 more/);
  });

  it('a folder with no weights file → WeightError listing what is there', async () => {
    const { dir } = randomCheckpoint();
    rmSync(join(dir, 'model.safetensors'));
    await assertLoadFails(dir, WeightError, /no model\.safetensors or model\.safetensors\.index\.json/, /found: .*config\.json/, /tokenizer\.json/);
  });
});

describe('matchCheckpoint', () => {
  const config = parseConfig({ hidden_size: 8, num_attention_heads: 2, num_experts: 2, num_experts_per_tok: 1, vocab_size: 10, intermediate_size: 4, num_hidden_layers: 1, max_position_embeddings: 16 });
  const entriesFor = (c: OlmoeConfig): Map<string, TensorEntry> =>
    new Map(weightTable(c).reverse().map((w, i) => [w.hf, { name: w.hf, dtype: 'f32', shape: w.shape, file: 'x.safetensors', offset: i * 1000, byteLength: 0 }]));

  it('returns the entries in weight-table order whatever order they were found in', () => {
    const entries = matchCheckpoint(config, entriesFor(config));
    assert.deepEqual(entries.map((e) => e.name), weightTable(config).map((w) => w.hf));
  });

  it('a tied config ignores a saved lm_head and does not require one', () => {
    const tied = { ...config, tieWordEmbeddings: true };
    const withHead = entriesFor(config);
    assert.ok(!matchCheckpoint(tied, withHead).some((e) => e.name === 'lm_head.weight'));
    withHead.delete('lm_head.weight');
    assert.equal(matchCheckpoint(tied, withHead).length, weightTable(config).length - 1);
    assert.throws(() => matchCheckpoint(config, withHead), /missing 1 tensor.*lm_head\.weight/);
  });
});

describe('config.json problems', () => {
  async function withConfig(edit: (json: Record<string, unknown>) => void, kind: new (...args: never[]) => OlmoeError, ...patterns: RegExp[]): Promise<void> {
    const { dir } = randomCheckpoint();
    editConfig(dir, edit);
    await assertLoadFails(dir, kind, ...patterns);
  }

  it('config.json that is not valid JSON → FormatError naming config.json', async () => {
    const { dir } = randomCheckpoint();
    writeFileSync(join(dir, 'config.json'), '{"hidden_size": 32,');
    await assertLoadFails(dir, FormatError, /config\.json: not valid JSON/);
  });

  it('a missing config.json → FormatError naming it', async () => {
    const { dir } = randomCheckpoint();
    rmSync(join(dir, 'config.json'));
    await assertLoadFails(dir, FormatError, /config\.json: cannot open: ENOENT/);
  });

  it('num_experts_per_tok > num_experts → ConfigError naming the key', () =>
    withConfig((j) => (j.num_experts_per_tok = 5), ConfigError, /^config\.json: num_experts_per_tok: 5 is more than num_experts \(4\)/));

  it('hidden_size not divisible by num_attention_heads → ConfigError', () =>
    withConfig((j) => (j.num_attention_heads = 3), ConfigError, /^config\.json: hidden_size: 32 is not divisible by num_attention_heads \(3\)/));

  it('num_key_value_heads not dividing num_attention_heads → ConfigError', () =>
    withConfig((j) => ((j.num_attention_heads = 4), (j.num_key_value_heads = 3)), ConfigError, /num_key_value_heads: 3 does not divide/));

  for (const key of ['vocab_size', 'hidden_size', 'num_hidden_layers', 'intermediate_size', 'num_experts', 'max_position_embeddings']) {
    it(`a missing ${key} → ConfigError 'missing'`, () => withConfig((j) => delete j[key], ConfigError, new RegExp(`^config\\.json: ${key}: missing$`)));
  }

  for (const [key, value] of [['num_hidden_layers', -1], ['intermediate_size', 16.5], ['vocab_size', 0], ['num_experts', '4'], ['hidden_size', null]] as const) {
    it(`${key} = ${JSON.stringify(value)} → ConfigError 'not a positive integer'`, () =>
      withConfig((j) => (j[key] = value), ConfigError, new RegExp(`^config\\.json: ${key}: ${escape(JSON.stringify(value))} is not a positive integer`)));
  }

  for (const [key, value] of [['rms_norm_eps', -1e-5], ['rope_theta', 0], ['rms_norm_eps', 'small']] as const) {
    it(`${key} = ${JSON.stringify(value)} → ConfigError 'not a positive number'`, () =>
      withConfig((j) => (j[key] = value), ConfigError, new RegExp(`^config\\.json: ${key}: .* is not a positive number`)));
  }

  it('a non-boolean tie_word_embeddings → ConfigError', () => withConfig((j) => (j.tie_word_embeddings = 'yes'), ConfigError, /tie_word_embeddings: "yes" is not true or false/));

  it('a negative eos_token_id → ConfigError', () => withConfig((j) => (j.eos_token_id = [-1]), ConfigError, /eos_token_id: \[-1\] is not a token id/));

  it('rope_scaling set → UnsupportedError', () =>
    withConfig((j) => (j.rope_scaling = { type: 'linear', factor: 2 }), UnsupportedError, /rope_scaling .*linear.* is not supported/));

  it('rope_parameters with a non-default rope_type → UnsupportedError', () =>
    withConfig((j) => (j.rope_parameters = { rope_type: 'yarn', rope_theta: 10000 }), UnsupportedError, /rope_type "yarn" is not supported/));

  it('model_type "llama" → UnsupportedError', () => withConfig((j) => (j.model_type = 'llama'), UnsupportedError, /model_type "llama" is not supported/));

  it('hidden_act other than silu, attention_bias true, a different head_dim → UnsupportedError', async () => {
    await withConfig((j) => (j.hidden_act = 'gelu'), UnsupportedError, /hidden_act "gelu"/);
    await withConfig((j) => (j.attention_bias = true), UnsupportedError, /attention_bias/);
    await withConfig((j) => (j.head_dim = 8), UnsupportedError, /head_dim 8/);
  });

  it('rope_parameters.rope_theta (HF v5 layout) is read', () => {
    const base = readJson(join(randomCheckpoint().dir, 'config.json'));
    delete base.rope_theta;
    delete base.rope_scaling;
    assert.equal(parseConfig({ ...base, rope_parameters: { rope_type: 'default', rope_theta: 500000 } }).ropeTheta, 500000);
    assert.equal(parseConfig(base).ropeTheta, 10000);
  });
});

describe('sharded checkpoints', () => {
  it('shards: 3 writes three shards and an index, and gives logits identical to shards: 1', async () => {
    const single = randomCheckpoint({ seed: 11 });
    const sharded = randomCheckpoint({ seed: 11, shards: 3 });
    const shardFiles = readdirSync(sharded.dir).filter((f) => /^model-\d{5}-of-00003\.safetensors$/.test(f));
    assert.equal(shardFiles.length, 3);
    const files = new Set([...listCheckpointTensors(sharded.dir).values()].map((e) => e.file));
    assert.equal(files.size, 3, 'tensors are spread over all three shards');
    assert.deepEqual(logitsOf(await load(sharded.dir)), logitsOf(await load(single.dir)));
  });

  function indexOf(dir: string): { metadata: unknown; weight_map: Record<string, string> } {
    return readJson(join(dir, INDEX_FILE)) as { metadata: unknown; weight_map: Record<string, string> };
  }

  it('an index placing a tensor in a shard that lacks it → WeightError naming tensor and shard', async () => {
    const { dir } = randomCheckpoint({ shards: 3 });
    const index = indexOf(dir);
    const name = 'model.embed_tokens.weight';
    const wrongShard = Object.values(index.weight_map).find((s) => s !== index.weight_map[name])!;
    index.weight_map[name] = wrongShard;
    writeFileSync(join(dir, INDEX_FILE), JSON.stringify(index));
    await assertLoadFails(dir, WeightError, new RegExp(`places tensor "${escape(name)}" in ${escape(wrongShard)}, which does not contain it`));
  });

  it('a shard holding a tensor the index does not list → WeightError naming it', async () => {
    const { dir } = randomCheckpoint({ shards: 3 });
    const index = indexOf(dir);
    const name = 'model.norm.weight';
    delete index.weight_map[name];
    writeFileSync(join(dir, INDEX_FILE), JSON.stringify(index));
    await assertLoadFails(dir, WeightError, new RegExp(`holds tensor "${escape(name)}", which ${escape(INDEX_FILE)} does not place there`));
  });

  it('a tensor duplicated into a second shard the index does not place it in → WeightError naming tensor and shard', async () => {
    const { dir } = randomCheckpoint({ shards: 3 });
    const index = indexOf(dir);
    const name = 'model.embed_tokens.weight';
    const otherShard = Object.values(index.weight_map).find((s) => s !== index.weight_map[name])!;
    const embed = listCheckpointTensors(dir).get(name)!;
    const shardPath = join(dir, otherShard);
    const shard = [...readSafetensorsHeader(shardPath).tensors.values()].sort((a, b) => a.offset - b.offset);
    const tensors = shard.map((e) => ({ name: e.name, dtype: e.dtype, shape: e.shape, bytes: readTensorBytes(e) }));
    writeSafetensors(shardPath, [...tensors, { name, dtype: embed.dtype, shape: embed.shape, bytes: readTensorBytes(embed) }]);
    await assertLoadFails(dir, WeightError, new RegExp(`${escape(otherShard)} holds tensor "${escape(name)}", which ${escape(INDEX_FILE)} does not place there`));
  });

  it('an index naming a shard file that does not exist → FormatError naming the file', async () => {
    const { dir } = randomCheckpoint({ shards: 3 });
    const index = indexOf(dir);
    index.weight_map['model.norm.weight'] = 'model-00009-of-00009.safetensors';
    writeFileSync(join(dir, INDEX_FILE), JSON.stringify(index));
    await assertLoadFails(dir, FormatError, /model-00009-of-00009\.safetensors: cannot open/);
  });

  const malformed: [string, (index: { weight_map: unknown }) => void, RegExp][] = [
    ['no weight_map', (i) => delete (i as { weight_map?: unknown }).weight_map, /has no "weight_map" object/],
    ['weight_map an array', (i) => (i.weight_map = ['model-00001-of-00003.safetensors']), /has no "weight_map" object/],
    ['weight_map null', (i) => (i.weight_map = null), /has no "weight_map" object/],
    ['a shard name that is a number', (i) => ((i.weight_map as Record<string, unknown>)['model.norm.weight'] = 3), /weight_map\["model\.norm\.weight"\] = 3 is not a shard file name/],
    ['a shard path escaping the folder', (i) => ((i.weight_map as Record<string, unknown>)['model.norm.weight'] = '../model.safetensors'), /is not a shard file name/],
    ['a shard in a subfolder', (i) => ((i.weight_map as Record<string, unknown>)['model.norm.weight'] = 'sub/x.safetensors'), /is not a shard file name/],
    ['an empty shard name', (i) => ((i.weight_map as Record<string, unknown>)['model.norm.weight'] = ''), /weight_map\["model\.norm\.weight"\] = "" is not a shard file name/],
  ];
  for (const [what, corrupt, pattern] of malformed) {
    it(`an index with ${what} → FormatError naming the index`, async () => {
      const { dir } = randomCheckpoint({ shards: 3 });
      const index = indexOf(dir);
      corrupt(index);
      writeFileSync(join(dir, INDEX_FILE), JSON.stringify(index));
      await assertLoadFails(dir, FormatError, new RegExp(`${escape(INDEX_FILE)}: `), pattern);
    });
  }

  it('an index that is not JSON → FormatError naming it', async () => {
    const { dir } = randomCheckpoint({ shards: 2 });
    writeFileSync(join(dir, INDEX_FILE), '{"weight_map": ');
    await assertLoadFails(dir, FormatError, new RegExp(`${escape(INDEX_FILE)}: not valid JSON`));
  });
});

describe('tied word embeddings', () => {
  it('a tied checkpoint without lm_head gives the logits of an untied one whose lm_head is the embedding', async () => {
    const base = randomCheckpoint({ seed: 21 });
    const tensors = readAll(base.dir);
    const embed = tensors.find((t) => t.name === 'model.embed_tokens.weight')!;

    const tied = randomCheckpoint({ seed: 21 });
    editConfig(tied.dir, (j) => (j.tie_word_embeddings = true));
    rewrite(tied.dir, tensors.filter((t) => t.name !== 'lm_head.weight'));

    const untiedCopy = randomCheckpoint({ seed: 21 });
    rewrite(untiedCopy.dir, tensors.map((t) => (t.name === 'lm_head.weight' ? { ...t, bytes: embed.bytes } : t)));

    const tiedModel = await load(tied.dir);
    assert.equal(tiedModel.config.tieWordEmbeddings, true);
    assert.equal(tiedModel.weights.lmHead, tiedModel.weights.embed);
    const tiedLogits = logitsOf(tiedModel);
    assert.deepEqual(tiedLogits, logitsOf(await load(untiedCopy.dir)));
    assert.ok(maxAbsDiff(tiedLogits, logitsOf(await load(base.dir))) > 1e-3, 'the random lm_head gives different logits');
  });

  it('a tied checkpoint that still saves lm_head ignores it', async () => {
    const base = randomCheckpoint({ seed: 22 });
    const tied = randomCheckpoint({ seed: 22 });
    editConfig(tied.dir, (j) => (j.tie_word_embeddings = true));
    const withoutHead = randomCheckpoint({ seed: 22 });
    editConfig(withoutHead.dir, (j) => (j.tie_word_embeddings = true));
    rewrite(withoutHead.dir, readAll(base.dir).filter((t) => t.name !== 'lm_head.weight'));
    assert.deepEqual(logitsOf(await load(tied.dir)), logitsOf(await load(withoutHead.dir)));
  });
});

describe('parameterCounts', () => {
  const olmoe1b7b = {
    model_type: 'olmoe', hidden_size: 2048, num_attention_heads: 16, num_key_value_heads: 16, num_experts: 64, num_experts_per_tok: 8,
    intermediate_size: 1024, num_hidden_layers: 16, vocab_size: 50304, max_position_embeddings: 4096, tie_word_embeddings: false,
  };

  it('OLMoE-1B-7B: total 6,919,161,856 and active 1,282,017,280', () => {
    assert.deepEqual(parameterCounts(parseConfig(olmoe1b7b)), { total: 6_919_161_856, active: 1_282_017_280 });
  });

  it('tying the embeddings removes V·D parameters from both counts', () => {
    const counts = parameterCounts(parseConfig({ ...olmoe1b7b, tie_word_embeddings: true }));
    assert.deepEqual(counts, { total: 6_919_161_856 - 50304 * 2048, active: 1_282_017_280 - 50304 * 2048 });
  });

  it('total equals the element count of the weight table, active drops the unchosen experts', () => {
    for (const tie of [false, true]) {
      for (const kvHeads of [2, 1]) {
        const config = parseConfig({ ...olmoe1b7b, hidden_size: 32, num_attention_heads: 2, num_key_value_heads: kvHeads, num_experts: 4, num_experts_per_tok: 2, intermediate_size: 16, num_hidden_layers: 2, vocab_size: 300, tie_word_embeddings: tie });
        const elements = weightTable(config).reduce((sum, w) => sum + w.shape.reduce((a, b) => a * b, 1), 0);
        const counts = parameterCounts(config);
        assert.equal(counts.total, elements, `tie ${tie}, kv heads ${kvHeads}`);
        assert.equal(counts.active, elements - 2 * (4 - 2) * 3 * 32 * 16);
      }
    }
  });
});

describe('the tiny fixture converted to other dtypes', () => {
  /** The fixture folder with its bf16 tensors rewritten by `convert` into a new model.safetensors. */
  function convertedFixture(dtype: DType, convert: (bits: Uint16Array) => Uint8Array): string {
    const dir = tempDir('olmoe-conv-');
    for (const file of readdirSync(tinyModelDir)) if (file.endsWith('.json')) copyFileSync(join(tinyModelDir, file), join(dir, file));
    const tensors = readAll(tinyModelDir).map((t) => {
      assert.equal(t.dtype, 'bf16', `${t.name} in the fixture`);
      const bits = new Uint16Array(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength / 2);
      return { ...t, dtype, bytes: convert(bits) };
    });
    rewrite(dir, tensors);
    return dir;
  }

  const toF32 = (bits: Uint16Array): Uint8Array => new Uint8Array(Uint32Array.from(bits, (b) => (b << 16) >>> 0).buffer);
  const toF16 = (bits: Uint16Array): Uint8Array => {
    const wide = new Float32Array(bits.length);
    widenInto('bf16', bits, 0, bits.length, wide);
    return new Uint8Array(Uint16Array.from(wide, float32ToF16Bits).buffer);
  };
  const ids = Int32Array.from([256, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33]);

  it('widened exactly to F32: logits bit-identical to the bf16 original', async () => {
    const original = logitsOf(await load(tinyModelDir), ids);
    const f32Model = await load(convertedFixture('f32', toF32));
    assert.equal(f32Model.weights.embed.dtype, 'f32');
    const converted = logitsOf(f32Model, ids);
    assert.equal(converted.length, original.length);
    assert.deepEqual(new Uint32Array(converted.buffer), new Uint32Array(original.buffer));
  });

  it('rounded to F16: logits within 1e-2 of the bf16 original', async () => {
    const original = logitsOf(await load(tinyModelDir), ids);
    const f16Model = await load(convertedFixture('f16', toF16));
    assert.equal(f16Model.weights.embed.dtype, 'f16');
    const error = maxAbsDiff(logitsOf(f16Model, ids), original);
    assert.ok(error < 1e-2, `max |logit difference| ${error}`);
  });
});
