// The training loop against laws it must obey: a tiny model memorises one batch; 10 steps + kill + resume + 10
// steps equal 20 steps exactly; a checkpoint loads in the inference path with the same logits; and every bad
// input (missing/corrupt checkpoint, changed config, full disk, NaN loss, bad shard) is a clear error.
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { byteLevelTokenizerJson } from '../src/tokenizer/byte-level.js';
import { TokenShardBuilder, tokenizerFingerprint } from '../src/train/data/shard.js';
import { parseTrainConfig, type TrainConfig } from '../src/train/config.js';
import { train, type TrainOptions } from '../src/train/trainer.js';
import { latestCheckpoint, loadParams } from '../src/train/checkpoint.js';
import { TrainModel } from '../src/train/model.js';
import { loadModel } from '../src/model/load.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { readConfigFile } from '../src/model/config.js';
import { tempDir } from './helpers.js';

const TEXT = 'The experts of a sparse model each learn a part of the language. '.repeat(40);

/** A folder with tokenizer.json (byte-level) and one shard of `documents`. */
function fixture(documents: string[] = [TEXT, 'Routing picks the top-k experts per token.\n'.repeat(30)]): string {
  const dir = tempDir('olmoe-train-');
  const { json, eosId, size } = byteLevelTokenizerJson();
  const tokenizerText = JSON.stringify(json);
  writeFileSync(join(dir, 'tokenizer.json'), tokenizerText);
  const builder = new TokenShardBuilder({ vocabSize: size, eosId, domains: ['prose', 'tech'], tokenizer: tokenizerFingerprint(tokenizerText) });
  documents.forEach((doc, i) => builder.add([...Buffer.from(doc)], i % 2));
  builder.write(join(dir, 'train.shard'));
  return dir;
}

function config(dir: string, overrides: Omit<Partial<TrainConfig>, 'data'> & { data?: Partial<TrainConfig['data']> } = {}): TrainConfig {
  const base = {
    out: join(dir, 'run'), seed: 3, tokenizer: join(dir, 'tokenizer.json'),
    model: { hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, num_experts: 4, num_experts_per_tok: 2, intermediate_size: 8 },
    data: { train: [join(dir, 'train.shard')], valid: [join(dir, 'train.shard')], sequence_length: 16, batch_size: 2 },
    optimizer: { lr: 3e-3, warmup_steps: 2 },
    steps: 20, checkpoint_every: 5, eval_every: 10, eval_batches: 1,
  };
  const { data, ...rest } = overrides;
  return parseTrainConfig({ ...base, ...rest, data: { ...base.data, ...data } });
}

async function run(c: TrainConfig, extra: Partial<TrainOptions> = {}): Promise<number[]> {
  const losses: number[] = [];
  await train({ config: c, backend: new ReferenceBackend(), onStep: (r) => losses.push(r.loss), ...extra });
  return losses;
}

function weightsOf(checkpoint: string): Buffer {
  return readFileSync(join(checkpoint, 'model.safetensors'));
}

describe('training loop', () => {
  it('a tiny model overfits one batch: loss falls below 0.1', async () => {
    const dir = fixture(['abcdefghijklmnopqrstuvwxyz'.slice(0, 16)]); // 16 bytes + EOS = one sequence of S + 1 = 17
    const losses = await run(config(dir, {
      data: { sequence_length: 16, batch_size: 1, valid: [] }, steps: 150, checkpoint_every: 0, eval_every: 0,
      optimizer: { lr: 1e-2, warmup_steps: 5, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0, clip: 1, final_lr_ratio: 0.1 },
      model: { hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, num_experts: 4, num_experts_per_tok: 2, intermediate_size: 32, norm_topk_prob: false, rms_norm_eps: 1e-5, rope_theta: 10000, routing: 'token_choice', capacity_factor: 1, init_std: 0.02, shared_expert_intermediate_size: 0 },
    }));
    assert.ok(losses[0]! > 4, `first loss ${losses[0]}`);
    assert.ok(losses.at(-1)! < 0.1, `last loss ${losses.at(-1)}`);
  });

  it('20 steps = 10 steps + kill + resume + 10 steps: same losses (1e-6) and identical weights', async () => {
    const dir = fixture();
    const straight = await run(config(dir, { out: join(dir, 'straight') }));
    const killed = await run(config(dir, { out: join(dir, 'resumed') }), { stopAfterStep: 12 }); // killed 2 steps after the step-10 checkpoint
    assert.equal(killed.length, 12);
    const resumed = await run(config(dir, { out: join(dir, 'resumed') }), { resume: true });
    assert.equal(resumed.length, 10);
    [...killed.slice(0, 10), ...resumed].forEach((loss, i) => assert.ok(Math.abs(loss - straight[i]!) < 1e-6, `step ${i + 1}: ${loss} vs ${straight[i]}`));
    assert.deepEqual(weightsOf(latestCheckpoint(join(dir, 'resumed'))!), weightsOf(latestCheckpoint(join(dir, 'straight'))!));
    const steps = readFileSync(join(dir, 'resumed', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.kind === 'train').map((r) => r.step);
    assert.deepEqual(steps, Array.from({ length: 20 }, (_, i) => i + 1)); // the killed run's steps 11–12 were replaced
    // intermediate checkpoints stay (router saturation reads them); only the latest keeps optimizer state
    const kept = readdirSync(join(dir, 'straight', 'checkpoints'));
    assert.deepEqual(kept, ['step-000005', 'step-000010', 'step-000015', 'step-000020']);
    assert.ok(!existsSync(join(dir, 'straight', 'checkpoints', 'step-000015', 'optimizer.safetensors')));
  });

  for (const shared of [0, 6]) it(`a checkpoint loads in the inference path and gives the training model's logits (shared expert width ${shared})`, async () => {
    const dir = fixture();
    await run(config(dir, { steps: 5, eval_every: 0, model: { ...config(dir).model, shared_expert_intermediate_size: shared } }));
    const checkpoint = latestCheckpoint(join(dir, 'run'))!;
    assert.equal(readConfigFile(join(checkpoint, 'config.json')).sharedExpertSize, shared);
    const inference = await loadModel(checkpoint, { backend: new ReferenceBackend(), kvCache: 'f32' }); // exact, as training
    const ids = Int32Array.from(Buffer.from('The experts'));
    const expected = inference.backend.toFloat32(inference.forward(ids));
    const model = new TrainModel({ config: readConfigFile(join(checkpoint, 'config.json')), routing: 'token_choice', capacityFactor: 1 }, new ReferenceBackend());
    loadParams(model, checkpoint);
    const { logits } = model.forward(model.backend, { tokens: Int32Array.from([...ids, 0]), sequences: 1 }, { loadBalancing: 0, routerZ: 0 });
    const values = model.backend.toFloat32(logits);
    const got = values.subarray(values.length - expected.length);
    expected.forEach((v, i) => assert.ok(Math.abs(v - got[i]!) < 1e-4, `logit ${i}: ${v} vs ${got[i]}`));
  });
});

describe('training: bad input', () => {
  it('resume without a checkpoint, a corrupt checkpoint, or a changed config: errors naming what is wrong', async () => {
    const dir = fixture();
    await assert.rejects(run(config(dir), { resume: true }), /no checkpoint to resume from/);
    await run(config(dir, { steps: 5, eval_every: 0 }));
    await assert.rejects(run(config(dir, { steps: 5 })), /already holds a run/);
    await assert.rejects(run(config(dir, { steps: 10, seed: 4 }), { resume: true }), /does not match the run.*seed changed/);
    const checkpoint = latestCheckpoint(join(dir, 'run'))!;
    writeFileSync(join(checkpoint, 'model.safetensors'), 'garbage');
    await assert.rejects(run(config(dir, { steps: 10 }), { resume: true }), /model\.safetensors/);
    rmSync(join(checkpoint, 'trainer_state.json'));
    await assert.rejects(run(config(dir, { steps: 10 }), { resume: true }), /latest\.json.*trainer_state\.json/);
  });

  it('disk full while checkpointing: an error, the previous checkpoint and latest.json stay intact', async () => {
    const dir = fixture();
    await run(config(dir, { steps: 5, eval_every: 0 }));
    const before = weightsOf(latestCheckpoint(join(dir, 'run'))!);
    await assert.rejects(run(config(dir, { steps: 10, eval_every: 0 }), { resume: true, failCheckpointAfterBytes: 2000 }), /no space left on device/);
    assert.equal(latestCheckpoint(join(dir, 'run')), join(dir, 'run', 'checkpoints', 'step-000005'));
    assert.deepEqual(weightsOf(latestCheckpoint(join(dir, 'run'))!), before);
    assert.deepEqual(readdirSync(join(dir, 'run', 'checkpoints')), ['step-000005']); // no half-written folder left
    assert.ok(readFileSync(join(latestCheckpoint(join(dir, 'run'))!, 'optimizer.safetensors')).length > 0);
  });

  it('a NaN loss stops the run with a clear message and keeps the last good checkpoint', async () => {
    const dir = fixture();
    const c = config(dir, { steps: 10, eval_every: 0, optimizer: { lr: 1e30, warmup_steps: 0, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0, clip: 1e30, final_lr_ratio: 1 }, checkpoint_every: 1 });
    await assert.rejects(run(c), (error: Error) => /(loss|gradient norm) is (NaN|Infinity|-Infinity) at step \d+.*last good checkpoint is .*step-\d+/.test(error.message));
    const checkpoint = latestCheckpoint(join(dir, 'run'))!;
    const model = new TrainModel({ config: readConfigFile(join(checkpoint, 'config.json')), routing: 'token_choice', capacityFactor: 1 }, new ReferenceBackend());
    loadParams(model, checkpoint);
    assert.ok(model.params.every((p) => model.read(p).every(Number.isFinite)), 'the kept checkpoint holds finite weights');
  });

  it('an empty, truncated or foreign shard, or a config with an unknown key: errors naming the file or key', async () => {
    const dir = fixture();
    writeFileSync(join(dir, 'empty.shard'), '');
    await assert.rejects(run(config(dir, { data: { train: [join(dir, 'empty.shard')] } })), /empty\.shard/);
    writeFileSync(join(dir, 'cut.shard'), readFileSync(join(dir, 'train.shard')).subarray(0, 100));
    await assert.rejects(run(config(dir, { data: { train: [join(dir, 'cut.shard')] } })), /cut\.shard/);
    writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify({ ...byteLevelTokenizerJson().json, version: '1.1' }));
    await assert.rejects(run(config(dir)), /train\.shard: was tokenized with another tokenizer/);
    assert.throws(() => parseTrainConfig({ ...config(dir), stepz: 3 }), /unknown key\(s\) "stepz"/);
    assert.throws(() => parseTrainConfig({ ...config(dir), steps: 0 }), /steps.*positive integer/);
    assert.throws(() => parseTrainConfig({ ...config(dir), steps: 2 }), /optimizer\.warmup_steps: 2 must be less than steps \(2\)/);
  });
});

describe('architecture variants', () => {
  it('sparse upcycling: experts start as copies of the dense MLP; with top-k = all experts the MoE computes the dense loss', async () => {
    const dir = fixture();
    const dense = config(dir, { out: join(dir, 'dense'), steps: 3, eval_every: 0, checkpoint_every: 0, model: { ...config(dir).model, num_experts: 1, num_experts_per_tok: 1 } });
    await run(dense);
    const denseDir = latestCheckpoint(join(dir, 'dense'))!;
    const moe = config(dir, { out: join(dir, 'moe'), steps: 3, eval_every: 0, checkpoint_every: 0, model: { ...config(dir).model, num_experts: 4, num_experts_per_tok: 4, upcycle_from: denseDir } });
    const batch = Int32Array.from(Buffer.from('The experts of a')); // 16 bytes: 15 positions
    const lossOf = (model: TrainModel) => model.forward(model.backend, { tokens: batch, sequences: 1 }, { loadBalancing: 0, routerZ: 0 }).crossEntropy;
    const denseModel = new TrainModel({ config: readConfigFile(join(denseDir, 'config.json')), routing: 'token_choice', capacityFactor: 1 }, new ReferenceBackend());
    loadParams(denseModel, denseDir);
    const { buildRun } = await import('../src/train/trainer.js');
    const { upcycleFrom } = await import('../src/train/upcycle.js');
    const { model } = buildRun(moe, new ReferenceBackend());
    upcycleFrom(model, denseDir);
    for (let e = 0; e < 4; e++) assert.deepEqual(model.read(model.param(`model.layers.1.mlp.experts.${e}.down_proj.weight`)), denseModel.read(denseModel.param('model.layers.1.mlp.experts.0.down_proj.weight')));
    // Σ over all experts of p_e · MLP(x) = MLP(x): the upcycled model starts exactly where the dense one ended.
    assert.ok(Math.abs(lossOf(model) - lossOf(denseModel)) < 1e-5, `${lossOf(model)} vs ${lossOf(denseModel)}`);
    await assert.rejects(run(config(dir, { out: join(dir, 'bad'), model: { ...config(dir).model, upcycle_from: latestCheckpoint(join(dir, 'moe')) ?? join(dir, 'dense', 'checkpoints', 'step-000003'), hidden_size: 32 } })), /hidden(Size|_size)/);
  });

  it('a dense baseline (1 expert, top-1) and expert-choice routing train and save loadable checkpoints', async () => {
    const dir = fixture();
    for (const [name, model] of [['dense', { num_experts: 1, num_experts_per_tok: 1 }], ['ec', { routing: 'expert_choice' as const, capacity_factor: 1.5 }]] as const) {
      const losses = await run(config(dir, { out: join(dir, name), steps: 6, eval_every: 0, model: { ...config(dir).model, ...model } }));
      assert.ok(losses.every(Number.isFinite) && losses.at(-1)! < losses[0]!, `${name}: ${losses.join(', ')}`);
      const saved = readConfigFile(join(latestCheckpoint(join(dir, name))!, 'config.json'));
      assert.equal(saved.numExperts, model.num_experts ?? 4);
    }
    const ec = JSON.parse(readFileSync(join(latestCheckpoint(join(dir, 'ec'))!, 'config.json'), 'utf8'));
    assert.equal(ec.olmoe_routing, 'expert_choice');
    assert.equal(ec.olmoe_capacity_factor, 1.5);
  });
});

describe('evaluation', () => {
  it('unigram baseline and bits per byte follow their definitions (computed here independently)', async () => {
    const { unigramScores, tokenByteLengths } = await import('../src/train/evaluate.js');
    const { PackedLoader } = await import('../src/train/data/packed-loader.js');
    const { readTokenShard } = await import('../src/train/data/shard.js');
    const dir = fixture(['abab', 'aaaa']);
    const tokenizerJson = readFileSync(join(dir, 'tokenizer.json'), 'utf8');
    const bytes = tokenByteLengths(tokenizerJson, 258);
    assert.equal(bytes[97], 1); // 'a' is one byte
    assert.equal(bytes[256], 0); // <|endoftext|>
    const shard = readTokenShard(join(dir, 'train.shard'));
    const loader = new PackedLoader([shard], { seqLen: 4, batchSize: 1, seed: 0 });
    const scores = unigramScores([shard], loader, { batches: 10, tokenBytes: bytes });
    // counts (add-one over 258 ids): a 6+1, b 2+1, EOS 2 documents + 1, others 1 → total 258 + 10
    const p = (count: number) => count / 268;
    // domain "prose" holds "abab" + EOS = 5 stream tokens: one window of S + 1 = 5, predicting b, a, b, EOS
    const prose = scores.find((s) => s.domain === 'prose')!;
    const expectedNats = -(2 * Math.log(p(3)) + Math.log(p(7)) + Math.log(p(3)));
    assert.ok(Math.abs(prose.crossEntropy - expectedNats / 4) < 1e-12, `${prose.crossEntropy} vs ${expectedNats / 4}`);
    assert.ok(Math.abs(prose.bitsPerByte - expectedNats / Math.LN2 / 3) < 1e-12); // 3 bytes: EOS has none
  });
});
