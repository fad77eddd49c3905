/**
 * Continuous batching: several sequences in one forward pass give each sequence's own logits and routing, and a
 * GenerationBatch (generations joining and leaving between steps) gives each generation the tokens it gets alone.
 */
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { generateText, GenerationBatch, type GenerateOptions, type GenerationRun } from '../src/generate/generate.js';
import type { RoutingEvent } from '../src/model/olmoe.js';
import { loadPretrained, type Pretrained } from '../src/model/pretrained.js';
import { announceSkip, backendCases } from './backends.js';
import { maxAbsDiff } from './checkpoints.js';
import { tinyModelDir } from './helpers.js';

for (const backend of backendCases) describe(`batched forward and generation on the ${backend.name} backend`, { skip: announceSkip(backend.skip) }, () => {
  let lm: Pretrained;
  // The exact (f32) KV cache: with a rounded one (the default f16), a sequence's keys computed in a batch of other
  // rows (other matmul paths, other summation order) may round to the neighbouring f16 value, a 2^-11 step beyond
  // the 1e-4 comparison of logits.
  before(async () => {
    lm = await loadPretrained(tinyModelDir, { backend: backend.create(), kvCache: 'f32' });
  });
  const ids = (n: number, seed: number) => Int32Array.from({ length: n }, (_, i) => (i * 37 + seed * 101) % 550);

  it('forwardBatch: each sequence gets the logits and routing of its own forward pass', () => {
    const { model } = lm;
    // sequence A continues a cached 9-token prefix by 1 token; B is a fresh 6-token prompt; C continues by 3
    const prefixA = ids(9, 1);
    const prefixC = ids(4, 3);
    const caches = [model.createCache(32), model.createCache(32), model.createCache(32)];
    const alone = [model.createCache(32), model.createCache(32), model.createCache(32)];
    model.forward(prefixA, { cache: caches[0] });
    model.forward(prefixA, { cache: alone[0] });
    model.forward(prefixC, { cache: caches[2] });
    model.forward(prefixC, { cache: alone[2] });
    const inputs = [ids(1, 5), ids(6, 2), ids(3, 4)];
    const seen: RoutingEvent[][] = [[], [], []];
    const copy = (e: RoutingEvent) => ({ ...e, expertIds: e.expertIds.slice(), weights: e.weights.slice() });
    const batched = model.backend.toFloat32(model.forwardBatch(inputs.map((input, i) => ({ ids: input, cache: caches[i]!, observer: (e) => seen[i]!.push(copy(e)) }))));
    const vocab = model.config.vocabSize;
    inputs.forEach((input, i) => {
      const own: RoutingEvent[] = [];
      const logits = model.backend.toFloat32(model.forward(input, { cache: alone[i], logits: 'last', observer: (e) => own.push(copy(e)) }));
      assert.ok(maxAbsDiff(batched.slice(i * vocab, (i + 1) * vocab), logits) < 1e-4, `sequence ${i}`);
      assert.equal(caches[i]!.length, alone[i]!.length);
      assert.deepEqual(seen[i]!.map((e) => [e.layer, e.start, e.tokens, Array.from(e.expertIds)]), own.map((e) => [e.layer, e.start, e.tokens, Array.from(e.expertIds)]));
    });
  });

  it('GenerationBatch: every generation equals its own generate(), with joins, leaves and chunked prefill', async () => {
    const settings: GenerateOptions[] = [
      { greedy: true, maxNewTokens: 12 },
      { temperature: 0.9, topP: 0.9, seed: 4, maxNewTokens: 20 },
      { greedy: true, maxNewTokens: 5 },
      { temperature: 1.3, topK: 20, seed: 9, maxNewTokens: 16, repetitionPenalty: 1.2 },
    ];
    const prompts = settings.map((_, i) => Array.from(ids(3 + i * 4, i + 7)));
    const expected: number[][] = [];
    for (const [i, opts] of settings.entries()) expected.push((await generateText(lm, prompts[i]!, { ...opts, ignoreEos: true })).ids);
    const batch = new GenerationBatch(lm, { prefillChunk: 4 }); // prompts of 3..15 tokens: some prefill over several steps
    const runs: GenerationRun[] = [batch.add(prompts[0]!, { ...settings[0], ignoreEos: true }), batch.add(prompts[1]!, { ...settings[1], ignoreEos: true })];
    for (let step = 0; batch.size > 0 || runs.length < settings.length; step++) {
      if (step === 3 || step === 7) runs.push(batch.add(prompts[runs.length]!, { ...settings[runs.length], ignoreEos: true })); // join mid-way
      batch.step();
    }
    runs.forEach((run, i) => {
      assert.ok(run.finished);
      assert.deepEqual(run.generated, expected[i], `generation ${i}`);
    });
  });
});
