/**
 * The KV cache grows as tokens arrive: a cache (or a server request without max_tokens) sized for a
 * million-token context allocates only what the tokens use, and decoding through its growth gives bit-identical
 * logits and tokens to a cache allocated whole up front — on every backend.
 */
import assert from 'node:assert/strict';
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createBackend } from '../src/backends/index.js';
import type { NativeAddon } from '../src/backends/native/addon.js';
import type { RefKVCache } from '../src/backends/reference/kv-cache.js';
import type { KVCache } from '../src/core/backend.js';
import { PREFILL_CHUNK } from '../src/model/olmoe.js';
import { loadPretrained } from '../src/model/pretrained.js';
import type { OlmoeModel } from '../src/model/olmoe.js';
import { startServer } from '../src/server/index.js';
import { announceSkip, backendCases, nativeSkip } from './backends.js';
import { assertChildRunPasses, tempDir, tinyModelDir } from './helpers.js';

const CONTEXT = 1 << 20;

/** A copy of the tiny model whose config claims a context of `context` positions. */
function longContextModel(dir: string, context: number): string {
  const model = join(dir, 'model');
  cpSync(tinyModelDir, model, { recursive: true });
  const config = JSON.parse(readFileSync(join(model, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileSync(join(model, 'config.json'), JSON.stringify({ ...config, max_position_embeddings: context }));
  return model;
}

/** Greedy decoding of `steps` tokens after `prompt` in `cache`: every step's logits and the chosen ids. */
function decode(model: OlmoeModel, cache: KVCache, prompt: number[], steps: number): { logits: Float32Array[]; ids: number[] } {
  const logits: Float32Array[] = [];
  const ids: number[] = [];
  let input = Int32Array.from(prompt);
  for (let step = 0; step <= steps; step++) {
    const row = model.backend.toFloat32(model.forward(input, { cache, logits: 'last' }));
    logits.push(row);
    const next = row.indexOf(Math.max(...row));
    ids.push(next);
    input = Int32Array.of(next);
  }
  return { logits, ids };
}

describe('KV cache growth', () => {
  let dir: string;
  let modelDir: string;
  before(() => {
    dir = tempDir('olmoe-kv-');
    modelDir = longContextModel(dir, CONTEXT);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const { name, create, skip } of backendCases) {
    it(`${name}: a cache for a ${CONTEXT}-token context allocates only what its tokens use, and growing gives the same logits as preallocating`, { skip: announceSkip(skip) }, async () => {
      const { model } = await loadPretrained(modelDir, { backend: create() });
      const growing = model.createCache();
      assert.equal(growing.capacity, CONTEXT);
      assert.equal(growing.allocated, 0, 'nothing before the first token');
      const { numLayers, numKVHeads, headDim } = model.config;
      const whole = model.backend.createKVCache({ layers: numLayers, capacity: 300, kvHeads: numKVHeads, headDim, reserve: 300 });
      assert.equal(whole.allocated, 300);
      const prompt = [5, 80, 17, 200, 33, 9, 41];
      const grown = decode(model, growing, prompt, 60); // through 16 → 32 → 64 → 128 positions
      const reference = decode(model, whole, prompt, 60);
      assert.equal(growing.length, prompt.length + 60);
      assert.ok(growing.allocated >= growing.length && growing.allocated <= 2 * growing.length, `allocated ${growing.allocated} for ${growing.length} tokens`);
      assert.deepEqual(grown.ids, reference.ids);
      grown.logits.forEach((row, step) => assert.deepEqual(row, reference.logits[step], `step ${step}`));
    });
  }

  it('native: storage that growth replaced is freed at once (its views detached), and release refuses other buffers', { skip: announceSkip(nativeSkip) }, async () => {
    const { model } = await loadPretrained(modelDir, { backend: createBackend('native') });
    const cache = model.createCache() as RefKVCache;
    model.forward(Int32Array.from({ length: 20 }, (_, i) => i + 1), { cache });
    const [keys, values] = [cache.keys[0]!, cache.values[0]!];
    const allocated = cache.allocated;
    assert.ok(keys.byteLength > 0 && allocated < 64);
    model.forward(Int32Array.from({ length: 60 }, (_, i) => i + 3), { cache });
    assert.ok(cache.allocated > allocated, 'the cache grew');
    assert.equal(keys.byteLength, 0, 'the replaced keys were released');
    assert.equal(values.byteLength, 0, 'the replaced values were released');
    assert.equal(cache.keys[0]!.byteLength, cache.allocated * cache.rowBytes, 'the new storage is whole');
    const addon = (model.backend as unknown as { addon: NativeAddon }).addon;
    const plain = new Uint8Array(1 << 17).fill(7);
    assert.equal(addon.release(plain.buffer), false, 'not memory of allocate');
    assert.equal(plain[5], 7);
    for (const bytes of [1 << 17, 3 << 20]) { // from malloc, and mapped pages of their own
      const mine = addon.allocate(bytes);
      new Uint8Array(mine).fill(1);
      assert.equal(addon.release(mine), true);
      assert.equal(mine.byteLength, 0);
      assert.equal(addon.release(mine), false, 'released once');
    }
  });

  it('native: resize keeps the contents, zeroes the rest and detaches the old buffer, for both kinds of block', { skip: announceSkip(nativeSkip) }, async () => {
    const { model } = await loadPretrained(modelDir, { backend: createBackend('native') });
    const addon = (model.backend as unknown as { addon: NativeAddon }).addon;
    // malloc → malloc, malloc → mapped, mapped → mapped (pages moved, not copied), and a block from 4 MiB on (on huge
    // pages with OLMOE_HUGE_PAGES=1 where the machine has free 2 MiB blocks, native/src/mapping.h: the child run below)
    for (const [from, to] of [[5000, 70000], [1 << 17, 3 << 20], [(3 << 20) + 100, 9 << 20], [(5 << 20) + 3, 13 << 20]] as const) {
      const old = addon.allocate(from);
      const pattern = (i: number) => (i * 7 + 3) & 255;
      new Uint8Array(old).forEach((_, i, a) => (a[i] = pattern(i)));
      const grown = new Uint8Array(addon.resize(old, to)!);
      assert.equal(old.byteLength, 0, `${from} → ${to}: the old buffer is detached`);
      assert.equal(grown.byteLength, to);
      assert.ok(grown.subarray(0, from).every((v, i) => v === pattern(i)), `${from} → ${to}: contents kept`);
      assert.ok(grown.subarray(from).every((v) => v === 0), `${from} → ${to}: the rest is zero`);
      assert.throws(() => addon.resize(grown.buffer as ArrayBuffer, to - 1), /less than/);
      assert.equal(addon.release(grown.buffer as ArrayBuffer), true, 'the grown block is registered');
    }
    assert.equal(addon.resize(new ArrayBuffer(64), 128), null, 'not memory of allocate');
  });

  it('refuses to store beyond its capacity, naming both numbers', async () => {
    const { model } = await loadPretrained(tinyModelDir, { backend: backendCases[0]!.create() });
    const cache = model.createCache(8);
    assert.throws(() => model.forward(Int32Array.from({ length: 9 }, (_, i) => i + 1), { cache }), /exceeds the context of 8 positions/);
    model.forward(Int32Array.from({ length: 8 }, (_, i) => i + 1), { cache });
    assert.equal(cache.allocated, 8, 'growth stops at the capacity');
  });
});

describe('long prompts in pieces', () => {
  let dir: string;
  let modelDir: string;
  before(() => {
    dir = tempDir('olmoe-chunks-');
    modelDir = longContextModel(dir, 4096);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const { name, create, skip } of backendCases) {
    it(`${name}: a prompt of ${PREFILL_CHUNK * 2 + 276} tokens goes through the layers ${PREFILL_CHUNK} at a time when only its last logits are wanted, with the logits of one whole pass`, { skip: announceSkip(skip) }, async () => {
      const { model } = await loadPretrained(modelDir, { backend: create() });
      const passes: number[] = [];
      const embedding = model.backend.embedding.bind(model.backend);
      model.backend.embedding = (table, ids) => (passes.push(ids.length), embedding(table, ids));
      const ids = Int32Array.from({ length: PREFILL_CHUNK * 2 + 276 }, (_, i) => (i * 7919 + 13) % model.config.vocabSize);
      const [pieces, whole] = [model.createCache(4096), model.createCache(4096)];
      const last = model.backend.toFloat32(model.forward(ids, { cache: pieces, logits: 'last' }));
      assert.deepEqual(passes, [PREFILL_CHUNK, PREFILL_CHUNK, 276]);
      const all = model.backend.toFloat32(model.forward(ids, { cache: whole, logits: 'all' }));
      assert.deepEqual(passes.slice(3), [ids.length], "logits: 'all' is one pass");
      assert.equal(pieces.length, ids.length);
      const expected = all.subarray(all.length - last.length);
      const scale = Math.max(...expected.map(Math.abs));
      const worst = Math.max(...last.map((v, i) => Math.abs(v - expected[i]!)));
      // The reference computes each position's attention and experts alike in either pass: the same bits. The native
      // experts group a piece's tokens by expert (tiles or dot products by group size), which may sum in another order.
      if (name === 'reference') assert.deepEqual(last, expected);
      else assert.ok(worst <= 1e-5 * scale, `max difference ${worst} for logits up to ${scale}`);
    });
  }

  it('a long prompt that does not fit, or holds a bad id, is refused whole: no piece runs, the cache stays empty', async () => {
    const { model } = await loadPretrained(modelDir, { backend: backendCases[0]!.create() });
    const cache = model.createCache(PREFILL_CHUNK + 100);
    const tooLong = Int32Array.from({ length: PREFILL_CHUNK + 101 }, (_, i) => i % 100);
    assert.throws(() => model.forward(tooLong, { cache, logits: 'last' }), /sequence of 613 tokens exceeds the context of 612 positions/);
    const badId = Int32Array.from({ length: PREFILL_CHUNK + 50 }, (_, i) => (i === PREFILL_CHUNK + 7 ? 100000 : i % 100));
    assert.throws(() => model.forward(badId, { cache, logits: 'last' }), new RegExp(`token id 100000 at position ${PREFILL_CHUNK + 7} is out of range`));
    assert.equal(cache.length, 0);
  });
});

describe('KV cache growth in the server', () => {
  let dir: string;
  before(() => {
    dir = tempDir('olmoe-kv-server-');
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  // The native backend touches all of its cache memory when it allocates it (zeroed huge pages), so the whole
  // context allocated up front shows in the resident size: 2^18 positions × 96 floats × 4 bytes × 2 × 3 layers = 576 MiB.
  it('a request without max_tokens on a 2^18-token context (native) streams without allocating the whole context', { skip: announceSkip(nativeSkip) }, async () => {
    const server = await startServer(longContextModel(dir, 1 << 18), { port: 0, modelId: 'tiny', backend: 'native', threads: 1 });
    try {
      await server.ready;
      const before = process.memoryUsage().rss;
      const controller = new AbortController();
      const response = await fetch(`${server.url}/v1/completions`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ model: 'tiny', prompt: 'The experts', temperature: 0, ignore_eos: true, stream: true }),
        signal: controller.signal,
      });
      assert.equal(response.status, 200);
      const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
      let text = '';
      while ((text.match(/"text":/g) ?? []).length < 20) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
      const grown = process.memoryUsage().rss - before;
      controller.abort();
      assert.doesNotMatch(text, /"error"/, text.slice(0, 500));
      assert.ok((text.match(/"text":/g) ?? []).length >= 20, `20 tokens streamed: ${text.slice(0, 500)}`);
      assert.ok(grown < 200 * 2 ** 20, `the process grew by ${(grown / 2 ** 20).toFixed(0)} MiB during the request`);
    } finally {
      await server.close();
    }
  });
});

describe('KV cache growth on transparent huge pages (a child process with OLMOE_HUGE_PAGES=1)', { skip: announceSkip(nativeSkip) }, () => {
  it('this file\'s tests pass with the large blocks advised for huge pages where the machine has free 2 MiB blocks', { skip: process.env.OLMOE_HUGE_PAGES === '1' ? 'already a child run' : false }, () => {
    assertChildRunPasses(import.meta.url, { OLMOE_HUGE_PAGES: '1' }, 'OLMOE_HUGE_PAGES=1');
  });
});
