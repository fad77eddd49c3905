/**
 * What StrykerJS found untested in src/generate (README, Testing): that sampleToken applies each knob it is given,
 * softmax on large logits, option defaults taken from generation_config, stop strings after a stop, and the
 * generation timings. Expected values follow from the definitions, not from olmoe's output.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { InputError } from '../src/core/errors.js';
import { createRng } from '../src/core/rng.js';
import { GenerationBatch, generateText } from '../src/generate/generate.js';
import { resolveOptions } from '../src/generate/options.js';
import { sampleToken, softmax, type SamplingOptions } from '../src/generate/sampling.js';
import { StopStringMatcher } from '../src/generate/stop.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { repoRoot } from './helpers.js';

/** Token 1 is the clear favourite; at temperature 1 every token has probability ≥ 0.5 %. */
const logits = Float32Array.from([1, 4, 2, 3, -1, 0.5]);

function drawn(opts: SamplingOptions, seen: number[] = [], draws = 300): Set<number> {
  const rng = createRng(11);
  return new Set(Array.from({ length: draws }, () => sampleToken(logits, opts, rng, seen)));
}

describe('sampleToken applies every knob it is given', () => {
  it('at temperature 1 several tokens come up (the baseline the other cases narrow)', () => {
    assert.ok(drawn({ temperature: 1 }).size >= 4);
  });

  it('temperature 0.01, top-k 1, top-p 0.01 and min-p 0.9 each leave only the favourite', () => {
    for (const opts of [{ temperature: 0.01 }, { topK: 1 }, { topP: 0.01 }, { minP: 0.9 }] as SamplingOptions[]) {
      assert.deepEqual([...drawn(opts)], [1], JSON.stringify(opts));
    }
  });

  it('a repetition penalty turns greedy away from a seen token: 4 / 100 < 3', () => {
    assert.equal(sampleToken(logits, { greedy: true, repetitionPenalty: 100 }, createRng(1), [1]), 3);
    assert.equal(sampleToken(logits, { greedy: true }, createRng(1), [1]), 1);
  });
});

describe('softmax and option resolution', () => {
  it('softmax of logits near 1000 is the softmax of the same logits shifted to 0', () => {
    const probs = softmax(Float32Array.from([1000, 999, 998]));
    const e = [1, Math.exp(-1), Math.exp(-2)];
    const total = e[0]! + e[1]! + e[2]!;
    probs.forEach((p, i) => assert.ok(Math.abs(p - e[i]! / total) < 1e-12, `p[${i}] = ${p}`));
  });

  it('min-p and the repetition penalty come from generation_config when the caller leaves them out', () => {
    const resolved = resolveOptions({ temperature: 1 }, { eosTokenIds: [], minP: 0.1, repetitionPenalty: 1.3 }, []);
    assert.equal(resolved.minP, 0.1);
    assert.equal(resolved.repetitionPenalty, 1.3);
  });

  it('defaults: eos honoured, KV cache on; max new tokens must be a non-negative integer (0 allowed)', () => {
    const resolved = resolveOptions({}, undefined, [7]);
    assert.equal(resolved.ignoreEos, false);
    assert.deepEqual(resolved.eosTokenIds, [7]);
    assert.equal(resolved.useCache, true);
    assert.equal(resolveOptions({ maxNewTokens: 0 }, undefined, []).maxNewTokens, 0);
    for (const maxNewTokens of [-1, 1.5, Number.NaN]) assert.throws(() => resolveOptions({ maxNewTokens }, undefined, []), InputError, String(maxNewTokens));
  });
});

describe('stop strings', () => {
  it('the earliest of several stop strings wins, even when one matches at 0', () => {
    const matcher = new StopStringMatcher(['a', 'c']);
    assert.equal(matcher.push('abc'), '');
    assert.equal(matcher.stopped, true);
  });

  it('after a stop, later text (e.g. a flushed partial character) is dropped', () => {
    const matcher = new StopStringMatcher(['b']);
    assert.equal(matcher.push('abc'), 'a');
    assert.equal(matcher.push('zzz'), '');
    assert.equal(matcher.flush(), '');
  });
});

describe('generation bookkeeping', () => {
  it('a batch rejects a prefill chunk under one token', async () => {
    const lm = await loadPretrained(join(repoRoot, 'test', 'fixtures', 'tiny-olmoe-gqa', 'model'), { backend: new ReferenceBackend() });
    for (const prefillChunk of [0, -1, Number.NaN]) assert.throws(() => new GenerationBatch(lm, { prefillChunk }), InputError);
    assert.doesNotThrow(() => new GenerationBatch(lm, { prefillChunk: 1 }));
  });

  it('prefill and decode times are positive and add up to at most the wall time of the call', async () => {
    const lm = await loadPretrained(join(repoRoot, 'test', 'fixtures', 'tiny-olmoe-gqa', 'model'), { backend: new ReferenceBackend() });
    const started = performance.now();
    const result = await generateText(lm, [17, 250, 3], { greedy: true, ignoreEos: true, maxNewTokens: 4 });
    const wall = performance.now() - started;
    assert.ok(result.prefillMs > 0 && result.decodeMs > 0, `prefill ${result.prefillMs} ms, decode ${result.decodeMs} ms`);
    assert.ok(result.prefillMs + result.decodeMs <= wall + 1e-6, `${result.prefillMs} + ${result.decodeMs} > ${wall}`);
  });
});
