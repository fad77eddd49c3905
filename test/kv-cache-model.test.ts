/**
 * The KV cache types at model level. The golden logits (tiny fixtures, OLMoE-mini) hold at 1e-4 with the f32 cache
 * (model.test.ts, golden-gqa.test.ts, mini-logits.test.ts). A rounded cache moves the logits by its rounding,
 * relative ε per stored value (f16: 2^-11; q8_0: a step of its block's scale, amax/127, so ε = 1/127), once per layer:
 *   max |logit(cache) − logit(f32 cache)| ≤ A · L · ε · max |logit|
 * with L layers and A = 1 for the trained OLMoE-mini; the random fixtures' untrained weights amplify perturbations
 * more (measured 7.4 · ε · max|logit| for f16 on tiny-olmoe's 3 layers), A = 4 there. A q8_0 cache changes the
 * random fixtures' expert choices (near-ties of untrained routers) after a few positions, which moves everything
 * after them by whole experts: there the bound is checked on the positions before the first changed choice. On
 * OLMoE-mini q8_0 changes some choices too (from position 18), and the bound still holds at every position.
 * Measured (200 positions): tiny f16 3.7e-2 (max |logit| 10.4), q8_0 2.4e-1 before the first change (7 positions);
 * OLMoE-mini f16 2.6e-3, q8_0 2.6e-1 (max |logit| 13.7), every position.
 * And greedy continuations with the default (f16) cache are the same token for token on the native backend as on
 * the reference (both store the same bytes).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { KVCacheType } from '../src/core/backend.js';
import { InputError } from '../src/core/errors.js';
import { generateText } from '../src/generate/generate.js';
import { argmax } from '../src/generate/sampling.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { loadModel } from '../src/model/load.js';
import type { OlmoeModel, RoutingEvent } from '../src/model/olmoe.js';
import { announceSkip, backendCases } from './backends.js';
import { cliPath, repoRoot, tinyModelDir } from './helpers.js';

const miniDir = join(repoRoot, 'models', 'olmoe-mini');
const MODELS = [
  { name: 'tiny-olmoe', dir: tinyModelDir, amplification: 4 },
  { name: 'tiny-olmoe-gqa', dir: join(repoRoot, 'test', 'fixtures', 'tiny-olmoe-gqa', 'model'), amplification: 4 },
  { name: 'OLMoE-mini', dir: miniDir, amplification: 1 },
];
const EPSILON: Record<'f16' | 'q8_0', number> = { f16: 2 ** -11, q8_0: 1 / 127 };

function run(model: OlmoeModel, ids: Int32Array, type: KVCacheType): { logits: Float32Array; experts: string[][] } {
  model.kvCacheType = type;
  const experts: string[][] = [];
  const observer = (e: RoutingEvent) => {
    for (let t = 0; t < e.tokens; t++) (experts[t] ??= []).push([...e.expertIds.subarray(t * e.topK, (t + 1) * e.topK)].sort((a, b) => a - b).join(','));
  };
  return { logits: model.backend.toFloat32(model.forward(ids, { observer })), experts };
}

describe('logits with a rounded cache vs the f32 cache', () => {
  for (const target of backendCases) {
    for (const { name, dir, amplification } of MODELS) {
      it(`${target.name}: ${name}, f16 and q8_0`, { skip: announceSkip(target.skip) }, async () => {
        const model = await loadModel(dir, { backend: target.create() });
        const { vocabSize, numLayers } = model.config;
        const ids = Int32Array.from({ length: 200 }, (_, i) => (i * 7919 + 13) % vocabSize);
        const exact = run(model, ids, 'f32');
        const largest = exact.logits.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        for (const type of ['f16', 'q8_0'] as const) {
          const rounded = run(model, ids, type);
          const firstChange = rounded.experts.findIndex((choices, t) => choices.join() !== exact.experts[t]!.join());
          if (type === 'f16') assert.equal(firstChange, -1, 'f16: the same experts at every position');
          const compared = firstChange < 0 || amplification === 1 ? ids.length : firstChange;
          assert.ok(compared >= 5, `${type}: ${compared} positions before the first changed expert choice`);
          const tolerance = amplification * numLayers * EPSILON[type] * largest;
          let worst = 0;
          for (let i = 0; i < compared * vocabSize; i++) worst = Math.max(worst, Math.abs(rounded.logits[i]! - exact.logits[i]!));
          assert.ok(worst <= tolerance, `${type}: max |Δlogit| ${worst} > ${tolerance}`);
          assert.ok(worst > 0, `${type}: the cache is really rounded`);
        }
      });
    }
  }
});

/** Greedy continuation of `prompt` with the model's cache: prefill, then one token at a time. */
function greedy(model: OlmoeModel, prompt: number[], steps: number): number[] {
  const cache = model.createCache(prompt.length + steps);
  let logits = model.backend.toFloat32(model.forward(Int32Array.from(prompt), { cache, logits: 'last' }));
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    out.push(argmax(logits));
    logits = model.backend.toFloat32(model.forward(Int32Array.of(out.at(-1)!), { cache, logits: 'last' }));
  }
  return out;
}

describe('greedy continuations with the default (f16) cache: native = reference', { skip: announceSkip(backendCases[1]!.skip) }, () => {
  for (const { name, dir } of MODELS) {
    it(name, async () => {
      const [reference, native] = await Promise.all(backendCases.map((b) => loadModel(dir, { backend: b.create() })));
      assert.equal(reference!.kvCacheType, 'f16');
      const prompt = Array.from({ length: 75 }, (_, i) => (i * 31 + 7) % reference!.config.vocabSize); // crosses a 64-position block
      assert.deepEqual(greedy(native!, prompt, 40), greedy(reference!, prompt, 40));
    });
  }
});

describe('a bad cache type is an error naming the option and the value', () => {
  it('load option, generate option, CLI flag', async () => {
    const backend = backendCases[0]!.create();
    await assert.rejects(loadModel(tinyModelDir, { backend, kvCache: 'q4_0' as KVCacheType }), (e: Error) => e instanceof InputError && /kvCache: "q4_0" is not a KV cache type \(choose f16, q8_0, f32\)/.test(e.message));
    const lm = await loadPretrained(tinyModelDir, { backend });
    await assert.rejects(generateText(lm, [1, 2, 3], { maxNewTokens: 2, kvCache: 'fp8' as KVCacheType }), /kvCache: "fp8" is not a KV cache type/);
    for (const verb of [['generate', tinyModelDir, '--prompt-ids', '1,2'], ['bench', tinyModelDir, '--gen', '1', '--runs', '1']]) {
      const run = spawnSync(process.execPath, [cliPath, ...verb, '--kv-cache', 'bf16'], { encoding: 'utf8' });
      assert.equal(run.status, 1, `${verb[0]}: ${run.stderr}`);
      assert.match(run.stderr, /--kv-cache: "bf16" is not a KV cache type \(choose f16, q8_0, f32\)/);
    }
  });

  it('a generation can choose its own cache type (kvCache in the generate options)', async () => {
    const lm = await loadPretrained(tinyModelDir, { backend: backendCases[0]!.create() });
    const prompt = Array.from({ length: 30 }, (_, i) => (i * 37 + 4 * 101) % 550); // a prompt whose q8_0 continuation differs
    const ids = async (kvCache?: KVCacheType) => (await generateText(lm, prompt, { maxNewTokens: 12, kvCache, ignoreEos: true })).ids;
    lm.model.kvCacheType = 'f32';
    const exact = await ids();
    lm.model.kvCacheType = 'q8_0';
    assert.notDeepEqual(await ids(), exact, 'the model-wide q8_0 cache gives another continuation here');
    assert.deepEqual(await ids('f32'), exact, 'kvCache f32 overrides the model-wide q8_0');
  });
});
