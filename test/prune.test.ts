/**
 * Domain pruning: the experts kept are the ones the domain uses; the pruned checkpoint holds exactly their router
 * rows and weights, renumbered; its first layer routes as a softmax over the kept experts' original router logits;
 * keeping every expert changes nothing; perplexity is checked against a direct computation.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { expertsForDomain, perplexity, writePrunedCheckpoint } from '../src/analysis/prune.js';
import { memoryTrace, TRACE_VERSION } from '../src/analysis/trace.js';
import type { RoutingEvent } from '../src/model/olmoe.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { logitsOf, maxAbsDiff, randomCheckpoint, readAll } from './checkpoints.js';
import { tempDir } from './helpers.js';

describe('domain pruning', () => {
  it('keeps, per layer, the experts the domain uses most', () => {
    const n = 10;
    const experts = new Uint16Array(n * 2 * 2);
    for (let t = 0; t < n; t++) {
      experts.set(t < 7 ? [3, 1] : [0, 1], (t * 2 + 0) * 2); // layer 0: 1 always, 3 seven times, 0 three times
      experts.set([2, 3], (t * 2 + 1) * 2); // layer 1: 2 and 3 always
    }
    const ints = (f: (t: number) => number) => Int32Array.from({ length: n }, (_, t) => f(t));
    const trace = memoryTrace(
      { version: TRACE_VERSION, model: { name: 'm', layers: 2, experts: 4, topK: 2, vocabSize: 10, fingerprint: 'x' }, domains: ['code'], withProbs: false },
      [{ size: n, document: ints(() => 0), position: ints((t) => t), domain: ints(() => 0), input: ints((t) => t), target: ints(() => 0), predicted: ints(() => 0), experts, weights: new Float32Array(n * 4) }],
    );
    assert.deepEqual(expertsForDomain(trace, 'code', 2), [[1, 3], [2, 3]]);
    assert.deepEqual(expertsForDomain(trace, 'code', 3), [[0, 1, 3], [0, 2, 3]]); // ties (0 uses) go to the lower id
    assert.throws(() => expertsForDomain(trace, 'code', 1), /--keep 1: must be between top-k \(2\) and the number of experts \(4\)/);
    assert.throws(() => expertsForDomain(trace, 'math', 2), /no domain "math" \(it has: code\)/);
  });

  it('writes exactly the kept experts, renumbered, and the pruned router is a softmax over the kept logits', async () => {
    const { dir, config } = randomCheckpoint({ experts: 6, topK: 2, seed: 11 });
    const keep = Array.from({ length: config.numLayers }, (_, l) => (l === 0 ? [1, 4, 5] : [0, 2, 3]));
    const out = join(tempDir(), 'pruned');
    writePrunedCheckpoint(dir, out, keep);
    const original = new Map(readAll(dir).map((t) => [t.name, t]));
    const pruned = new Map(readAll(out).map((t) => [t.name, t]));
    const gate = original.get('model.layers.0.mlp.gate.weight')!;
    const rowBytes = gate.bytes.length / 6;
    assert.deepEqual(pruned.get('model.layers.0.mlp.gate.weight')!.shape, [3, config.hiddenSize]);
    assert.deepEqual(Buffer.from(pruned.get('model.layers.0.mlp.gate.weight')!.bytes), Buffer.concat([1, 4, 5].map((e) => Buffer.from(gate.bytes.subarray(e * rowBytes, (e + 1) * rowBytes)))));
    assert.deepEqual(pruned.get('model.layers.0.mlp.experts.1.up_proj.weight')!.bytes, original.get('model.layers.0.mlp.experts.4.up_proj.weight')!.bytes);
    assert.deepEqual(pruned.get('model.layers.1.mlp.experts.2.down_proj.weight')!.bytes, original.get('model.layers.1.mlp.experts.3.down_proj.weight')!.bytes);
    assert.equal(pruned.has('model.layers.0.mlp.experts.3.gate_proj.weight'), false);
    assert.deepEqual(pruned.get('model.embed_tokens.weight')!.bytes, original.get('model.embed_tokens.weight')!.bytes);

    const backend = new ReferenceBackend();
    const before = await loadPretrained(dir, { backend });
    const after = await loadPretrained(out, { backend });
    assert.equal(after.model.config.numExperts, 3);
    const ids = Int32Array.from([5, 17, 99, 3]);
    const layer0 = (model: typeof before.model) => {
      let event: RoutingEvent | undefined;
      model.forward(ids, { observer: (e) => void (e.layer === 0 && (event = { ...e, logits: e.logits.slice(), probs: e.probs.slice() })) });
      return event!;
    };
    const full = layer0(before.model);
    const small = layer0(after.model);
    for (let t = 0; t < ids.length; t++) {
      const kept = [1, 4, 5].map((e) => full.logits[t * 6 + e]!);
      const max = Math.max(...kept);
      const z = kept.reduce((s, v) => s + Math.exp(v - max), 0);
      kept.forEach((v, i) => assert.ok(Math.abs(small.probs[t * 3 + i]! - Math.exp(v - max) / z) < 1e-6, `token ${t}, expert ${i}`));
    }
  });

  it('keeping every expert changes nothing; perplexity matches a direct computation', async () => {
    const { dir, config } = randomCheckpoint({ experts: 4, topK: 2, seed: 5 });
    const out = join(tempDir(), 'same');
    writePrunedCheckpoint(dir, out, Array.from({ length: config.numLayers }, () => [0, 1, 2, 3]));
    const backend = new ReferenceBackend();
    const a = await loadPretrained(dir, { backend });
    const b = await loadPretrained(out, { backend });
    const ids = [7, 8, 9, 10, 11, 12];
    assert.equal(maxAbsDiff(logitsOf(a.model, Int32Array.from(ids)), logitsOf(b.model, Int32Array.from(ids))), 0);
    // perplexity over windows of 3: targets 8..12, each predicted within its window
    const V = config.vocabSize;
    let nll = 0;
    for (const [start, end] of [[0, 4], [3, 6]]) {
      const window = ids.slice(start, end);
      const logits = logitsOf(a.model, Int32Array.from(window.slice(0, -1)));
      for (let t = 0; t + 1 < window.length; t++) {
        const row = Array.from(logits.subarray(t * V, (t + 1) * V));
        const max = Math.max(...row);
        nll += Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0)) + max - row[window[t + 1]!]!;
      }
    }
    const result = perplexity(a.model, [ids], 3);
    assert.equal(result.tokens, 5);
    assert.ok(Math.abs(result.nll - nll / 5) < 1e-9);
    assert.throws(() => perplexity(a.model, [[1]]), /no tokens to evaluate/);
  });
});
