/**
 * `olmoe bench`'s decode bound: the bytes a decoded token reads, worked out by hand for the tiny fixture, and the
 * printed bound and percentage on the native backend (the machine measured in the same run).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { DecodeTraffic } from '../src/cli/commands/bench-traffic.js';
import { argmax } from '../src/generate/sampling.js';
import { loadModel } from '../src/model/load.js';
import { announceSkip, nativeSkip } from './backends.js';
import { cliPath, tinyModelDir } from './helpers.js';

describe('bytes read per decoded token', () => {
  it('tiny fixture (bf16; D 96, F 48, 3 layers, 16 experts, top-4, vocab 600, 6 kv heads × 16)', async () => {
    const model = await loadModel(tinyModelDir, { backend: new ReferenceBackend() });
    const traffic = new DecodeTraffic(model);
    const cache = model.createCache();
    let logits = model.backend.toFloat32(model.forward(Int32Array.of(5, 80, 17), { cache, logits: 'last' }));
    for (let i = 0; i < 3; i++) logits = model.backend.toFloat32(model.forward(Int32Array.of(argmax(logits)), { cache, logits: 'last', observer: traffic.observer }));
    // per layer: norms 4 × 96, q k v o 4 × 96², router 16 × 96; 4 experts × 3 × 96 × 48; plus an embedding row, the
    // final norm and the head 600 × 96; all bf16 (2 bytes)
    const perLayer = 4 * 96 + 4 * 96 * 96 + 16 * 96 + 4 * 3 * 96 * 48;
    assert.equal(traffic.weightBytesPerToken(), 2 * (3 * perLayer + 96 + 96 + 600 * 96));
    // positions 3, 4, 5 read 4, 5, 6 cached positions: keys and values, 3 layers × 6 heads × 16 values each, in the
    // default f16 cache 2 bytes a value; f32 4; q8_0 a row of 96 values is 3 blocks of 34 bytes
    assert.equal(traffic.cacheBytesPerToken(3, 3), 5 * 2 * 3 * 6 * 16 * 2);
    model.kvCacheType = 'f32';
    assert.equal(traffic.cacheBytesPerToken(3, 3), 5 * 2 * 3 * 6 * 16 * 4);
    model.kvCacheType = 'q8_0';
    assert.equal(traffic.cacheBytesPerToken(3, 3), 5 * 2 * 3 * 3 * 34);
  });
});

describe('olmoe bench on the native backend', { skip: announceSkip(nativeSkip) }, () => {
  it('prints read bandwidth (sampled beside each run, and the best at the end), FP32 peak, bytes per token, the bound they give and decode as a % of it', () => {
    const run = spawnSync(process.execPath, [cliPath, 'bench', tinyModelDir, '--prompt', '8', '--gen', '4', '--runs', '1', '--json', '-q', '--backend', 'native'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    const r = JSON.parse(run.stdout) as Record<string, number>;
    assert.ok(r.readGBPerSecond! > 0 && r.readGBPerSecondBest! > 0 && r.fp32PeakGflops! > 0, JSON.stringify(r));
    // One run: its bandwidth is the mean of the samples before and after it, and its % is the median.
    const runs = r as unknown as { readGBPerSecondRuns: number[]; decodePercentOfBoundRuns: number[] };
    assert.deepEqual(runs.readGBPerSecondRuns, [r.readGBPerSecond]);
    assert.deepEqual(runs.decodePercentOfBoundRuns, [r.decodePercentOfBound]);
    const bytes = (r.decodeWeightMBPerToken! + r.decodeCacheMBPerToken!) * 1e6;
    assert.ok(Math.abs(r.decodeBoundTokensPerSecond! - (r.readGBPerSecond! * 1e9) / bytes) <= 0.01 * r.decodeBoundTokensPerSecond!, 'bound = bandwidth ÷ bytes per token');
    assert.ok(Math.abs(r.decodePercentOfBound! - (100 * r.decodeTokensPerSecond!) / r.decodeBoundTokensPerSecond!) <= 0.1, '% = decode ÷ bound');
  });
});
