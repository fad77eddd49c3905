/**
 * Step plans (native backend): the first decode step on a KV cache is recorded, later steps replay its native work
 * without the model's code. A replayed step must equal the step the model's code would run, bit for bit, wherever a
 * plan serves (cache growth, a rewound cache, every cache type), hand out logits no later step overwrites, and give
 * way to the model's code wherever the pass holds work a plan cannot repeat.
 */
import assert from 'node:assert/strict';
import { cpSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { createBackend } from '../src/backends/index.js';
import type { NativeAddon } from '../src/backends/native/addon.js';
import type { NativeBackend } from '../src/backends/native/index.js';
import type { KVCache, KVCacheType } from '../src/core/backend.js';
import type { OlmoeModel } from '../src/model/olmoe.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { announceSkip, nativeSkip } from './backends.js';
import { tempDir, tinyModelDir } from './helpers.js';

/** The model on a native backend whose replayed steps are counted. */
async function counted(stepPlans: boolean, modelDir = tinyModelDir): Promise<{ model: OlmoeModel; replays: () => number }> {
  const backend = createBackend('native', { stepPlans }) as NativeBackend;
  let replays = 0;
  const replay = backend.replayStep.bind(backend);
  backend.replayStep = (...args) => {
    const result = replay(...args);
    if (result) replays++;
    return result;
  };
  const { model } = await loadPretrained(modelDir, { backend });
  return { model, replays: () => replays };
}

/** Greedy steps after `prompt` (or after what the cache holds when it is empty): each step's logits, as returned. */
function decode(model: OlmoeModel, cache: KVCache, prompt: number[], steps: number): Float32Array[] {
  const rows: Float32Array[] = [];
  let input = Int32Array.from(prompt);
  for (let step = 0; step < steps; step++) {
    const row = model.backend.toFloat32(model.forward(input, { cache, logits: 'last' }));
    rows.push(row);
    input = Int32Array.of(row.indexOf(Math.max(...row)));
  }
  return rows;
}

describe('step plans', () => {
  for (const type of ['f16', 'q8_0', 'f32'] as KVCacheType[]) {
    it(`native, ${type} cache: replayed steps give the logits of the model's code bit for bit, through growth (16 → 32 → 64 positions) and a rewound cache`, { skip: announceSkip(nativeSkip) }, async () => {
      const [planned, plain] = [await counted(true), await counted(false)];
      const run = ({ model }: { model: OlmoeModel }) => {
        const cache = model.createCache(undefined, type);
        const first = decode(model, cache, [5, 80, 17, 200, 33, 9, 41], 50);
        cache.length = 12; // rewound: a replay at an earlier position than the one recorded
        return [...first, ...decode(model, cache, [7], 10)];
      };
      const [got, want] = [run(planned), run(plain)];
      assert.equal(plain.replays(), 0);
      assert.ok(planned.replays() >= 50, `${planned.replays()} steps replayed of 58 (recorded again where the cache grew)`);
      assert.equal(got.length, want.length);
      got.forEach((row, step) => assert.deepEqual(row, want[step], `step ${step}`));
    });
  }

  it('native: the logits a replayed step returns are its own: later steps never write them', { skip: announceSkip(nativeSkip) }, async () => {
    const { model, replays } = await counted(true);
    const rows = decode(model, model.createCache(), [3, 1, 4, 1, 5], 30);
    const copies = rows.map((row) => row.slice());
    decode(model, model.createCache(), [9, 2, 6], 30); // another cache: its own plan
    assert.ok(replays() >= 50);
    rows.forEach((row, step) => assert.deepEqual(row, copies[step], `step ${step}`));
  });

  it('native: a step with a routing observer, or whose pass computes in TypeScript (clip_qkv\'s clamp), runs the model\'s code, with the same results', { skip: announceSkip(nativeSkip) }, async () => {
    const { model, replays } = await counted(true);
    const cache = model.createCache();
    const seen: number[] = [];
    let input = Int32Array.from([5, 80, 17]);
    for (let step = 0; step < 6; step++) {
      const row = model.backend.toFloat32(model.forward(input, { cache, logits: 'last', observer: (e) => seen.push(e.layer) }));
      input = Int32Array.of(row.indexOf(Math.max(...row)));
    }
    assert.equal(replays(), 0);
    assert.equal(seen.length, 6 * model.config.numLayers, 'every step observed');

    const dir = tempDir('olmoe-plans-');
    try {
      const clipped = join(dir, 'model');
      cpSync(tinyModelDir, clipped, { recursive: true });
      const config = JSON.parse(readFileSync(join(clipped, 'config.json'), 'utf8')) as Record<string, unknown>;
      writeFileSync(join(clipped, 'config.json'), JSON.stringify({ ...config, clip_qkv: 0.5 }));
      const [planned, plain] = [await counted(true, clipped), await counted(false, clipped)];
      const got = decode(planned.model, planned.model.createCache(), [5, 80, 17], 12);
      const want = decode(plain.model, plain.model.createCache(), [5, 80, 17], 12);
      assert.equal(planned.replays(), 0, 'no plan: the clamp runs in TypeScript');
      got.forEach((row, step) => assert.deepEqual(row, want[step], `step ${step}`));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('native addon: a plan repeats a KV store one row on, refuses a shift its buffer does not hold, and records one plan at a time', { skip: announceSkip(nativeSkip) }, async () => {
    const addon = (createBackend('native') as unknown as { addon: NativeAddon }).addon;
    const [width, F16] = [64, 2]; // F16: the addon's code for f16 (DTYPE_CODES in src/backends/native/index.ts)
    const storage = new Uint8Array(4 * width * 2); // 4 rows of f16
    const row = Float32Array.from({ length: width }, (_, i) => i / 8 - 3);
    addon.planBegin();
    assert.throws(() => addon.planBegin(), /already recording/);
    addon.kvStore(row, 1, width, F16, storage.subarray(2 * width * 2, 3 * width * 2)); // row 2
    const plan = addon.planEnd();
    assert.throws(() => addon.planEnd(), /no plan is recording/);
    const stored = storage.slice(2 * width * 2, 3 * width * 2);
    assert.ok(stored.some((b) => b !== 0));
    assert.equal(addon.planRun(plan, 1), 1, 'one step');
    assert.deepEqual(storage.slice(3 * width * 2), stored, 'row 3 written as row 2 was');
    addon.planRun(plan, -2);
    assert.deepEqual(storage.slice(0, width * 2), stored, 'row 0');
    assert.throws(() => addon.planRun(plan, 2), /shift 2 outside \[-2, 1\]/);
    assert.throws(() => addon.planRun(plan, -3), /shift -3 outside/);
  });
});
