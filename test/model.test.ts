/**
 * Golden test: the tiny OLMoE fixture's logits, router choices and greedy continuations against an
 * independent float64 numpy reference (../shared/tools/ref_olmoe.py), computed from the bf16 weights.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { before, describe, it } from 'node:test';
import { loadModel } from '../src/model/load.js';
import type { OlmoeModel, RoutingEvent } from '../src/model/olmoe.js';
import { announceSkip, backendCases } from './backends.js';
import { greedyWithCache } from './checkpoints.js';
import { tinyExpectedPath, tinyModelDir } from './helpers.js';

interface ExpectedCase {
  name: string;
  ids: number[];
  logits: number[][];
  router: { layer: number; experts: number[][]; weights: number[][]; min_margin: number }[];
  greedy_continuation: number[];
}

const expected = JSON.parse(readFileSync(tinyExpectedPath, 'utf8')) as { cases: ExpectedCase[] };

for (const backend of backendCases) describe(`tiny OLMoE fixture on the ${backend.name} backend`, { skip: announceSkip(backend.skip) }, () => {
  let model: OlmoeModel;
  before(async () => {
    model = await loadModel(tinyModelDir, { backend: backend.create(), kvCache: 'f32' });
  });

  for (const testCase of expected.cases) {
    it(`${testCase.name}: logits at every position within 1e-4 and identical top-k experts`, () => {
      const events: RoutingEvent[] = [];
      const logits = model.backend.toFloat32(model.forward(Int32Array.from(testCase.ids), { observer: (e) => events.push(e) }));
      const vocab = model.config.vocabSize;
      let maxError = 0;
      testCase.logits.forEach((row, t) => row.forEach((value, v) => (maxError = Math.max(maxError, Math.abs(value - logits[t * vocab + v]!)))));
      assert.ok(maxError < 1e-4, `max |logit error| ${maxError}`);
      for (const layer of testCase.router) {
        const event = events.find((e) => e.layer === layer.layer)!;
        const ids = layer.experts.map((_, t) => Array.from(event.expertIds.subarray(t * event.topK, (t + 1) * event.topK)));
        assert.deepEqual(ids, layer.experts, `layer ${layer.layer} experts`);
        layer.weights.forEach((row, t) => row.forEach((w, k) => assert.ok(Math.abs(w - event.weights[t * event.topK + k]!) < 1e-5)));
      }
    });

    it(`${testCase.name}: greedy continuation with the KV cache`, () => {
      assert.deepEqual(greedyWithCache(model, testCase.ids, testCase.greedy_continuation.length), testCase.greedy_continuation);
    });
  }
});
