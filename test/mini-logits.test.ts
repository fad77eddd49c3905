// OLMoE-mini's logits from before the one-model change (test/fixtures/olmoe-mini-logits, made by its make.mjs with the
// inference path of that time) hold through every executor: inference on each backend, and the training model's
// forward (1e-4 on the recorded logits, log-sum-exp and top-5 ids). The weights are that model's (the 600-step
// OLMoE-mini, bundled until it was retrained), kept in the fixture's model/ folder.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadModel } from '../src/model/load.js';
import { readArchitecture, loadParams } from '../src/train/checkpoint.js';
import { TrainModel } from '../src/train/model.js';
import { Tape } from '../src/autograd/tape.js';
import { announceSkip, backendCases } from './backends.js';
import { repoRoot } from './helpers.js';

interface Row { logSumExp: number; top: number[]; topLogits: number[]; first: number[] }
const modelDir = join(repoRoot, 'test', 'fixtures', 'olmoe-mini-logits', 'model');
const expected = JSON.parse(readFileSync(join(repoRoot, 'test', 'fixtures', 'olmoe-mini-logits', 'expected.json'), 'utf8')) as { ids: number[]; rows: Row[] };

function check(logits: Float32Array, vocab: number, what: string): void {
  expected.rows.forEach((row, t) => {
    const got = logits.subarray(t * vocab, (t + 1) * vocab);
    const max = Math.max(...got);
    const logSumExp = max + Math.log(got.reduce((s, v) => s + Math.exp(v - max), 0));
    assert.ok(Math.abs(logSumExp - row.logSumExp) < 1e-4, `${what} position ${t}: log-sum-exp ${logSumExp} vs ${row.logSumExp}`);
    row.top.forEach((id, i) => assert.ok(Math.abs(got[id]! - row.topLogits[i]!) < 1e-4, `${what} position ${t}: logit ${id}`));
    row.first.forEach((v, i) => assert.ok(Math.abs(got[i]! - v) < 1e-4, `${what} position ${t}: logit ${i}`));
    const top = [...got.keys()].sort((a, b) => got[b]! - got[a]! || a - b).slice(0, 5);
    assert.deepEqual(top, row.top, `${what} position ${t}: top-5 ids`);
  });
}

describe('OLMoE-mini logits from before the one-model change', () => {
  for (const target of backendCases) {
    it(`inference on the ${target.name} backend`, { skip: announceSkip(target.skip) }, async () => {
      const model = await loadModel(modelDir, { backend: target.create(), kvCache: 'f32' });
      check(model.backend.toFloat32(model.forward(Int32Array.from(expected.ids))), model.config.vocabSize, target.name);
    });
  }
  for (const target of backendCases) {
    it(`the training executor (autograd tape) on the ${target.name} backend`, { skip: announceSkip(target.skip) }, () => {
      const model = new TrainModel(readArchitecture(modelDir), target.create());
      loadParams(model, modelDir);
      const tape = new Tape(model.backend);
      const { logits } = model.forward(tape, { tokens: Int32Array.from([...expected.ids, 0]), sequences: 1 }, { loadBalancing: 0.01, routerZ: 0.001 });
      check(tape.toFloat32(logits), model.arch.config.vocabSize, `training executor (${target.name})`);
    });
  }
});
