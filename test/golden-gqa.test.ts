/**
 * Second golden fixture (test/fixtures/tiny-olmoe-gqa, see its README): grouped-query attention (6 query heads
 * over 2 key/value heads), norm_topk_prob, clip_qkv = 2 and F32 weights (norms included). Logits, router choices
 * and greedy continuations come from the independent float64 numpy reference ../shared/tools/ref_olmoe.py; the
 * tolerances are model.test.ts's (1e-4 on logits, 1e-5 on routing weights).
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { generateText } from '../src/generate/generate.js';
import { loadModel } from '../src/model/load.js';
import type { OlmoeModel, RoutingEvent } from '../src/model/olmoe.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { announceSkip, backendCases } from './backends.js';
import { greedyWithCache } from './checkpoints.js';
import { repoRoot } from './helpers.js';

interface ExpectedCase {
  name: string;
  ids: number[];
  logits: number[][];
  router: { layer: number; experts: number[][]; weights: number[][]; min_margin: number }[];
  greedy_continuation: number[];
  /** Per layer, q then k then v: how many entries ref_olmoe.py clamped at -clip_qkv and at +clip_qkv. */
  clipped_per_layer_qkv: { below: number; above: number; size: number }[];
}

const fixtureDir = join(repoRoot, 'test', 'fixtures', 'tiny-olmoe-gqa');
const modelDir = join(fixtureDir, 'model');
const expected = JSON.parse(readFileSync(join(fixtureDir, 'expected.json'), 'utf8')) as { cases: ExpectedCase[] };

/** The safetensors header read by hand (8-byte length, JSON), so the F32 claim does not rest on olmoe's reader. */
function storedDtypes(file: string): Map<string, string> {
  const bytes = readFileSync(file);
  const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString('utf8')) as Record<string, { dtype?: string }>;
  return new Map(Object.entries(header).filter(([name]) => name !== '__metadata__').map(([name, entry]) => [name, entry.dtype!]));
}

describe('GQA fixture: the golden exercises what it claims to', () => {
  it('stores F32 norms, and the reference clamped q, k and v on both sides in every layer', () => {
    const dtypes = storedDtypes(join(modelDir, 'model.safetensors'));
    const norms = [...dtypes].filter(([name]) => name.endsWith('norm.weight'));
    assert.equal(norms.length, 2 * 4 + 1);
    for (const [name, dtype] of norms) assert.equal(dtype, 'F32', name);
    for (const testCase of expected.cases) {
      assert.equal(testCase.clipped_per_layer_qkv.length, 2 * 3);
      for (const { below, above } of testCase.clipped_per_layer_qkv) assert.ok(below > 0 && above > 0, `${testCase.name}: ${below} below, ${above} above`);
    }
  });

  it('olmoe reads the config: 2 kv heads for 6 heads, norm_topk_prob, clip_qkv 2', async () => {
    const { config } = await loadModel(modelDir, { backend: backendCases[0]!.create() });
    assert.deepEqual([config.numHeads, config.numKVHeads, config.headDim], [6, 2, 8]);
    assert.equal(config.normTopKProb, true);
    assert.equal(config.clipQkv, 2);
  });
});

for (const backend of backendCases) describe(`GQA fixture on the ${backend.name} backend`, { skip: announceSkip(backend.skip) }, () => {
  let model: OlmoeModel;
  before(async () => {
    model = await loadModel(modelDir, { backend: backend.create(), kvCache: 'f32' });
  });

  for (const testCase of expected.cases) {
    it(`${testCase.name}: logits at every position within 1e-4, identical top-k experts, renormalized weights within 1e-5`, () => {
      const events: RoutingEvent[] = [];
      const logits = model.backend.toFloat32(model.forward(Int32Array.from(testCase.ids), { observer: (e) => events.push(e) }));
      const vocab = model.config.vocabSize;
      assert.equal(logits.length, testCase.ids.length * vocab);
      let maxError = 0;
      testCase.logits.forEach((row, t) => row.forEach((value, v) => (maxError = Math.max(maxError, Math.abs(value - logits[t * vocab + v]!)))));
      assert.ok(maxError < 1e-4, `max |logit error| ${maxError}`);
      assert.equal(events.length, testCase.router.length);
      for (const layer of testCase.router) {
        const event = events.find((e) => e.layer === layer.layer)!;
        const ids = layer.experts.map((_, t) => Array.from(event.expertIds.subarray(t * event.topK, (t + 1) * event.topK)));
        assert.deepEqual(ids, layer.experts, `layer ${layer.layer} experts`);
        layer.weights.forEach((row, t) => row.forEach((w, k) => assert.ok(Math.abs(w - event.weights[t * event.topK + k]!) < 1e-5, `layer ${layer.layer} token ${t} weight ${k}`)));
      }
    });

    it(`${testCase.name}: greedy continuation over the KV cache, one token at a time`, () => {
      assert.deepEqual(greedyWithCache(model, testCase.ids, testCase.greedy_continuation.length), testCase.greedy_continuation);
    });
  }

  it('generateText (greedy, no eos) reproduces every case’s reference continuation', async () => {
    const pretrained = await loadPretrained(modelDir, { backend: backend.create() });
    for (const testCase of expected.cases) {
      const result = await generateText(pretrained, testCase.ids, { greedy: true, ignoreEos: true, maxNewTokens: testCase.greedy_continuation.length });
      assert.deepEqual(result.ids, testCase.greedy_continuation, testCase.name);
    }
  });
});
