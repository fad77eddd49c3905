/** Laws of the sampling chain: each filter keeps exactly the tokens its definition keeps. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRng } from '../src/core/rng.js';
import { indicesByValueDescending, topIndicesDescending } from '../src/core/sort.js';
import {
  applyRepetitionPenalty,
  applyTemperature,
  argmax,
  checkSamplingOptions,
  drawFromProbabilities,
  minPFilter,
  sampleToken,
  softmax,
  topKFilter,
  topPFilter,
  type SamplingOptions,
} from '../src/generate/sampling.js';

const kept = (logits: Float32Array) => [...logits.keys()].filter((i) => logits[i]! > -Infinity);

describe('sampling chain', () => {
  const logits = Float32Array.from([1, 3, 2, 3, -1, 0.5]);

  it('greedy takes the largest logit, the lower id among equals', () => {
    assert.equal(argmax(logits), 1);
    assert.equal(sampleToken(logits, { greedy: true }, createRng(1), []), 1);
  });

  it('top-k keeps the k largest', () => {
    assert.deepEqual(kept(topKFilter(logits, 3)), [1, 2, 3]);
    assert.deepEqual(kept(topKFilter(logits, 0)), [0, 1, 2, 3, 4, 5]);
  });

  it('top-p keeps the smallest most-likely set reaching p', () => {
    const probs = softmax(logits);
    const order = [1, 3, 2, 0, 5, 4];
    for (const p of [0.1, 0.5, 0.8, 0.95, 0.999]) {
      let sum = 0;
      let n = 0;
      while (sum < p) sum += probs[order[n++]!]!;
      assert.deepEqual(kept(topPFilter(logits, p)).sort(), order.slice(0, n).sort(), `p=${p}`);
    }
  });

  it('min-p keeps tokens with p ≥ minP · p_max', () => {
    const probs = softmax(logits);
    const max = Math.max(...probs);
    for (const minP of [0.05, 0.2, 0.5, 0.9]) {
      const expected = [...probs.keys()].filter((i) => probs[i]! >= minP * max);
      assert.deepEqual(kept(minPFilter(logits, minP)), expected, `minP=${minP}`);
    }
  });

  it('repetition penalty divides positive and multiplies negative logits of seen tokens only', () => {
    const out = applyRepetitionPenalty(logits, [1, 4, 1], 2);
    assert.deepEqual(Array.from(out), [1, 1.5, 2, 3, -2, 0.5]);
    assert.deepEqual(Array.from(logits), [1, 3, 2, 3, -1, 0.5], 'input untouched');
  });

  it('temperature scales logits; softmax sums to one', () => {
    assert.deepEqual(Array.from(applyTemperature(logits, 0.5)), [2, 6, 4, 6, -2, 1]);
    assert.ok(Math.abs(softmax(logits).reduce((a, b) => a + b, 0) - 1) < 1e-12);
  });

  it('draws follow the probabilities (10k draws, each frequency within 3%)', () => {
    const probs = softmax(logits);
    const rng = createRng(7);
    const counts = new Array(logits.length).fill(0);
    for (let i = 0; i < 10000; i++) counts[drawFromProbabilities(probs, rng())]++;
    counts.forEach((c, i) => assert.ok(Math.abs(c / 10000 - probs[i]!) < 0.03, `token ${i}: ${c / 10000} vs ${probs[i]}`));
  });

  it('sampleToken is inverse-CDF sampling of softmax: N evenly spaced uniforms give each token N·p ± 1 draws, rare ones too', () => {
    // 40 tokens with probabilities from ~30 % down to ~0.01 %: many under 1 %.
    const wide = Float32Array.from({ length: 40 }, (_, i) => 3 - 0.25 * i);
    const total = wide.reduce((sum, v) => sum + Math.exp(v), 0);
    const expected = Array.from(wide, (v) => Math.exp(v) / total); // float64, independent of the code's softmax
    assert.ok(expected.filter((p) => p < 0.01).length >= 20, 'the case has many tokens under 1 %');
    const draws = 100_000;
    let i = 0;
    const evenlySpaced = () => (i++ + 0.5) / draws;
    const counts = new Array(wide.length).fill(0);
    for (let n = 0; n < draws; n++) counts[sampleToken(wide, { temperature: 1 }, evenlySpaced, [])]++;
    // With u_n = (n + ½)/N, token j is drawn for exactly the u_n in its CDF interval of width p_j: N·p_j ± 1 of them.
    counts.forEach((count, j) => assert.ok(Math.abs(count - draws * expected[j]!) <= 1.5, `token ${j}: ${count} draws, expected ${(draws * expected[j]!).toFixed(1)}`));
  });

  it('a seed reproduces the same draws; another seed differs', () => {
    const draw = (seed: number) => {
      const rng = createRng(seed);
      return Array.from({ length: 50 }, () => sampleToken(logits, { temperature: 1.5 }, rng, []));
    };
    assert.deepEqual(draw(3), draw(3));
    assert.notDeepEqual(draw(3), draw(4));
  });

  it('filters never remove every token', () => {
    const flat = new Float32Array(10).fill(0);
    assert.equal(kept(topPFilter(flat, 0.01)).length, 1);
    assert.equal(kept(minPFilter(flat, 0.99)).length, 10);
    assert.ok(kept(topKFilter(flat, 1)).length >= 1);
  });

  // A vocabulary of OLMoE's size, values on a coarse grid (many ties), peaked or flat, some tokens already masked.
  const vocabulary = (seed: number, spread: number) => {
    const rng = createRng(seed);
    return Float32Array.from({ length: 50304 }, (_, i) => (i % 97 === 5 ? -Infinity : Math.round(spread * (rng() ** 3) * 8) / 8));
  };

  it('the heap top of a vocabulary is the first count of the full order, ties by index', () => {
    const values = vocabulary(11, 20);
    const full = indicesByValueDescending(values, (v) => v > -Infinity);
    for (const count of [0, 1, 7, 64, 1000, 50000, 60000]) {
      assert.deepEqual(topIndicesDescending(values, count, (v) => v > -Infinity), full.slice(0, count), `count ${count}`);
    }
    assert.deepEqual(topIndicesDescending([2, 5, 5, 1], 3), [1, 2, 0]);
  });

  it('top-k and top-p over a whole vocabulary keep what their definitions keep (peaked and flat: both top-p paths)', () => {
    for (const [seed, spread] of [[1, 40], [2, 3], [3, 0.5]] as const) {
      const values = vocabulary(seed, spread);
      const order = indicesByValueDescending(values, (v) => v > -Infinity); // the definitions, by a full sort
      const probs = softmax(values);
      for (const k of [1, 50, 3000]) {
        const cutoff = values[order[k - 1]!]!;
        assert.deepEqual(kept(topKFilter(values, k)), [...values.keys()].filter((i) => values[i]! >= cutoff), `spread ${spread}, k ${k}`);
      }
      for (const p of [0.05, 0.5, 0.9, 0.99]) {
        let sum = 0;
        let n = 0;
        while (n < order.length && sum < p) sum += probs[order[n++]!]!;
        assert.deepEqual(kept(topPFilter(values, p)), order.slice(0, n).sort((a, b) => a - b), `spread ${spread}, p ${p}: ${n} tokens`);
      }
    }
  });

  it('sampleToken after top-k draws among the tokens left exactly as the chain over the whole vocabulary does', () => {
    // The chain by its definition, each filter over the whole vocabulary; sampleToken works on the tokens top-k keeps.
    // Coarse values (many ties at the k-th), temperatures whose float32 rounding merges neighbouring values, masked
    // tokens, top-p, min-p and a repetition penalty on top.
    const cases: [Float32Array, SamplingOptions & { temperature: number; topK: number }][] = [
      [vocabulary(5, 30), { temperature: 0.7, topK: 50, topP: 0.9 }],
      [vocabulary(6, 3), { temperature: 1, topK: 50 }],
      [vocabulary(7, 40), { temperature: 0.3, topK: 1 }],
      [vocabulary(8, 10), { temperature: 1.7, topK: 200, topP: 0.5, minP: 0.05 }],
      [vocabulary(9, 0.5), { temperature: 0.9, topK: 40, topP: 0.95, repetitionPenalty: 1.3 }],
      [Float32Array.from({ length: 50304 }, (_, i) => 1 + i * 1e-7), { temperature: 3, topK: 60 }], // float32 rounding ties after temperature
    ];
    for (const [values, opts] of cases) {
      const seen = [3, 77, 500, 50303];
      let scores = applyRepetitionPenalty(values, seen, opts.repetitionPenalty ?? 1);
      scores = topKFilter(applyTemperature(scores, opts.temperature), opts.topK);
      const chain = softmax(minPFilter(topPFilter(scores, opts.topP ?? 1), opts.minP ?? 0)); // the definition, whole
      for (let n = 0; n < 2000; n++) {
        const u = (n + 0.5) / 2000;
        assert.equal(sampleToken(values, opts, () => u, seen), drawFromProbabilities(chain, u), `${JSON.stringify(opts)}, u ${u}`);
      }
      if (opts.topK > 1) assert.ok(chain.filter((p) => p > 0).length > 1, `${JSON.stringify(opts)}: several tokens to draw from`);
    }
  });

  it('invalid values are rejected with the option named', () => {
    assert.throws(() => checkSamplingOptions({ temperature: 0 }), /temperature/);
    assert.throws(() => checkSamplingOptions({ temperature: -1 }), /temperature/);
    assert.throws(() => checkSamplingOptions({ topP: 1.5 }), /top-p/);
    assert.throws(() => checkSamplingOptions({ topP: 0 }), /top-p/);
    assert.throws(() => checkSamplingOptions({ topK: 2.5 }), /top-k/);
    assert.throws(() => checkSamplingOptions({ minP: 1 }), /min-p/);
    assert.throws(() => checkSamplingOptions({ repetitionPenalty: 0 }), /repetition/);
    assert.doesNotThrow(() => checkSamplingOptions({ temperature: 0.7, topK: 40, topP: 0.9, minP: 0.05, repetitionPenalty: 1.1 }));
  });
});
