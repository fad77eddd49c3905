/**
 * The harness's scoring requests against their definitions: loglikelihood equals log-softmax of a plain
 * teacher-forced forward (no cache, no sharing) over (context + continuation)[:-1], to 1e-5, with and without
 * prefix sharing and chunking, on the tiny fixture (both backends) and on OLMoE-mini; is_greedy agrees with the
 * argmax; left truncation follows the harness; rolling windows reproduce lm-eval's own test vectors and score
 * every token once.
 */
import assert from 'node:assert/strict';
import { appendFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FormatError, InputError } from '../src/core/errors.js';
import { ResultCache } from '../src/eval/cache.js';
import { isLoglikelihoodResult, loglikelihood, loglikelihoodRolling, rollingWindows, type LoglikelihoodRequest, type LoglikelihoodResult } from '../src/eval/loglikelihood.js';
import { loadModel } from '../src/model/load.js';
import type { OlmoeModel } from '../src/model/olmoe.js';
import { announceSkip, backendCases } from './backends.js';
import { repoRoot, tempDir, tinyModelDir } from './helpers.js';

/** Σ log-softmax over the continuation from one uncached forward of the whole input, in float64. */
function direct(model: OlmoeModel, context: readonly number[], continuation: readonly number[], maxLength = Infinity): { logprob: number; isGreedy: boolean } {
  const whole = [...context, ...continuation];
  const input = whole.slice(Math.max(0, whole.length - 1 - maxLength), -1);
  const logits = model.backend.toFloat32(model.forward(Int32Array.from(input)));
  const vocab = model.config.vocabSize;
  let logprob = 0;
  let isGreedy = true;
  continuation.forEach((target, k) => {
    const row = Array.from(logits.subarray((input.length - continuation.length + k) * vocab, (input.length - continuation.length + k + 1) * vocab));
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
    logprob += row[target]! - lse;
    isGreedy &&= row.indexOf(max) === target;
  });
  return { logprob, isGreedy };
}

/** A few-shot-like request set: a shared prefix, questions, several choices each, some nested in others. */
function requestSet(vocab: number, seed = 1): LoglikelihoodRequest[] {
  let state = seed;
  const next = () => (state = (state * 1103515245 + 12345) % 2 ** 31) % vocab;
  const shots = Array.from({ length: 12 }, next);
  const requests: LoglikelihoodRequest[] = [];
  for (let q = 0; q < 4; q++) {
    const question = [...shots, ...Array.from({ length: 3 + q }, next)];
    const choices = [[next()], [next(), next()], [next(), next(), next(), next()]];
    choices.push([...choices[1]!, next()]); // a choice that extends another
    for (const choice of choices) requests.push({ context: question, continuation: choice });
  }
  requests.push({ context: [next()], continuation: [next(), next()] }); // nothing shared
  requests.push(requests[0]!); // an exact duplicate
  return requests;
}

// With the exact (f32) KV cache: a rounded one (the default f16) stores keys and values rounded, and a prefix computed
// in another chunk (other matmul paths, other float summation order) may land on the other side of a rounding
// boundary — a step of 2^-11 relative in one value, beyond these 1e-5 comparisons of execution orders.
describe('loglikelihood equals log-softmax of a plain forward', () => {
  for (const backend of backendCases) {
    it(`tiny fixture, sharing on and off, chunked and whole (${backend.name})`, { skip: announceSkip(backend.skip) }, async () => {
      const model = await loadModel(tinyModelDir, { backend: backend.create(), kvCache: 'f32' });
      const requests = requestSet(model.config.vocabSize);
      const expected = requests.map((r) => direct(model, r.context, r.continuation));
      for (const opts of [{ prefixSharing: true }, { prefixSharing: false }, { prefixSharing: true, chunk: 3 }, { prefixSharing: true, chunk: 1 }]) {
        const results = await loglikelihood(model, requests, opts);
        results.forEach((result, i) => {
          // 1e-5 per scored token: the native backend's cached and uncached paths round differently in float32.
          const tolerance = 1e-5 * requests[i]!.continuation.length;
          assert.ok(Math.abs(result.logprob - expected[i]!.logprob) < tolerance, `${JSON.stringify(opts)} request ${i}: ${result.logprob} vs ${expected[i]!.logprob}`);
          assert.equal(result.isGreedy, expected[i]!.isGreedy);
          assert.equal(result.truncated, 0);
        });
      }
      // One by one gives the same numbers as the whole batch.
      const single = await loglikelihood(model, [requests[5]!]);
      assert.ok(Math.abs(single[0]!.logprob - expected[5]!.logprob) < 1e-5);
    });
  }

  it('OLMoE-mini (the bundled model)', async () => {
    const model = await loadModel(join(repoRoot, 'models', 'olmoe-mini'), { backend: backendCases[0]!.create(), kvCache: 'f32' });
    const requests = requestSet(model.config.vocabSize, 7).slice(0, 9);
    const results = await loglikelihood(model, requests, { chunk: 5 });
    results.forEach((result, i) => {
      const expected = direct(model, requests[i]!.context, requests[i]!.continuation);
      assert.ok(Math.abs(result.logprob - expected.logprob) < 1e-5, `request ${i}`);
      assert.equal(result.isGreedy, expected.isGreedy);
    });
  });

  it('is_greedy is true exactly for the greedy continuation', async () => {
    const model = await loadModel(tinyModelDir, { backend: backendCases[0]!.create() });
    const context = [144, 405, 55];
    const greedy: number[] = [];
    for (let i = 0; i < 4; i++) {
      const logits = model.backend.toFloat32(model.forward(Int32Array.from([...context, ...greedy]), { logits: 'last' }));
      greedy.push(logits.indexOf(Math.max(...logits)));
    }
    const other = [...greedy];
    other[2] = (other[2]! + 1) % model.config.vocabSize;
    const [yes, no] = await loglikelihood(model, [{ context, continuation: greedy }, { context, continuation: other }]);
    assert.equal(yes!.isGreedy, true);
    assert.equal(no!.isGreedy, false);
    assert.ok(yes!.logprob > no!.logprob);
  });

  it('a context longer than the model is truncated from the left, as the harness does, and counted', async () => {
    const model = await loadModel(tinyModelDir, { backend: backendCases[0]!.create() });
    const context = Array.from({ length: 40 }, (_, i) => (i * 37) % model.config.vocabSize);
    const continuation = [5, 9, 11];
    const [result] = await loglikelihood(model, [{ context, continuation }], { maxLength: 16 });
    assert.equal(result!.truncated, 40 + 3 - 1 - 16);
    assert.ok(Math.abs(result!.logprob - direct(model, context, continuation, 16).logprob) < 1e-5);
  });

  it('bad requests name the request and the problem', async () => {
    const model = await loadModel(tinyModelDir, { backend: backendCases[0]!.create() });
    await assert.rejects(loglikelihood(model, [{ context: [1], continuation: [2] }, { context: [1], continuation: [] }]), (e: Error) => e instanceof InputError && /request 1: the continuation is empty/.test(e.message));
    await assert.rejects(loglikelihood(model, [{ context: [], continuation: [2] }]), /request 0: the context is empty/);
    await assert.rejects(loglikelihood(model, [{ context: [1], continuation: [1, 2, 3] }], { maxLength: 2 }), /a continuation of 3 tokens does not fit the model's 2 positions/);
    await assert.rejects(loglikelihood(model, [{ context: [1], continuation: [model.config.vocabSize] }]), (e: Error) => e instanceof InputError && /request 0: continuation token 0 is \d+, outside the vocabulary/.test(e.message));
  });
});

describe('rolling windows', () => {
  it('reproduce lm-evaluation-harness\'s own test vectors (34 tokens, 10 positions, prefix -100)', () => {
    const tokens = Array.from({ length: 34 }, (_, i) => i);
    const range = (a: number, b: number) => Array.from({ length: b - a }, (_, i) => a + i);
    // lm-eval's test_get_rolling_token_windows_v1 gold (input, predicted), then make_disjoint_window.
    const gold: [number[], number[]][] = [
      [[-100, ...range(0, 9)], range(0, 10)],
      [range(9, 19), range(10, 20)],
      [range(19, 29), range(20, 30)],
      [range(23, 33), range(30, 34)],
    ];
    const disjoint = gold.map(([input, predicted]) => ({ context: input.slice(0, input.length - (predicted.length - 1)), continuation: predicted }));
    assert.deepEqual(rollingWindows(tokens, -100, 10), disjoint);
  });

  it('every token is predicted exactly once, each window within the length', () => {
    for (const [length, max] of [[1, 1], [5, 1], [7, 3], [100, 7], [64, 64], [65, 64]] as const) {
      const tokens = Array.from({ length }, (_, i) => i);
      const windows = rollingWindows(tokens, -1, max);
      assert.deepEqual(windows.flatMap((w) => w.continuation), tokens, `${length}/${max}`);
      for (const w of windows) assert.ok(w.context.length + w.continuation.length - 1 <= max && w.context.length >= 1);
    }
  });

  it('the rolling log-likelihood is the sum of the windows\' direct scores', async () => {
    const model = await loadModel(tinyModelDir, { backend: backendCases[0]!.create() });
    const tokens = Array.from({ length: 45 }, (_, i) => (i * 53 + 7) % model.config.vocabSize);
    const eos = model.config.eosTokenIds[0]!;
    const [rolling] = await loglikelihoodRolling(model, [tokens], eos, { maxLength: 16 });
    const expected = rollingWindows(tokens, eos, 16).reduce((sum, w) => sum + direct(model, w.context, w.continuation).logprob, 0);
    assert.equal(rolling!.tokens, 45);
    assert.ok(Math.abs(rolling!.logprob - expected) < 1e-4);
  });
});

describe('result cache', () => {
  it('a re-run takes every result from the cache without running the model; an interrupted run resumes', async () => {
    const dir = tempDir('olmoe-eval-cache-');
    try {
      const model = await loadModel(tinyModelDir, { backend: backendCases[0]!.create() });
      const requests = requestSet(model.config.vocabSize, 3);
      const open = () => ResultCache.open<LoglikelihoodResult>(dir, 'abcdef0123456789', isLoglikelihoodResult);
      const first = await loglikelihood(model, requests.slice(0, 5), { cache: open() });
      let forwards = 0;
      const forward = model.forward.bind(model);
      model.forward = (...args) => (forwards++, forward(...args));
      const again = await loglikelihood(model, requests.slice(0, 5), { cache: open() });
      assert.equal(forwards, 0, 'nothing is recomputed');
      assert.deepEqual(again, first);
      // The rest of the set: only the new requests run, and all results equal a run without a cache.
      const all = await loglikelihood(model, requests, { cache: open() });
      assert.ok(forwards > 0);
      assert.deepEqual(all, await loglikelihood(model, requests));
      assert.equal(open().size, new Set(requests.map((r) => JSON.stringify(r))).size);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('a line cut short by a kill is dropped; a corrupt line elsewhere is an error naming the line', () => {
    const dir = tempDir('olmoe-eval-cache-');
    try {
      const cache = ResultCache.open<LoglikelihoodResult>(dir, 'abcdef01', isLoglikelihoodResult);
      cache.put('k1', { logprob: -1.5, isGreedy: true, truncated: 0 });
      cache.put('k2', { logprob: -2.5, isGreedy: false, truncated: 3 });
      appendFileSync(cache.path, '{"key":"k3","value":{"logp');
      const reopened = ResultCache.open<LoglikelihoodResult>(dir, 'abcdef01', isLoglikelihoodResult);
      assert.equal(reopened.size, 2);
      assert.deepEqual(reopened.get('k2'), { logprob: -2.5, isGreedy: false, truncated: 3 });
      assert.ok(readFileSync(cache.path, 'utf8').endsWith('}\n'), 'the torn line is cut off');
      const lines = readFileSync(cache.path, 'utf8').split('\n');
      writeFileSync(cache.path, [lines[0], '{"key":"k2","value":{"logprob":"x"}}', ''].join('\n'));
      assert.throws(() => ResultCache.open(dir, 'abcdef01', isLoglikelihoodResult), (e: Error) => e instanceof FormatError && /line 2 is not a \{key, value\} result/.test(e.message));
      writeFileSync(cache.path, 'garbage\n');
      assert.throws(() => ResultCache.open(dir, 'abcdef01', isLoglikelihoodResult), /line 1 is not JSON/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
