/**
 * Released KV caches: their storage goes back to the backend (KVCache.release), the native backend keeps it for later
 * caches (KVStoragePool), a released cache refuses use, and a cache on reused storage computes what a fresh one does.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createBackend } from '../src/backends/index.js';
import type { NativeAddon } from '../src/backends/native/addon.js';
import { KVStoragePool } from '../src/backends/native/kv-pool.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { RefKVCache } from '../src/backends/reference/kv-cache.js';
import { InputError } from '../src/core/errors.js';
import { generateText, GenerationBatch } from '../src/generate/generate.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { announceSkip, nativeSkip } from './backends.js';
import { tinyModelDir } from './helpers.js';

describe('KVStoragePool', () => {
  const pool = (limit: number) => {
    const dropped: ArrayBuffer[] = [];
    return { pool: new KVStoragePool(limit, (buffer) => dropped.push(buffer)), dropped };
  };

  it('hands out the smallest buffer that fits, as a view of the bytes asked for', () => {
    const { pool: p } = pool(1 << 20);
    assert.equal(p.take(10), undefined, 'empty');
    const [small, large] = [new ArrayBuffer(4096), new ArrayBuffer(16384)];
    p.put(new Uint8Array(large), 16384);
    p.put(new Uint8Array(small), 4096);
    assert.equal(p.bytes, 20480);
    const view = p.take(3000)!;
    assert.equal(view.buffer, small);
    assert.equal(view.byteLength, 3000);
    assert.equal(p.take(8192)!.buffer, large);
    assert.equal(p.take(1), undefined);
    assert.equal(p.bytes, 0);
  });

  it('holds at most its limit of faulted-in bytes; what would pass it is dropped', () => {
    const { pool: p, dropped } = pool(10000);
    const [a, b, c] = [new ArrayBuffer(8192), new ArrayBuffer(8192), new ArrayBuffer(8192)];
    p.put(new Uint8Array(a), 6000);
    p.put(new Uint8Array(b), 6000); // 12,000 > 10,000
    p.put(new Uint8Array(c), 2000);
    assert.deepEqual(dropped, [b]);
    assert.equal(p.bytes, 8000);
    p.put(new Uint8Array(a), 6000); // already held: not counted twice, not dropped (it would free memory the pool holds)
    assert.equal(p.bytes, 8000);
    assert.deepEqual(dropped, [b]);
  });

  it('remembers the most a buffer ever had faulted in, across the caches that used it', () => {
    const { pool: p } = pool(1 << 20);
    const buffer = new ArrayBuffer(65536);
    p.put(new Uint8Array(buffer), 40000);
    const again = p.take(1000)!; // a small cache on it faults in little of it itself
    p.put(again, 500);
    assert.equal(p.bytes, 40000);
  });

  it('ignores empty (detached) buffers', () => {
    const { pool: p, dropped } = pool(1 << 20);
    p.put(new Uint8Array(0), 0);
    assert.equal(p.bytes, 0);
    assert.deepEqual(dropped, []);
    assert.equal(p.take(0), undefined);
  });
});

describe('KVCache.release', () => {
  it('gives every layer\'s keys and values to the storage with the bytes faulted in, then refuses use, naming why', async () => {
    const recycled: [Uint8Array, number][] = [];
    const cache = new RefKVCache({ layers: 2, capacity: 64, kvHeads: 2, headDim: 4, dtype: 'f32', reserve: 16 }, { populate: () => {}, recycle: (storage, faulted) => recycled.push([storage, faulted]) });
    cache.store(0, 0, { keys: new Float32Array(3 * 8), values: new Float32Array(3 * 8) });
    cache.store(1, 0, { keys: new Float32Array(3 * 8), values: new Float32Array(3 * 8) });
    const storages = [...cache.keys, ...cache.values];
    cache.release();
    assert.equal(recycled.length, 4);
    assert.deepEqual(new Set(recycled.map(([storage]) => storage)), new Set(storages));
    const rowBytes = 8 * 4;
    assert.ok(recycled.every(([, faulted]) => faulted === 16 * rowBytes), 'populate ran ahead to the 16 positions allocated');
    assert.equal(cache.allocated, 0);
    assert.throws(() => cache.store(0, 3, { keys: new Float32Array(8), values: new Float32Array(8) }), (error: unknown) => error instanceof InputError && /KV cache was released/.test(error.message));
    assert.throws(() => cache.read('keys', 0, 1), /released/);
    cache.release(); // twice: nothing more
    assert.equal(recycled.length, 4);
  });

  it('a model forward on a released cache is an InputError (reference backend)', async () => {
    const { model } = await loadPretrained(tinyModelDir, { backend: new ReferenceBackend() });
    const cache = model.createCache(32);
    model.forward(Int32Array.of(1, 2, 3), { cache });
    cache.release?.();
    assert.throws(() => model.forward(Int32Array.of(4), { cache }), InputError);
  });
});

/** The tiny model on the native backend, counting the addon's allocations (KV storage). */
async function countingAllocations() {
  const lm = await loadPretrained(tinyModelDir, { backend: createBackend('native', { threads: 1 }) });
  const addon = (lm.model.backend as unknown as { addon: NativeAddon }).addon;
  const allocations = { count: 0 };
  const allocate = addon.allocate.bind(addon);
  addon.allocate = (bytes) => (allocations.count++, allocate(bytes));
  return { lm, allocations };
}

describe('native KV storage reuse', () => {
  it('a generation\'s cache goes back to the pool when it ends, and the next generation on that storage gives what a fresh backend gives', { skip: announceSkip(nativeSkip) }, async () => {
    const { lm, allocations } = await countingAllocations();
    const options = { greedy: true, eosTokenIds: [], maxNewTokens: 24 };
    await generateText(lm, [5, 6, 7, 8, 9, 10, 11, 12], options); // leaves its keys and values behind in the storage
    const first = allocations.count;
    assert.ok(first > 0);
    const promptB = [40, 41, 42];
    const reused = await generateText(lm, promptB, options);
    assert.equal(allocations.count, first, 'the second generation allocated nothing: it took the first one\'s storage');
    const fresh = await generateText(await loadPretrained(tinyModelDir, { backend: createBackend('native', { threads: 1 }) }), promptB, options);
    assert.deepEqual(reused.ids, fresh.ids);

    // A batch: runs that finish give their storage back within the step; the next ones take it.
    const batch = new GenerationBatch(lm);
    const runs = [[1, 2, 3], [7, 8], [20, 21, 22, 23]].map((prompt) => batch.add(prompt, { ...options, maxNewTokens: 6 }));
    while (batch.size > 0) batch.step();
    const afterBatch = allocations.count;
    const again = new GenerationBatch(lm);
    const second = [[1, 2, 3], [7, 8], [20, 21, 22, 23]].map((prompt) => again.add(prompt, { ...options, maxNewTokens: 6 }));
    while (again.size > 0) again.step();
    assert.equal(allocations.count, afterBatch, 'the second batch reused the first one\'s storage');
    assert.deepEqual(second.map((run) => run.result().ids), runs.map((run) => run.result().ids));
  });

  it('without a KV cache each pass\'s one-pass cache goes back to the pool, and the next pass takes it', { skip: announceSkip(nativeSkip) }, async () => {
    const { lm, allocations } = await countingAllocations();
    const options = { greedy: true, eosTokenIds: [], useCache: false };
    const short = await generateText(lm, [5, 6, 7, 8, 9, 10, 11, 12], { ...options, maxNewTokens: 1 }); // one pass: 8 positions
    const first = allocations.count;
    assert.ok(first > 0);
    const long = await generateText(lm, [5, 6, 7, 8], { ...options, maxNewTokens: 4 }); // passes of 4 to 7 positions
    assert.equal(allocations.count, first, 'the later passes allocated nothing');
    assert.deepEqual(long.ids, (await generateText(lm, [5, 6, 7, 8], { greedy: true, eosTokenIds: [], maxNewTokens: 4 })).ids, 'the tokens a cached generation gives');
    assert.equal(short.ids.length, 1);
  });

  it('a generation dropped from its batch gives its storage back', { skip: announceSkip(nativeSkip) }, async () => {
    const lm = await loadPretrained(tinyModelDir, { backend: createBackend('native', { threads: 1 }) });
    const pool = (lm.model.backend as unknown as { kvPool: KVStoragePool }).kvPool;
    const batch = new GenerationBatch(lm);
    const run = batch.add([1, 2, 3], { greedy: true, eosTokenIds: [], maxNewTokens: 50 });
    batch.step();
    batch.step();
    assert.equal(pool.bytes, 0);
    batch.remove(run);
    assert.ok(pool.bytes > 0, 'its faulted-in storage is in the pool');
  });
});
