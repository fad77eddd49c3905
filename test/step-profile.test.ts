/**
 * Step profiles (native backend, Backend.profileSteps): every op of the replayed decode steps timed and its bytes
 * counted. The bytes must be what the ops read by the model's own sizes — every attention, router and head weight once a
 * token, top-k experts' three matrices per layer, the KV cache's rows up to the token's position — and the times must
 * account for no more than the steps took.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createBackend } from '../src/backends/index.js';
import type { NativeAddon } from '../src/backends/native/addon.js';
import type { NativeBackend } from '../src/backends/native/index.js';
import { RefKVCache } from '../src/backends/reference/kv-cache.js';
import { byteSize, type DType } from '../src/core/dtype.js';
import type { Tensor } from '../src/core/backend.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { announceSkip, nativeSkip } from './backends.js';
import { tinyModelDir } from './helpers.js';

const bytes = (tensor: Tensor) => byteSize(tensor.dtype as DType, tensor.shape);

describe('step profiles', () => {
  it('native: a profile counts the replayed tokens, each op kind, and the bytes the model\'s weights and cache hold', { skip: announceSkip(nativeSkip) }, async () => {
    const backend = createBackend('native') as NativeBackend;
    const { model } = await loadPretrained(tinyModelDir, { backend });
    const cache = model.createCache();
    const step = (id: number) => model.backend.toFloat32(model.forward(Int32Array.of(id), { cache, logits: 'last' }));
    model.backend.toFloat32(model.forward(Int32Array.from({ length: 20 }, (_, i) => (i * 37) % 500), { cache, logits: 'last' }));
    step(3); // position 20: the cache grows to 40 positions, and the step is recorded (not replayed)
    assert.equal(backend.readStepProfile(), null, 'no profile before profileSteps(true)');

    backend.profileSteps(true);
    const tokens = 10, first = cache.length; // positions 21 … 30: replayed, no growth
    const started = performance.now();
    for (let i = 0; i < tokens; i++) step(11 + i);
    const wall = (performance.now() - started) / 1000;
    const profile = backend.readStepProfile()!;
    backend.profileSteps(false);
    step(2);
    assert.equal(backend.readStepProfile(), null, 'off again');

    assert.equal(profile.tokens, tokens);
    const op = (kind: string) => {
      const found = profile.ops.find((o) => o.kind === kind);
      assert.ok(found, `${kind} in ${profile.ops.map((o) => o.kind).join(', ')}`);
      return found;
    };
    for (const kind of ['rmsnorm', 'rope', 'kv store', 'attention', 'add', 'router', 'experts']) assert.ok(op(kind).seconds > 0, `${kind} timed`);
    // Products by their weights' stored types: 'matmul bf16', 'matmul f32', … (a packed type under its file type)
    const products = profile.ops.filter((o) => o.kind.startsWith('matmul'));
    assert.ok(products.length > 0 && products.every((o) => o.seconds > 0), 'products timed');
    const timed = profile.ops.reduce((sum, o) => sum + o.seconds, 0);
    assert.ok(timed <= wall, `ops ${timed} s within the steps' ${wall} s`);

    const { layers } = model.weights, { numExpertsPerTok: topK } = model.config;
    assert.equal(op('attention').calls, tokens * layers.length);
    assert.equal(op('experts').calls, tokens * layers.length);
    const productWeights = layers.flatMap((l) => [l.q, l.k, l.v, l.o, l.router]).concat(model.weights.lmHead!);
    const productBytes = productWeights.reduce((sum, w) => sum + bytes(w), 0);
    assert.equal(products.reduce((sum, o) => sum + o.bytes, 0), tokens * productBytes, 'q, k, v, o, router of every layer and the head, once a token');
    const types = new Set(products.flatMap((o) => o.kind.slice('matmul '.length).split('+')));
    assert.deepEqual([...types].sort(), [...new Set(productWeights.map((w) => w.dtype))].sort(), `the kinds name the weights' types: ${products.map((o) => o.kind).join(', ')}`);
    const expert = (l: (typeof layers)[number]) => bytes(l.experts.gate[0]!) + bytes(l.experts.up[0]!) + bytes(l.experts.down[0]!);
    assert.equal(op('experts').bytes, tokens * topK * layers.reduce((sum, l) => sum + expert(l), 0), 'top-k experts a layer');
    const rowBytes = (cache as RefKVCache).rowBytes;
    let positions = 0; // a token at position p reads the keys and values of positions 0 … p
    for (let p = first; p < first + tokens; p++) positions += p + 1;
    assert.equal(op('attention').bytes, 2 * rowBytes * layers.length * positions, 'keys and values up to each token');
    assert.equal(op('kv store').bytes, 2 * rowBytes * layers.length * tokens, 'one key and one value row a layer');
  });

  it('native addon: planRun refuses a profile that is not 2 values a step', { skip: announceSkip(nativeSkip) }, () => {
    const addon = (createBackend('native') as unknown as { addon: NativeAddon }).addon;
    const width = 64, F16 = 2;
    const storage = new Uint8Array(addon.allocate(4 * width * 2));
    addon.planBegin();
    addon.kvStore(new Float32Array(width).fill(1), 1, width, F16, storage.subarray(0, width * 2));
    const plan = addon.planEnd();
    assert.deepEqual(addon.planKinds(plan), ['kv store']);
    assert.throws(() => addon.planRun(plan, 1, new Float64Array(1)), /Float64Array of 2 × 1 values/);
    assert.throws(() => addon.planRun(plan, 1, new Float32Array(2) as unknown as Float64Array), /Float64Array of 2 × 1 values/);
    const profile = new Float64Array(2);
    addon.planRun(plan, 1, profile);
    addon.planRun(plan, 2, profile);
    assert.ok(profile[0]! > 0);
    assert.equal(profile[1], 2 * width * 2, 'two f16 rows written');
  });
});
