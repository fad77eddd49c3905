/**
 * bf16 mixed precision of training's matrix products (issue 14 item 2; train-gemm.h, reference/bf16.ts):
 * 1. the rounding to bfloat16 against hand-worked cases (ties to even, NaN, ±inf, overflow, subnormals), in the
 *    reference (TypeScript) and in the kernels (C++), bit for bit;
 * 2. the native bf16 GEMM against a float64 product of the operands rounded here, in all four orientations, with
 *    and without accumulation: the products of two bf16 values are exact in float32, so only the summation
 *    differs, and the float32 tolerance holds, |native − float64| < 1e-4 · √k (entries in [−1, 1]);
 * 3. the law that makes bf16 a perturbation: each operand moves by at most 2⁻⁸ of itself (RNE with 8 significant
 *    bits), so |bf16 product − float32 product| ≤ 2⁻⁷ · Σ_k |a||b| (+ float32 summation), and it does move;
 * 4. the native backend's bf16 ops against the reference twin's through the autograd tape (forward and backward);
 * 5. a short training run in bf16 against the same run in fp32 (loss within a band), and its checkpoint in float32
 *    master weights;
 * 6. this file again with OLMOE_AMX=0 (vdpbf16ps instead of the AMX tile unit) and with OLMOE_SIMD=avx2 and scalar,
 *    where products run on rounded float32 operands.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import type { Routing, Tensor } from '../src/core/backend.js';
import type { MatmulPrecision, TrainingBackend } from '../src/core/training.js';
import { createRng } from '../src/core/rng.js';
import { Tape } from '../src/autograd/tape.js';
import { loadAddon } from '../src/backends/native/addon.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { roundBf16 } from '../src/backends/reference/bf16.js';
import { byteLevelTokenizerJson } from '../src/tokenizer/byte-level.js';
import { TokenShardBuilder, tokenizerFingerprint } from '../src/train/data/shard.js';
import { parseTrainConfig, type TrainConfig } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';
import { latestCheckpoint } from '../src/train/checkpoint.js';
import { announceSkip, backendCases, nativeSkip } from './backends.js';
import { cliPath, tempDir } from './helpers.js';
import { runTape, type Input } from './tape-run.js';

const addon = loadAddon().addon;
const rng = createRng(11);
const random = (n: number, scale = 1) => Float32Array.from({ length: n }, () => (rng() * 2 - 1) * scale);

// ---------------------------------------------------------------- 1. rounding
/** [input, its bf16 by hand]: bf16 keeps 8 significant bits, so the spacing just above 1 is 2⁻⁷. */
const CASES: readonly (readonly [string, number, number])[] = [
  ['exact 1', 1, 1],
  ['π → 1.1001001₂ · 2 (next bit 0: down)', Math.PI, 3.140625],
  ['1 + 2⁻⁸: a tie, to the even 1', 1 + 2 ** -8, 1],
  ['1 + 3·2⁻⁸: a tie, to the even 1 + 2⁻⁶', 1 + 3 * 2 ** -8, 1 + 2 ** -6],
  ['1 + 2⁻⁸ + 2⁻²⁰: above the tie, up', 1 + 2 ** -8 + 2 ** -20, 1 + 2 ** -7],
  ['−(1 + 2⁻⁸): ties to even keep the sign', -(1 + 2 ** -8), -1],
  ['largest bf16 stays', 3.3895313892515355e38, 3.3895313892515355e38],
  ['largest float32 rounds past it to +inf', 3.4028234663852886e38, Infinity],
  ['+inf', Infinity, Infinity],
  ['−inf', -Infinity, -Infinity],
  ['smallest bf16 subnormal 2⁻¹³³ stays', 2 ** -133, 2 ** -133],
  ['1.5 · 2⁻¹³³: a tie between subnormals, to the even 2⁻¹³²', 1.5 * 2 ** -133, 2 ** -132],
  ['smallest float32 subnormal 2⁻¹⁴⁹ → 0', 2 ** -149, 0],
  ['smallest normal float32 2⁻¹²⁶ stays', 2 ** -126, 2 ** -126],
];

describe('rounding to bf16 (round to nearest, ties to even)', () => {
  for (const [what, x, expected] of CASES) it(`reference: ${what}`, () => assert.equal(roundBf16(x), expected));
  it('reference: NaN stays NaN, −0 stays −0', () => {
    assert.ok(Number.isNaN(roundBf16(NaN)));
    assert.ok(Object.is(roundBf16(-0), -0));
  });
  it('kernels: the same bits for every case, NaN and −0', { skip: announceSkip(nativeSkip) }, () => {
    const input = Float32Array.from([...CASES.map((c) => c[1]), NaN, -0]);
    const out = new Float32Array(input.length);
    addon!.roundBf16(input, out);
    CASES.forEach(([what, , expected], i) => assert.equal(out[i], expected, what));
    assert.ok(Number.isNaN(out[CASES.length]));
    assert.ok(Object.is(out[CASES.length + 1], -0));
  });
});

// ---------------------------------------------------------------- 2, 3. the GEMM
/** C = op(A)·op(B) in float64, of the operands as given or rounded to bf16 first. */
function naive(m: number, n: number, k: number, a: Float32Array, b: Float32Array, transA: boolean, transB: boolean, round: (x: number) => number): Float64Array {
  const c = new Float64Array(m * n);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let sum = 0;
      for (let p = 0; p < k; p++) sum += round(transA ? a[p * m + i]! : a[i * k + p]!) * round(transB ? b[j * k + p]! : b[p * n + j]!);
      c[i * n + j] = sum;
    }
  return c;
}

describe(`native bf16 GEMM (${addon?.trainGemmBf16Kernel() ?? 'not built'}, SIMD ${addon?.simdLevel() ?? '-'})`, { skip: announceSkip(nativeSkip) }, () => {
  it('uses AMX where the CPU has it (unless OLMOE_AMX=0), else vdpbf16ps with AVX-512 BF16, at the avx512 level only', () => {
    const flags = readFileSync('/proc/cpuinfo', 'utf8');
    const avx512 = addon!.simdLevel() === 'avx512' && /\bavx512_bf16\b/.test(flags);
    const amx = avx512 && /\bamx_bf16\b/.test(flags) && /\bamx_tile\b/.test(flags) && process.env.OLMOE_AMX !== '0';
    // A kernel that refuses AMX's tile state (arch_prctl) leaves vdpbf16ps: accepted, said in the output.
    const kernel = addon!.trainGemmBf16Kernel();
    if (amx && kernel === 'avx512-bf16') console.log('# AMX present but its tile state was not granted');
    else assert.equal(kernel, amx ? 'amx-bf16' : avx512 ? 'avx512-bf16' : 'fp32-fma');
  });
  // Tiles of 6×64 / 6×16 / 4×8 (AMX: 32×64 blocks of 16×16 tiles, k in steps of 32) over K blocks of 256 (even: pairs
  // never straddle a block): partial tiles, one row or column, odd k (a pair padded with zero), several K blocks with a
  // ragged last one, products on the pool.
  const shapes = [[3, 5, 7], [70, 33, 131], [1, 64, 256], [1, 1, 1], [13, 65, 1], [200, 3, 301], [6, 64, 257], [97, 200, 520], [33, 130, 40]] as const;
  for (const [m, n, k] of shapes) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        it(`${m}×${k}·${k}×${n} transA=${transA} transB=${transB}, then accumulate`, () => {
          const [a, b] = [random(m * k), random(k * n)];
          const c = new Float32Array(m * n);
          addon!.gemm(transA, transB, m, n, k, a, b, c, false, true);
          const expected = naive(m, n, k, a, b, transA, transB, roundBf16);
          c.forEach((v, i) => assert.ok(Math.abs(v - expected[i]!) < 1e-4 * Math.sqrt(k), `${i}: ${v} vs ${expected[i]}`));
          addon!.gemm(transA, transB, m, n, k, a, b, c, true, true);
          c.forEach((v, i) => assert.ok(Math.abs(v - 2 * expected[i]!) < 2e-4 * Math.sqrt(k), `accumulate ${i}`));
        });
      }
    }
  }
  it('a perturbation of the float32 product: |bf16 − exact| ≤ 2⁻⁷ · Σ|a||b| + float32 summation, and above 2⁻¹² of it', () => {
    const [m, n, k] = [40, 70, 300];
    const [a, b] = [random(m * k), random(k * n)];
    const c = new Float32Array(m * n);
    addon!.gemm(false, false, m, n, k, a, b, c, false, true);
    const exact = naive(m, n, k, a, b, false, false, (x) => x);
    const magnitude = naive(m, n, k, a.map(Math.abs), b.map(Math.abs), false, false, (x) => x);
    let largest = 0;
    c.forEach((v, i) => {
      const relative = Math.abs(v - exact[i]!) / magnitude[i]!;
      assert.ok(relative <= 2 ** -7 + 1e-6, `${i}: ${v} vs ${exact[i]}: ${relative} of Σ|a||b|`);
      largest = Math.max(largest, relative);
    });
    assert.ok(largest > 2 ** -12, `bf16 rounding changed nothing (largest ${largest})`);
  });
});

// ---------------------------------------------------------------- 4. backend ops, native vs the reference twin
const input = (shape: number[], scale = 1): Input => ({ values: random(shape.reduce((x, y) => x * y, 1), scale), shape });

function run(backend: TrainingBackend, precision: MatmulPrecision, inputs: readonly Input[], build: (tape: Tape, leaves: Tensor[]) => Tensor): Float32Array[] {
  backend.setMatmulPrecision(precision);
  const result = runTape(backend, inputs, build, createRngValues);
  backend.setMatmulPrecision('fp32');
  return result;
}

function createRngValues(n: number): Float32Array {
  const seeded = createRng(7);
  return Float32Array.from({ length: n }, () => seeded() * 2 - 1);
}

/**
 * Elements farther apart than the float32 tolerance 1e-5 · √reduction · (|expected| + rms): operands rounded to bf16
 * inside an op (the experts' hidden activations and gradients) are float32 results whose last bits differ between
 * backends, so now and then one rounds to the neighbouring bf16 value: at most `allowed` elements, each within 2⁻⁸ of
 * rms · √reduction (one term of the sum moved by one bf16 step).
 */
function assertClose(actual: Float32Array, expected: Float32Array, reduction: number, what: string, allowed = 0): number {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let squares = 0;
  for (const v of expected) squares += v * v;
  const rms = Math.sqrt(squares / Math.max(1, expected.length));
  const scale = 1e-5 * Math.sqrt(reduction);
  let outside = 0;
  for (let i = 0; i < actual.length; i++) {
    const error = Math.abs(actual[i]! - expected[i]!);
    if (error <= scale * (Math.abs(expected[i]!) + rms)) continue;
    outside++;
    if (!(error <= 2 ** -8 * rms * Math.sqrt(reduction))) assert.fail(`${what}: element ${i}: ${actual[i]} vs ${expected[i]} (error ${error})`);
  }
  assert.ok(outside <= allowed, `${what}: ${outside} elements beyond the float32 tolerance (allowed ${allowed})`);
  return outside;
}

/** The largest |a − b| relative to rms(b): how far bf16 moved an output from fp32. */
function moved(a: Float32Array, b: Float32Array): number {
  let [largest, squares] = [0, 0];
  a.forEach((v, i) => {
    largest = Math.max(largest, Math.abs(v - b[i]!));
    squares += b[i]! ** 2;
  });
  return largest / Math.sqrt(squares / b.length);
}

describe('native bf16 training ops vs the reference twin (forward and backward through the tape)', { skip: announceSkip(nativeSkip) }, () => {
  const reference = new ReferenceBackend();
  const native = nativeSkip ? reference : backendCases[1]!.create();

  for (const [tokens, inDim, outDim] of [[5, 16, 9], [37, 96, 70], [300, 64, 128], [64, 257, 33]] as const) {
    it(`matmul ${tokens}×${inDim}→${outDim}: output, dx, dw (operands exactly the same bf16 values)`, () => {
      const inputs = [input([tokens, inDim]), input([outDim, inDim])];
      const build = (t: Tape, [x, w]: Tensor[]) => t.matmul(x!, w!);
      const [mine, theirs, full] = [run(native, 'bf16', inputs, build), run(reference, 'bf16', inputs, build), run(reference, 'fp32', inputs, build)];
      mine.forEach((values, i) => assertClose(values, theirs[i]!, Math.max(tokens, inDim, outDim), `matmul ${i}`));
      assert.ok(moved(theirs[0]!, full[0]!) > 2 ** -12, 'the reference twin rounds (its output differs from fp32)');
    });
  }

  for (const opts of [{ topK: 4, normTopKProb: false }, { topK: 4, normTopKProb: false, mode: 'expert_choice' as const, capacity: 10 }]) {
    it(`grouped SwiGLU experts (${opts.mode ?? 'token_choice'}): input, routing-weight and expert-weight gradients`, () => {
      const [tokens, hidden, ffn, experts] = [40, 48, 40, 16];
      const probe = reference.zeros([tokens, experts]);
      reference.write(probe, random(tokens * experts, 3));
      const decided = reference.router(probe, opts);
      const inputs = [input([tokens, hidden]), input([decided.expertIds.length]), ...Array.from({ length: 3 * experts }, (_, i) => input(i < 2 * experts ? [ffn, hidden] : [hidden, ffn], 0.3))];
      const build = (t: Tape, [x, w, ...p]: Tensor[]) => {
        const routing: Routing = { ...decided, probs: w!, weights: w! };
        return t.experts(x!, { gate: p.slice(0, experts), up: p.slice(experts, 2 * experts), down: p.slice(2 * experts) }, routing);
      };
      const [mine, theirs, full] = [run(native, 'bf16', inputs, build), run(reference, 'bf16', inputs, build), run(reference, 'fp32', inputs, build)];
      let outside = 0;
      mine.forEach((values, i) => (outside += assertClose(values, theirs[i]!, Math.max(tokens, hidden, ffn), `experts ${i}`, Math.ceil(values.length / 100))));
      console.log(`# experts ${opts.mode ?? 'token_choice'}: ${outside} elements off by a neighbouring bf16 rounding`);
      assert.ok(moved(theirs[0]!, full[0]!) > 2 ** -12, 'the reference twin rounds (its output differs from fp32)');
    });
  }
});

// ---------------------------------------------------------------- 5. a short training run
const TEXT = 'The experts of a sparse model each learn a part of the language. Routing picks the top-k experts per token.\n'.repeat(60);

function trainConfig(dir: string, precision: 'fp32' | 'bf16'): TrainConfig {
  return parseTrainConfig({
    out: join(dir, precision), seed: 5, tokenizer: join(dir, 'tokenizer.json'), precision,
    model: { hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_experts: 8, num_experts_per_tok: 2, intermediate_size: 32 },
    data: { train: [join(dir, 'train.shard')], valid: [join(dir, 'train.shard')], sequence_length: 64, batch_size: 4 },
    optimizer: { lr: 3e-3, warmup_steps: 5 },
    steps: 50, checkpoint_every: 0, eval_every: 50, eval_batches: 2,
  });
}

async function losses(config: TrainConfig, backend: TrainingBackend): Promise<{ train: number[]; valid: number }> {
  const train_: number[] = [];
  let valid = NaN;
  await train({ config, backend, onStep: (r) => train_.push(r.loss), onEval: (records) => (valid = records[0]!.ce) });
  return { train: train_, valid };
}

describe('50 training steps in bf16 against the same run in fp32', () => {
  const backendCase = nativeSkip ? backendCases[0]! : backendCases[1]!;
  it(`on the ${backendCase.name} backend: losses within the band, checkpoint in float32 master weights`, async () => {
    const dir = tempDir('olmoe-bf16-');
    const { json, eosId, size } = byteLevelTokenizerJson();
    const tokenizerText = JSON.stringify(json);
    writeFileSync(join(dir, 'tokenizer.json'), tokenizerText);
    const builder = new TokenShardBuilder({ vocabSize: size, eosId, domains: ['prose'], tokenizer: tokenizerFingerprint(tokenizerText) });
    builder.add([...Buffer.from(TEXT)], 0);
    builder.write(join(dir, 'train.shard'));
    const backend = backendCase.create();
    const fp32 = await losses(trainConfig(dir, 'fp32'), backend);
    const bf16 = await losses(trainConfig(dir, 'bf16'), backend);
    console.log(`# fp32 loss ${fp32.train[0]!.toFixed(4)} → ${fp32.train.at(-1)!.toFixed(4)}, valid ${fp32.valid.toFixed(4)}; bf16 ${bf16.train[0]!.toFixed(4)} → ${bf16.train.at(-1)!.toFixed(4)}, valid ${bf16.valid.toFixed(4)}`);
    const gaps = bf16.train.map((loss, i) => Math.abs(loss - fp32.train[i]!) / fp32.train[i]!);
    const largest = Math.max(...gaps);
    console.log(`# largest relative gap ${largest.toExponential(2)} at step ${gaps.indexOf(largest) + 1}`);
    // Step 1 runs the same weights: only the rounding of the operands (≤ 2⁻⁸ each) moves the loss, far less than 2⁻⁸
    // of it once the rounding errors of many terms average out.
    assert.ok(gaps[0]! < 2 ** -8, `step 1: bf16 ${bf16.train[0]} vs fp32 ${fp32.train[0]}`);
    // Later steps drift apart as any two runs with different rounding do, but train alike: every step's loss and
    // the final validation CE within 5 % (measured here: about 1 %).
    assert.ok(largest < 0.05, `losses ${largest} apart`);
    assert.ok(Math.abs(bf16.valid - fp32.valid) < 0.05 * fp32.valid, `valid CE: bf16 ${bf16.valid} vs fp32 ${fp32.valid}`);
    assert.ok(bf16.train.at(-1)! < 0.3 * bf16.train[0]!, `bf16 trains: ${bf16.train[0]} → ${bf16.train.at(-1)}`);
    assert.ok(largest > 1e-6, 'bf16 changed nothing: the precision was not applied');
    // The checkpoint holds the float32 master weights: every tensor F32, values off the bf16 grid.
    const file = readFileSync(join(latestCheckpoint(join(dir, 'bf16'))!, 'model.safetensors'));
    const headerLength = Number(file.readBigUInt64LE(0));
    const header = JSON.parse(file.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>;
    const tensors = Object.entries(header).filter(([name]) => name !== '__metadata__');
    assert.ok(tensors.length > 0 && tensors.every(([, t]) => t.dtype === 'F32'), 'every tensor F32');
    const [, gate] = tensors.find(([name]) => name.endsWith('mlp.experts.0.gate_proj.weight'))!;
    const data = file.subarray(8 + headerLength + gate.data_offsets[0], 8 + headerLength + gate.data_offsets[1]);
    const bits = new Uint32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
    const offGrid = bits.filter((b) => (b & 0xffff) !== 0).length;
    assert.ok(offGrid > 0.9 * bits.length, `${offGrid} of ${bits.length} expert weights off the bf16 grid`);
  });
});

// ---------------------------------------------------------------- the config key and the flag
describe('precision in the training config and on the command line', () => {
  const base = { out: 'run', tokenizer: 't.json', model: { hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, num_experts: 2, num_experts_per_tok: 1, intermediate_size: 8 },
    data: { train: ['a.shard'], sequence_length: 8, batch_size: 1 }, steps: 200 };
  it('defaults to fp32, takes bf16, refuses anything else by key', () => {
    assert.equal(parseTrainConfig(base).precision, 'fp32');
    assert.equal(parseTrainConfig({ ...base, precision: 'bf16' }).precision, 'bf16');
    assert.throws(() => parseTrainConfig({ ...base, precision: 'fp16' }, 'c.json'), /c\.json.*precision/);
  });
  it('olmoe train --precision fp16 is refused with the flag named', () => {
    const child = spawnSync(process.execPath, [cliPath, 'train', 'missing.json', '--precision', 'fp16'], { encoding: 'utf8' });
    assert.notEqual(child.status, 0);
    assert.match(child.stderr, /--precision: "fp16" is not fp32 or bf16/);
  });
});

// ---------------------------------------------------------------- 6. lower instruction sets
describe('the other bf16 paths: vdpbf16ps without AMX, rounded float32 operands at avx2 and scalar', () => {
  const cpuFlags = readFileSync('/proc/cpuinfo', 'utf8');
  const forced = process.env.OLMOE_SIMD || process.env.OLMOE_AMX ? 'already a child run' : false;
  const runs: { env: Record<string, string>; kernel: string; simd: string; skip: string | false }[] = [
    { env: { OLMOE_AMX: '0' }, kernel: 'avx512-bf16', simd: 'avx512', skip: /\bamx_bf16\b/.test(cpuFlags) ? false : 'no AMX here: the parent run is the vdpbf16ps run' },
    { env: { OLMOE_SIMD: 'avx2' }, kernel: 'fp32-fma', simd: 'avx2', skip: false },
    { env: { OLMOE_SIMD: 'scalar' }, kernel: 'fp32-fma', simd: 'scalar', skip: false },
  ];
  for (const run of runs) {
    const what = Object.entries(run.env).map(([k, v]) => `${k}=${v}`).join(' ');
    it(`the whole file passes with ${what} (${run.kernel})`, { skip: forced || announceSkip(nativeSkip || run.skip) }, () => {
      const env: NodeJS.ProcessEnv = { ...process.env, ...run.env };
      delete env.NODE_TEST_CONTEXT;
      const child = spawnSync(process.execPath, ['--test', fileURLToPath(import.meta.url)], { env, encoding: 'utf8' });
      assert.equal(child.status, 0, child.stdout.split('\n').filter((l) => /not ok|error/.test(l)).slice(0, 10).join('\n'));
      assert.match(child.stdout, new RegExp(`native bf16 GEMM \\(${run.kernel}, SIMD ${run.simd}\\)`));
      assert.match(child.stdout, /# pass [1-9]/);
    });
  }
});
