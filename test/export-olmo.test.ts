// `olmoe export-olmo`: the memmaps read back equal the documents the shards were built from, token for token, with
// the EOS id after each (as OLMo's MemMapDataset expects them); every field of the YAML (parsed by the `yaml`
// package, not by our writer) is the run config's value or the fixed value of OLMoE's config form; floats are
// written so that PyYAML (YAML 1.1, what OLMo's OmegaConf reads) takes them as floats; bad input is refused
// without leaving anything behind.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { byteLevelTokenizerJson } from '../src/tokenizer/byte-level.js';
import { parseTrainConfig, type TrainConfig } from '../src/train/config.js';
import { TokenShardBuilder, tokenizerFingerprint } from '../src/train/data/shard.js';
import { exportOlmo } from '../src/train/export-olmo.js';
import { train } from '../src/train/trainer.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { toYaml, yamlFloat, yamlNumber } from '../src/io/yaml-writer.js';
import { cliPath, tempDir } from './helpers.js';

type Doc = { ids: number[]; domain: number };

/** Deterministic documents over ids [0, limit): lengths 1..40, every id class present. */
function documents(count: number, limit: number, seed: number): Doc[] {
  let state = seed;
  const next = () => Math.floor((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 8); // the low bits of an LCG cycle fast
  return Array.from({ length: count }, () => ({
    ids: Array.from({ length: 1 + (next() % 40) }, () => next() % limit),
    domain: next() % 2,
  }));
}

interface Fixture {
  dir: string;
  eosId: number;
  train: Doc[][];
  valid: Doc[];
  config: (overrides?: Record<string, unknown>) => TrainConfig;
}

/** tokenizer.json (+ `extraVocab` ids beyond the bytes), two train shards and one valid shard. */
function fixture(extraVocab = 0): Fixture {
  const dir = tempDir('olmoe-export-');
  const { json, eosId, padId, size } = byteLevelTokenizerJson();
  const tok = json as { added_tokens: object[] };
  if (extraVocab) tok.added_tokens.push({ id: size + extraVocab - 1, content: '<|last|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const text = JSON.stringify(json);
  writeFileSync(join(dir, 'tokenizer.json'), text);
  const vocabSize = size + extraVocab;
  const write = (name: string, docs: Doc[]) => {
    const builder = new TokenShardBuilder({ vocabSize, eosId, domains: ['prose', 'code'], tokenizer: tokenizerFingerprint(text) });
    for (const doc of docs) builder.add(doc.ids, doc.domain);
    builder.write(join(dir, name));
  };
  const train = [documents(30, vocabSize, 1), documents(7, vocabSize, 2)];
  const valid = documents(12, vocabSize, 3);
  train.forEach((docs, i) => write(`train-${i}.shard`, docs));
  write('valid.shard', valid);
  void padId;
  const config = (overrides: Record<string, unknown> = {}) =>
    parseTrainConfig({
      out: join(dir, 'run-a'), seed: 7, tokenizer: join(dir, 'tokenizer.json'),
      model: { hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, num_experts: 4, num_experts_per_tok: 2, intermediate_size: 8, rms_norm_eps: 1e-6, rope_theta: 500000, init_std: 0.015 },
      data: { train: [join(dir, 'train-0.shard'), join(dir, 'train-1.shard')], valid: [join(dir, 'valid.shard')], sequence_length: 16, batch_size: 2, micro_batches: 3 },
      optimizer: { lr: 3e-3, warmup_steps: 2, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.05, clip: 0.5, final_lr_ratio: 0.2 },
      loss: { load_balancing: 0.02, router_z: 0.0005 },
      steps: 20, checkpoint_every: 5, eval_every: 10, eval_batches: 3,
      ...overrides,
    });
  return { dir, eosId, train, valid, config };
}

/** The stream OLMo reads: each document's ids, then EOS. */
const withEos = (docs: Doc[], eos: number) => docs.flatMap((d) => [...d.ids, eos]);

function readMemmap(path: string, width: 2 | 4): number[] {
  const bytes = readFileSync(path);
  assert.equal(bytes.length % width, 0, `${path}: ${bytes.length} bytes is not a whole number of ${width}-byte tokens`);
  return Array.from({ length: bytes.length / width }, (_, i) => (width === 2 ? bytes.readUInt16LE(2 * i) : bytes.readUInt32LE(4 * i)));
}

/** PyYAML's (YAML 1.1) implicit float pattern: without a dot or a signed exponent, a number is not a float there. */
const PYYAML_FLOAT = /^[-+]?(?:[0-9][0-9_]*)?\.[0-9_]*(?:[eE][-+][0-9]+)?$/;

describe('olmoe export-olmo', () => {
  it('writes memmaps equal to the shards token for token, EOS after each document; validation one file per domain', () => {
    const f = fixture();
    const out = join(f.dir, 'olmo');
    const result = exportOlmo(f.config(), { outDir: out });
    assert.equal(result.dtype, 'uint16');
    assert.deepEqual(readdirSync(join(out, 'data')).sort(), ['train-00000.npy', 'train-00001.npy', 'valid-00.npy', 'valid-01.npy']);
    f.train.forEach((docs, i) => assert.deepEqual(readMemmap(join(out, 'data', `train-0000${i}.npy`), 2), withEos(docs, f.eosId), `train shard ${i}`));
    const domains = result.valid.map((v) => v.domain);
    assert.deepEqual([...domains].sort(), ['code', 'prose']);
    for (const file of result.valid) {
      const id = file.domain === 'prose' ? 0 : 1;
      assert.deepEqual(readMemmap(file.path, 2), withEos(f.valid.filter((d) => d.domain === id), f.eosId), file.domain);
    }
    assert.equal(result.train[0]!.tokens, f.train[0]!.reduce((n, d) => n + d.ids.length + 1, 0));
    assert.equal(result.train[1]!.documents, 7);
    assert.equal(readFileSync(join(out, 'tokenizer.json'), 'utf8'), readFileSync(join(f.dir, 'tokenizer.json'), 'utf8'));
    assert.deepEqual(readdirSync(f.dir).filter((n) => n.includes('.tmp-') || n.includes('.old-')), []);
  });

  it('writes every YAML field from the run config (OLMoE configs/*.yml form)', () => {
    const f = fixture();
    const out = join(f.dir, 'olmo');
    exportOlmo(f.config(), { outDir: out, dataRoot: '/weka/run-a/data' });
    const text = readFileSync(join(out, 'config.yaml'), 'utf8');
    const yaml = parse(text) as Record<string, unknown>;
    // Hand-written from the config in fixture(): hidden 16, 4 heads / 2 kv heads, 2 layers, 4 experts top-2, expert
    // width 8, vocabulary 258 (byte-level, EOS 256, padding 257), lr 3e-3, 2 warmup of 20 steps, etc.
    const expected = {
      run_name: 'run-a', seed: 7, dry_run: false,
      model: {
        d_model: 16, n_heads: 4, n_kv_heads: 2, n_layers: 2, mlp_hidden_size: 16, weight_tying: false, alibi: false, rope: true, rope_theta: 500000,
        flash_attention: false, attention_dropout: 0, attention_layer_norm: true, attention_layer_norm_with_affine: true, include_bias: false,
        block_type: 'moe', layer_norm_type: 'rms', layer_norm_with_affine: true, layer_norm_eps: 1e-6, bias_for_layer_norm: false,
        activation_type: 'swiglu', residual_dropout: 0, embedding_dropout: 0, max_sequence_length: 16, vocab_size: 258, embedding_size: 258,
        eos_token_id: 256, pad_token_id: 257, init_device: 'meta', init_fn: 'normal', init_std: 0.015, init_cutoff_factor: 3,
        moe_top_k: 2, moe_num_experts: 4, moe_dropless: true, moe_mlp_impl: 'sparse', moe_shared_expert: false, moe_loss_weight: 0.02, moe_zloss_weight: 0.0005,
      },
      compile: null,
      optimizer: { name: 'adamw', learning_rate: 3e-3, eps: 1e-8, weight_decay: 0.05, decay_norm_and_bias: false, decay_embeddings: true, betas: [0.9, 0.95], metrics_log_interval: 10 },
      scheduler: { name: 'cosine_with_warmup', units: 'steps', t_warmup: 2, t_max: 20, alpha_f: 0.2, warmup_min_lr: 0 },
      tokenizer: { identifier: 'tokenizer.json', truncate_direction: 'right' },
      save_folder: 'runs/run-a', save_overwrite: false, save_interval: 5, save_num_checkpoints_to_keep: -1, sharded_checkpointer: 'olmo_core', load_path: null,
      max_duration: 20, global_train_batch_size: 6, device_train_microbatch_size: 2, precision: 'fp32', distributed_strategy: 'fsdp',
      fsdp: { wrapping_strategy: 'by_block', precision: 'mixed', sharding_strategy: 'FULL_SHARD' },
      max_grad_norm: 0.5, max_grad_norm_ratio: null, speed_monitor: { window_size: 1 },
      eval_interval: 10, eval_subset_num_batches: 3, device_eval_batch_size: 2,
      evaluators: [{ label: 'validation', data: { num_workers: 0, drop_last: true, datasets: { 'prose-validation': ['/weka/run-a/data/valid-00.npy'], 'code-validation': ['/weka/run-a/data/valid-01.npy'] } } }],
      data: {
        pad_direction: 'right', num_workers: 4, drop_last: true, pin_memory: true, persistent_workers: true, timeout: 0, memmap_dtype: 'uint16',
        paths: ['/weka/run-a/data/train-00000.npy', '/weka/run-a/data/train-00001.npy'],
      },
    };
    // valid-00 is the domain met first in the valid shard: fix the expectation to the documents' order
    if (f.valid[0]!.domain === 1) expected.evaluators[0]!.data.datasets = { 'code-validation': ['/weka/run-a/data/valid-00.npy'], 'prose-validation': ['/weka/run-a/data/valid-01.npy'] };
    assert.deepEqual(yaml, expected);
    for (const [, value] of text.matchAll(/^\s*(?:-|[\w.-]+:)\s+([-+]?[0-9][^\s#]*)\s*$/gm)) {
      if (!/^[-+]?[0-9]+$/.test(value!)) assert.match(value!, PYYAML_FLOAT, `${value} is not a float to PyYAML`);
    }
  });

  it('says amp_bf16 for a run trained with bf16 matrix products', () => {
    const f = fixture();
    const out = join(f.dir, 'olmo-bf16');
    exportOlmo({ ...f.config(), precision: 'bf16' }, { outDir: out });
    assert.equal((parse(readFileSync(join(out, 'config.yaml'), 'utf8')) as { precision: string }).precision, 'amp_bf16');
  });

  it('uses uint32 when the vocabulary exceeds 65,536 ids, and refuses uint16 then', () => {
    const f = fixture(70000 - 258);
    const result = exportOlmo(f.config(), { outDir: join(f.dir, 'olmo') });
    assert.equal(result.dtype, 'uint32');
    f.train.forEach((docs, i) => assert.deepEqual(readMemmap(result.train[i]!.path, 4), withEos(docs, f.eosId)));
    assert.ok(f.train.flat().some((d) => d.ids.some((id) => id >= 65536)), 'the fixture must hold ids that need 32 bits');
    assert.equal((parse(readFileSync(result.config, 'utf8')) as { data: { memmap_dtype: string } }).data.memmap_dtype, 'uint32');
    assert.throws(() => exportOlmo(f.config(), { outDir: join(f.dir, 'olmo16'), dtype: 'uint16' }), /uint16 holds ids below 65,536; the vocabulary has 70,000 ids/);
    assert.equal(existsSync(join(f.dir, 'olmo16')), false);
  });

  it('refuses a missing shard, an existing output folder (unless --force) and what OLMo cannot express', () => {
    const f = fixture();
    const config = f.config();
    const missing = { ...config, data: { ...config.data, valid: [join(f.dir, 'nope.shard')] } };
    assert.throws(() => exportOlmo(missing, { outDir: join(f.dir, 'o1') }), /data\.valid\[0\]: shard .*nope\.shard does not exist/);
    assert.equal(existsSync(join(f.dir, 'o1')), false);
    const out = join(f.dir, 'olmo');
    mkdirSync(out);
    writeFileSync(join(out, 'keep.txt'), 'x');
    assert.throws(() => exportOlmo(config, { outDir: out }), /already exists and is not empty; .*--force/);
    assert.ok(existsSync(join(out, 'keep.txt')));
    exportOlmo(config, { outDir: out, force: true });
    assert.equal(existsSync(join(out, 'keep.txt')), false);
    assert.ok(existsSync(join(out, 'config.yaml')));
    const model = (extra: object) => f.config({ model: { ...config.model, ...extra } });
    assert.throws(() => exportOlmo(model({ routing: 'expert_choice' }), { outDir: join(f.dir, 'o2') }), /model\.routing expert_choice/);
    assert.throws(() => exportOlmo(model({ norm_topk_prob: true }), { outDir: join(f.dir, 'o2') }), /model\.norm_topk_prob/);
    assert.throws(() => exportOlmo(model({ shared_expert_intermediate_size: 4 }), { outDir: join(f.dir, 'o2') }), /shared_expert_intermediate_size 4/);
    assert.equal((parse(readFileSync(exportOlmo(model({ shared_expert_intermediate_size: 8 }), { outDir: join(f.dir, 'o3') }).config, 'utf8')) as { model: { moe_shared_expert: boolean } }).model.moe_shared_expert, true);
    assert.equal(existsSync(join(f.dir, 'o2')), false);
  });

  it('CLI: exports a run folder (its train-config.json); a kill mid-export leaves nothing, a rerun completes', async () => {
    const f = fixture();
    const config = f.config({ steps: 3, checkpoint_every: 0, eval_every: 0, optimizer: { lr: 1e-3, warmup_steps: 1, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.1, clip: 1, final_lr_ratio: 0.1 } });
    await train({ config, backend: new ReferenceBackend() });
    const out = join(f.dir, 'olmo');
    const cli = (env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [cliPath, 'export-olmo', config.out, out, '-q'], { encoding: 'utf8', env: { ...process.env, ...env } });
    const killed = cli({ OLMOE_TEST_KILL_AT: '3' });
    assert.equal(killed.signal, 'SIGKILL');
    assert.equal(existsSync(out), false);
    const done = cli();
    assert.equal(done.status, 0, done.stderr);
    assert.deepEqual(readdirSync(f.dir).filter((n) => n.includes('.tmp-')), []);
    const result = JSON.parse(done.stdout) as { train: { path: string }[] };
    assert.deepEqual(readMemmap(result.train[1]!.path, 2), withEos(f.train[1]!, f.eosId));
    assert.equal((parse(readFileSync(join(out, 'config.yaml'), 'utf8')) as { max_duration: number }).max_duration, 3);
    const again = cli();
    assert.equal(again.status, 1);
    assert.match(again.stderr, /already exists and is not empty/);
  });
});

describe('YAML writer', () => {
  it('writes floats PyYAML reads as floats and quotes strings YAML 1.1 would read as something else', () => {
    assert.equal(yamlNumber(1e-8, true), '1.0e-8');
    assert.equal(yamlNumber(1.5e21, true), '1.5e+21');
    assert.equal(yamlNumber(1, true), '1.0');
    assert.equal(yamlNumber(0.0005, true), '0.0005');
    assert.equal(yamlNumber(3, false), '3');
    const text = toYaml({ a: 'yes', b: 'off', c: '1.5', d: '${oc.env:X}', e: 'plain/path.npy', f: 'a: b', g: [], h: {}, i: [yamlFloat(2), { j: 'x', k: [1] }] });
    assert.deepEqual(parse(text, { version: '1.1' }), { a: 'yes', b: 'off', c: '1.5', d: '${oc.env:X}', e: 'plain/path.npy', f: 'a: b', g: [], h: {}, i: [2, { j: 'x', k: [1] }] });
    assert.match(text, /^i:\n {2}- 2\.0\n {2}- j: x\n {4}k:\n {6}- 1$/m);
  });
});
