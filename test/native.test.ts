/** Native backend specifics: memory-mapped weights and what happens when files change; allocation failures. */
import assert from 'node:assert/strict';
import { cpSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { ResourceError } from '../src/core/errors.js';
import { loadModel } from '../src/model/load.js';
import { writeRandomCheckpoint } from '../src/model/random-checkpoint.js';
import { announceSkip, backendCases } from './backends.js';
import { logitsOf, maxAbsDiff } from './checkpoints.js';
import { tempDir, tinyModelDir } from './helpers.js';

const IDS = Int32Array.from([5, 80, 17, 200, 33]);
const native = backendCases.find((b) => b.name === 'native')!;
const inCi = /^(1|true)$/i.test(process.env.CI ?? '') || process.env.OLMOE_REQUIRE_NATIVE === '1';

// Without the addon every native test is skipped with its reason; in CI that must fail the run, not vanish.
it('the native addon is built (required in CI; elsewhere its tests skip, saying why)', { skip: inCi ? false : announceSkip(native.skip) }, () => {
  assert.equal(native.skip, false, `CI needs the native backend, but ${native.skip}`);
});

describe('memory-mapped weights', { skip: announceSkip(native.skip) }, () => {
  it('a checkpoint replaced on disk (new file renamed over the old) leaves a loaded model unchanged; a new load sees it', async () => {
    const dir = tempDir();
    cpSync(tinyModelDir, dir, { recursive: true });
    const backend = native.create();
    const loaded = await loadModel(dir, { backend });
    const before = logitsOf(loaded, IDS);
    // olmoe's own writers replace files atomically (temp file + rename): the mapping keeps the old inode.
    const other = tempDir();
    writeRandomCheckpoint(other, { layers: 3, experts: 16, topK: 4, hidden: 96, heads: 6, intermediate: 48, vocab: 600, context: 256, dtype: 'bf16', seed: 99, std: 0.25 });
    cpSync(join(other, 'model.safetensors'), join(dir, 'model.safetensors.new'));
    renameSync(join(dir, 'model.safetensors.new'), join(dir, 'model.safetensors'));
    assert.equal(maxAbsDiff(logitsOf(loaded, IDS), before), 0, 'the loaded model still reads the old weights');
    const reloaded = await loadModel(dir, { backend });
    assert.ok(maxAbsDiff(logitsOf(reloaded, IDS), before) > 1e-3, 'a new load maps the new file');
  });
});

describe('allocation failures', () => {
  for (const backend of backendCases) {
    it(`${backend.name}: a KV cache too large to allocate is a ResourceError naming its size`, { skip: backend.skip }, async () => {
      const model = await loadModel(tinyModelDir, { backend: backend.name === 'reference' ? new ReferenceBackend() : backend.create() });
      // The cache grows as tokens arrive, so a huge capacity costs nothing until it is reserved.
      const { numLayers, numKVHeads, headDim } = model.config;
      const huge = { layers: numLayers, capacity: 2 ** 33, kvHeads: numKVHeads, headDim };
      assert.equal(model.backend.createKVCache(huge).allocated, 0);
      assert.throws(() => model.backend.createKVCache({ ...huge, reserve: 2 ** 33 }), (e: Error) => e instanceof ResourceError && /out of memory: cannot allocate a KV cache of 8589934592 positions/.test(e.message));
    });
  }
});
