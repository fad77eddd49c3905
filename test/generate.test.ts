/** Generation on the tiny fixture: cache equivalence, stopping rules, abort, and bad input. */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { before, describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import type { RefKVCache } from '../src/backends/reference/kv-cache.js';
import { AbortError, InputError } from '../src/core/errors.js';
import { generate, generateText, type GenerateOptions } from '../src/generate/generate.js';
import { resolveOptions } from '../src/generate/options.js';
import { cpSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { processEscapes, StopStringMatcher } from '../src/generate/stop.js';
import { loadPretrained, type Pretrained } from '../src/model/pretrained.js';
import { tempDir, tinyExpectedPath, tinyModelDir } from './helpers.js';

const expected = JSON.parse(readFileSync(tinyExpectedPath, 'utf8')) as { cases: { ids: number[]; greedy_continuation: number[] }[] };

describe('generation', () => {
  let p: Pretrained;
  const run = (ids: readonly number[], opts: GenerateOptions) => generateText(p, ids, { eosTokenIds: [], ...opts });
  before(async () => {
    p = await loadPretrained(tinyModelDir, { backend: new ReferenceBackend() });
  });

  it('greedy generation reproduces the reference continuation', async () => {
    const [testCase] = expected.cases;
    const result = await run(testCase!.ids, { greedy: true, maxNewTokens: testCase!.greedy_continuation.length });
    assert.deepEqual(result.ids, testCase!.greedy_continuation);
    assert.equal(result.finishReason, 'length');
    assert.equal(result.text, p.tokenizer.decode(result.ids, { skipSpecialTokens: true }));
  });

  it('the same tokens with and without the KV cache (greedy and seeded sampling)', async () => {
    const prompt = expected.cases[1]!.ids.slice(0, 20);
    for (const opts of [{ greedy: true }, { temperature: 1.2, topK: 50, seed: 11 }] as GenerateOptions[]) {
      const cached = await run(prompt, { ...opts, maxNewTokens: 12 });
      const uncached = await run(prompt, { ...opts, maxNewTokens: 12, useCache: false });
      assert.deepEqual(cached.ids, uncached.ids);
    }
  });

  it('a seed reproduces a sampled text', async () => {
    const prompt = expected.cases[0]!.ids;
    const a = await run(prompt, { temperature: 1, seed: 5, maxNewTokens: 15 });
    const b = await run(prompt, { temperature: 1, seed: 5, maxNewTokens: 15 });
    const c = await run(prompt, { temperature: 1, seed: 6, maxNewTokens: 15 });
    assert.deepEqual(a.ids, b.ids);
    assert.notDeepEqual(a.ids, c.ids);
  });

  it('stops at an eos id (not emitted) unless ignoreEos', async () => {
    const [testCase] = expected.cases;
    const eos = testCase!.greedy_continuation[3]!;
    const stopped = await run(testCase!.ids, { greedy: true, maxNewTokens: 10, eosTokenIds: [eos] });
    assert.deepEqual(stopped.ids, testCase!.greedy_continuation.slice(0, 3));
    assert.equal(stopped.finishReason, 'eos');
    const ignored = await run(testCase!.ids, { greedy: true, maxNewTokens: 10, eosTokenIds: [eos], ignoreEos: true });
    assert.deepEqual(ignored.ids, testCase!.greedy_continuation);
  });

  it('stops at a stop string, which is not part of the text', async () => {
    const [testCase] = expected.cases;
    const full = await run(testCase!.ids, { greedy: true, maxNewTokens: 10 });
    const stop = full.text.slice(5, 8);
    const result = await run(testCase!.ids, { greedy: true, maxNewTokens: 10, stopStrings: [stop] });
    assert.equal(result.finishReason, 'stop');
    assert.equal(result.text, full.text.slice(0, full.text.indexOf(stop)));
  });

  it('streamed texts concatenate to the final text', async () => {
    const iterator = generate(p, expected.cases[0]!.ids, { greedy: true, maxNewTokens: 10 });
    let streamed = '';
    let step = await iterator.next();
    while (!step.done) {
      streamed += step.value.text;
      step = await iterator.next();
    }
    assert.equal(streamed, step.value.text);
  });

  it('an AbortSignal stops generation with AbortError', async () => {
    const controller = new AbortController();
    let tokens = 0;
    const pending = run(expected.cases[0]!.ids, {
      greedy: true,
      maxNewTokens: 50,
      signal: controller.signal,
      onToken: () => ++tokens === 3 && controller.abort(),
    } as GenerateOptions);
    await assert.rejects(pending, AbortError);
    assert.equal(tokens, 3);
  });

  it('bad input is rejected with the problem named', async () => {
    const context = p.model.config.maxPositionEmbeddings;
    await assert.rejects(run(new Array(context).fill(5), {}), (e: Error) => e instanceof InputError && /context of 256/.test(e.message));
    await assert.rejects(run([1, 600, 2], {}), (e: Error) => e instanceof InputError && /token id 600 at position 1 is out of range/.test(e.message));
    await assert.rejects(run([-1], {}), InputError);
    await assert.rejects(run([], {}), /empty/);
    await assert.rejects(run([1, 2], { temperature: -1 }), /temperature/);
    await assert.rejects(run([1, 2], { stopStrings: [''] }), /stop strings must be non-empty/);
    const aborted = AbortSignal.abort();
    await assert.rejects(run([1, 2], { signal: aborted }), AbortError, 'an aborted signal stops before the prefill');
  });

  it('new tokens are capped by what is left of the context', async () => {
    const context = p.model.config.maxPositionEmbeddings;
    const result = await run(new Array(context - 3).fill(5), { greedy: true, maxNewTokens: 10 });
    assert.equal(result.ids.length, 3);
    assert.equal(result.finishReason, 'length');
  });

  it('the KV cache holds the prompt and every new token from the start, and never moves', async () => {
    const backend = p.model.backend;
    const create = backend.createKVCache.bind(backend);
    const released: { allocated: number; generation: number; length: number }[] = [];
    backend.createKVCache = (opts) => {
      const cache = create(opts) as RefKVCache;
      const release = cache.release.bind(cache);
      cache.release = () => (released.push({ allocated: cache.allocated, generation: cache.generation, length: cache.length }), release());
      return cache;
    };
    try {
      const prompt = expected.cases[1]!.ids.slice(0, 5);
      await run(prompt, { greedy: true, maxNewTokens: 40 }); // 45 positions: doubling from 16 would move it twice
      assert.equal(released.length, 1, 'one cache, released when the generation ended');
      const [cache] = released;
      assert.equal(cache!.allocated, prompt.length + 40);
      assert.equal(cache!.generation, 1, 'allocated once, never resized');
      assert.equal(cache!.length, prompt.length + 39, 'the last token is sampled, not fed back');
    } finally {
      backend.createKVCache = create;
    }
  });
});

describe('stop strings over a stream', () => {
  it('holds back a possible prefix and cuts before the stop string', () => {
    const matcher = new StopStringMatcher(['END', 'xyz']);
    assert.equal(matcher.push('abc E'), 'abc ');
    assert.equal(matcher.push('N'), '');
    assert.equal(matcher.push('Q more'), 'ENQ more');
    assert.equal(matcher.push(' fooEN'), ' foo');
    assert.equal(matcher.push('D tail'), '');
    assert.ok(matcher.stopped);
    assert.equal(matcher.flush(), '');
  });

  it('releases held text at the end', () => {
    const matcher = new StopStringMatcher(['END']);
    assert.equal(matcher.push('abc EN'), 'abc ');
    assert.equal(matcher.flush(), 'EN');
  });
});

describe('--stop escapes (llama.cpp string_process_escapes)', () => {
  it('\\n \\r \\t \\\\ \\\' \\" and \\xHH become the characters; other backslashes stay', () => {
    // Left: what a shell passes (a backslash and a letter); right: the character, written as a JS escape.
    const cases: [string, string][] = [
      [String.raw`\n\n`, '\n\n'],
      [String.raw`a\tb\rc`, 'a\tb\rc'],
      [String.raw`\\n`, '\\n'],
      [String.raw`\'\"`, `'"`],
      [String.raw`\x41\x7a`, 'Az'],
      [String.raw`\xc3\xa9t\xC3\xA9`, 'été'],
      ['\\q \\x4 \\xZZ end\\', '\\q \\x4 \\xZZ end\\'],
      ['plain été', 'plain été'],
    ];
    for (const [typed, meant] of cases) assert.equal(processEscapes(typed, '--stop'), meant, typed);
  });

  it('\\x bytes that are not UTF-8 are an InputError naming the flag and value', () => {
    assert.throws(() => processEscapes(String.raw`\xff`, '--stop'), (error: unknown) => error instanceof InputError && /--stop: "\\\\xff"/.test(error.message));
  });
});

describe('generation options', () => {
  const defaults = { eosTokenIds: [7] };
  it('greedy unless sampling is asked for, as transformers does without do_sample', () => {
    assert.equal(resolveOptions({}, defaults, []).greedy, true);
    assert.equal(resolveOptions({}, { ...defaults, greedy: false }, []).greedy, false);
    assert.equal(resolveOptions({ temperature: 0.7 }, defaults, []).greedy, false, 'a sampling knob implies sampling');
    assert.equal(resolveOptions({ seed: 1 }, defaults, []).greedy, false);
    assert.equal(resolveOptions({ temperature: 0 }, { ...defaults, greedy: false }, []).greedy, true, 'temperature 0 is greedy');
  });

  it('sampling defaults are transformers\' (temperature 1, top-k 50, top-p 1); the checkpoint\'s override them', () => {
    const sampled = resolveOptions({ greedy: false }, defaults, []);
    assert.deepEqual([sampled.temperature, sampled.topK, sampled.topP, sampled.minP], [1, 50, 1, 0]);
    const fromConfig = resolveOptions({ greedy: false, topK: 5 }, { ...defaults, temperature: 0.6, topK: 20, topP: 0.9 }, []);
    assert.deepEqual([fromConfig.temperature, fromConfig.topK, fromConfig.topP], [0.6, 5, 0.9]);
  });

  it('a greedy generation_config with temperature 0 is accepted; eos ids come from the checkpoint', () => {
    const greedy = resolveOptions({}, { ...defaults, greedy: true, temperature: 0 }, [3]);
    assert.equal(greedy.greedy, true);
    assert.deepEqual(greedy.eosTokenIds, [7]);
    assert.deepEqual(resolveOptions({}, undefined, [3]).eosTokenIds, [3]);
    assert.deepEqual(resolveOptions({ ignoreEos: true }, defaults, [3]).eosTokenIds, []);
  });

  it('loadPretrained stops on config, generation_config and tokenizer eos ids together', async () => {
    const dir = tempDir();
    cpSync(tinyModelDir, dir, { recursive: true });
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: [557, 12] }));
    const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    writeFileSync(join(dir, 'config.json'), JSON.stringify({ ...config, eos_token_id: 99 }));
    const p = await loadPretrained(dir, { backend: new ReferenceBackend() });
    assert.deepEqual([...p.generation.eosTokenIds].sort((a, b) => a - b), [12, 99, 556, 557]);
    writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ eos_token_id: 'x' }));
    await assert.rejects(loadPretrained(dir, { backend: new ReferenceBackend() }), /generation_config\.json: eos_token_id/);
  });
});
