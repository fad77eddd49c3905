/**
 * `olmoe bench`'s decode bound: the bytes a decoded token reads, worked out by hand for the tiny fixture, and the
 * printed bound and percentage on the native backend (the machine measured in the same run).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { DecodeTraffic } from '../src/cli/commands/bench-traffic.js';
import { decodeBound, steadySamples } from '../src/cli/commands/bench.js';
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

describe('decode as a % of its bound over runs whose bandwidth samples agree', () => {
  // 1 GB read per token: a run's % is tokens/s ÷ (GB/s) × 100.
  const traffic = { weightBytesPerToken: () => 1e9, cacheBytesPerToken: () => 0 };

  it('a run is steady where its two samples are within 25 % of each other', () => {
    assert.equal(steadySamples(30e9, 36e9), true);
    assert.equal(steadySamples(36e9, 30e9), true);
    assert.equal(steadySamples(30e9, 40e9), false, 'a phase change between the samples');
    assert.equal(steadySamples(0, 30e9), false, 'a sample that could not allocate');
  });

  it('median bandwidth and % over the steady runs; every run\'s % still listed', () => {
    const r = decodeBound(traffic, undefined, [
      { tokensPerSecond: 30, readBytesPerSecond: 33e9, steady: true }, // 90.9 %
      { tokensPerSecond: 30, readBytesPerSecond: 44e9, steady: false }, // 68.2 %: samples 33 and 55 GB/s, say
      { tokensPerSecond: 29, readBytesPerSecond: 34e9, steady: true }, // 85.3 %
    ], 0, 0);
    assert.deepEqual(r.decodePercentOfBoundRuns, [90.9, 68.2, 85.3]);
    assert.equal(r.decodeSteadyRuns, 2);
    assert.equal(r.decodePercentOfBound, (90.9 + 85.3) / 2);
    assert.equal(r.readGBPerSecond, 33.5);
    assert.equal(r.decodeBoundTokensPerSecond, 33.5);
    assert.deepEqual(r.readGBPerSecondRuns, [33, 44, 34]);
  });

  it('without a steady run, all runs count', () => {
    const r = decodeBound(traffic, undefined, [
      { tokensPerSecond: 30, readBytesPerSecond: 40e9, steady: false }, // 75 %
      { tokensPerSecond: 30, readBytesPerSecond: 50e9, steady: false }, // 60 %
      { tokensPerSecond: 30, readBytesPerSecond: 60e9, steady: false }, // 50 %
    ], 0, 0);
    assert.equal(r.decodeSteadyRuns, 0);
    assert.equal(r.decodePercentOfBound, 60);
    assert.equal(r.readGBPerSecond, 50);
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

  it('--profile: one more decode with its ops timed, whose parts make up the token and whose bytes are the ones the bound counts', () => {
    const gen = 6;
    const run = spawnSync(process.execPath, [cliPath, 'bench', tinyModelDir, '--prompt', '8', '--gen', String(gen), '--runs', '1', '--json', '-q', '--backend', 'native', '--profile'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    const r = JSON.parse(run.stdout) as { decodeWeightMBPerToken: number; decodeCacheMBPerToken: number; decodeProfile: { tokens: number; msPerToken: number; outsideMicrosecondsPerToken: number; ops: { kind: string; mbPerToken: number; microsecondsPerToken: number; percentOfToken: number; gbPerSecond: number | null }[] } };
    const profile = r.decodeProfile;
    assert.equal(profile.tokens, gen, 'every step of the profiled run replayed');
    const op = (kind: string) => profile.ops.find((o) => o.kind === kind)!;
    const parts = profile.ops.reduce((sum, o) => sum + o.microsecondsPerToken, profile.outsideMicrosecondsPerToken);
    assert.ok(Math.abs(parts - profile.msPerToken * 1000) <= 0.01 * profile.msPerToken * 1000, `ops and the rest ${parts} µs make up the token's ${profile.msPerToken} ms`);
    // The products read every weight the bound counts but the norms (3 layers × 4 × 96 values, the final norm's 96) and
    // the embedding row (96), bf16; attention reads the cache the bound counts at the same positions.
    const products = profile.ops.filter((o) => o.kind.startsWith('matmul')).reduce((sum, o) => sum + o.mbPerToken, 0) + op('experts').mbPerToken;
    assert.ok(Math.abs(products - (r.decodeWeightMBPerToken - (2 * (3 * 4 * 96 + 96 + 96)) / 1e6)) < 0.001, `${products} MB against ${r.decodeWeightMBPerToken}`);
    assert.ok(Math.abs(op('attention').mbPerToken - r.decodeCacheMBPerToken) < 0.001, `${op('attention').mbPerToken} MB against ${r.decodeCacheMBPerToken}`);
    assert.ok(op('experts').gbPerSecond! > 0 && op('kv store').gbPerSecond === null);
  });

  it('--profile needs the native backend and a decode', () => {
    const reference = spawnSync(process.execPath, [cliPath, 'bench', tinyModelDir, '--prompt', '8', '--gen', '4', '--runs', '1', '-q', '--backend', 'reference', '--profile'], { encoding: 'utf8' });
    assert.notEqual(reference.status, 0);
    assert.match(reference.stderr, /--profile: the backend has no per-op profile \(it needs --backend native\)/);
    const short = spawnSync(process.execPath, [cliPath, 'bench', tinyModelDir, '--prompt', '8', '--gen', '1', '--runs', '1', '-q', '--backend', 'native', '--profile'], { encoding: 'utf8' });
    assert.notEqual(short.status, 0);
    assert.match(short.stderr, /--profile: give --gen 2 or more/);
  });
});
