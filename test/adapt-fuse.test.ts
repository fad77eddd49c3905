// A LoRA adapter trained here, used for inference: fused into the base (`olmoe fuse`) it gives the logits of base +
// adapter computed unmerged by the training executor (within 1e-5); base + `--adapter` (merged at load) gives the same
// bits as the fused checkpoint, and the same `olmoe generate` and `olmoe eval` output; an adapter for another base is a
// named error; a GGUF base cannot be fused but takes --adapter (dequantized and merged at load).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { roundBf16 } from '../src/backends/reference/bf16.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { UnsupportedError, WeightError } from '../src/core/errors.js';
import { createRng } from '../src/core/rng.js';
import { readTensorFloat32 } from '../src/io/safetensors.js';
import { readConfigFile } from '../src/model/config.js';
import { writeGguf } from '../src/model/convert.js';
import { loadModel, openCheckpoint } from '../src/model/load.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { fuseAdapter } from '../src/train/adapt/fuse.js';
import { attachLora } from '../src/train/adapt/lora-train.js';
import { adapterPatch, readPeftAdapter } from '../src/train/adapt/peft.js';
import { loadParams } from '../src/train/checkpoint.js';
import { TrainModel } from '../src/train/model.js';
import { randomCheckpoint, readAll, rewrite } from './checkpoints.js';
import { cliPath, repoRoot, tempDir, tinyModelDir } from './helpers.js';

const backend = new ReferenceBackend();
const IDS = Int32Array.of(3, 17, 250, 9, 41, 100, 7, 12);
const TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate', 'gate_proj', 'up_proj', 'down_proj'];

function olmoe(args: string[]) {
  const result = spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, HF_HUB_OFFLINE: '1' } });
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

/** The tiny fixture with float32 weights (so a fused checkpoint holds exactly the merged float32 weights). */
function float32Base(): string {
  const dir = tempDir('olmoe-lora-base-');
  cpSync(tinyModelDir, dir, { recursive: true });
  rewrite(dir, readAll(dir).map((t) => {
    const entry = openCheckpoint(dir).tensors.get(t.name)!;
    const values = readTensorFloat32(entry);
    return { ...t, dtype: 'f32', bytes: new Uint8Array(values.buffer) };
  }));
  return dir;
}

let base: string;
let adapterDir: string;
let trained: TrainModel;

before(() => {
  base = float32Base();
  trained = new TrainModel({ config: readConfigFile(join(base, 'config.json')), routing: 'token_choice', capacityFactor: 1 }, backend);
  loadParams(trained, base);
  const lora = attachLora(trained, { r: 4, alpha: 8, dropout: 0, targetModules: TARGETS, useRslora: false }, createRng(3));
  const rng = createRng(4);
  for (const p of lora.params) if (p.name.includes('lora_B')) backend.write(p.value, Float32Array.from({ length: p.shape[0]! * p.shape[1]! }, () => 0.2 * (rng() - 0.5)));
  adapterDir = tempDir('olmoe-lora-adapter-');
  lora.save(adapterDir);
});

/** Logits [T, V] of IDS by the training executor: base + adapter, unmerged (the LoRA parts of the one forward). */
function unfusedLogits(): Float32Array {
  const result = trained.forward(backend, { tokens: Int32Array.from([...IDS, 0]), sequences: 1 }, { loadBalancing: 0, routerZ: 0 });
  return backend.toFloat32(result.logits);
}

describe('fuse and --adapter (library)', () => {
  it('a fused adapter gives the logits of base + adapter (1e-5), and --adapter at load the fused bits', async () => {
    const fused = tempDir('olmoe-fused-');
    const result = fuseAdapter(base, adapterDir, fused);
    assert.equal(result.modules.length, 3 * (4 + 1 + 3 * 16), 'every attention projection, router and expert projection of 3 layers');
    const fusedLogits = backend.toFloat32((await loadModel(fused, { backend, kvCache: 'f32' })).forward(IDS));
    const unfused = unfusedLogits();
    const baseLogits = backend.toFloat32((await loadModel(base, { backend, kvCache: 'f32' })).forward(IDS));
    assert.ok(maxAbsDiff(unfused, baseLogits) > 1e-2, 'the adapter changes the logits (else nothing is compared)');
    const error = maxAbsDiff(fusedLogits, unfused);
    assert.ok(error < 1e-5, `fused vs unfused: max |Δlogit| ${error}`);
    const config = readConfigFile(join(base, 'config.json'));
    const atLoad = await loadPretrained(base, { backend, kvCache: 'f32', patch: (c) => adapterPatch(readPeftAdapter(adapterDir, c)) });
    assert.deepEqual(backend.toFloat32(atLoad.model.forward(IDS)), fusedLogits);
    assert.equal(config.hiddenSize, 96);
  });

  it('an adapter for another base model (other shapes) is a named error, and fuse writes nothing', () => {
    const other = join(repoRoot, 'test', 'fixtures', 'tiny-olmoe-gqa', 'model'); // fewer kv heads: k_proj/v_proj differ
    const out = join(tempDir(), 'never');
    assert.throws(() => fuseAdapter(other, adapterDir, out), (e: Error) => e instanceof WeightError && /another base model/.test(e.message));
    assert.equal(existsSync(out), false);
  });

  it('a GGUF base: fuse refuses (use --adapter); --adapter dequantizes and merges at load', async () => {
    const gguf = join(tempDir(), 'base-q8.gguf');
    writeGguf(openCheckpoint(base), gguf, { target: 'q8_0' });
    assert.throws(() => fuseAdapter(gguf, adapterDir, join(tempDir(), 'x')), (e: Error) => e instanceof UnsupportedError && /GGUF.*--adapter/.test(e.message));
    const quantized = await loadPretrained(gguf, { backend });
    let last = { loadedBytes: 0, totalBytes: -1 };
    const adapted = await loadPretrained(gguf, { backend, patch: (c) => adapterPatch(readPeftAdapter(adapterDir, c)), onLoadProgress: (p) => { last = { ...p }; } });
    assert.equal(last.loadedBytes, last.totalBytes, 'progress ends at 100 % of the file, though patched tensors are f32 in memory');
    const unfused = unfusedLogits();
    const baseError = maxAbsDiff(backend.toFloat32(quantized.model.forward(IDS)), unfused);
    const adaptedError = maxAbsDiff(backend.toFloat32(adapted.model.forward(IDS)), unfused);
    assert.ok(adaptedError < baseError / 4, `q8_0 base + adapter is near base + adapter (${adaptedError}) and much nearer than the base alone (${baseError})`);
  });
});

describe('fuse and --adapter (CLI)', () => {
  let fused: string;
  before(() => {
    fused = tempDir('olmoe-fused-cli-');
    const run = olmoe(['fuse', base, adapterDir, fused, '-q']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^fused 159 adapted modules into .* \(\d+ tensors\):\n {2}model\.layers\.0\.self_attn\.q_proj\n/);
  });

  it('generate: the fused model and base --adapter give identical output', () => {
    const args = ['--prompt-ids', Array.from(IDS).join(','), '--greedy', '--ignore-eos', '-n', '12', '--json', '-q'];
    const fusedRun = olmoe(['generate', fused, ...args]);
    const adapterRun = olmoe(['generate', base, '--adapter', adapterDir, ...args]);
    const baseRun = olmoe(['generate', base, ...args]);
    assert.equal(fusedRun.code, 0, fusedRun.stderr);
    assert.equal(adapterRun.code, 0, adapterRun.stderr);
    assert.deepEqual(JSON.parse(adapterRun.stdout), JSON.parse(fusedRun.stdout));
    assert.notDeepEqual(JSON.parse(baseRun.stdout).ids, JSON.parse(fusedRun.stdout).ids, 'the adapter changes the continuation');
  });

  it('eval: the fused model and base --adapter score alike; the cache keys base + adapter apart from the base', () => {
    const dir = tempDir('olmoe-lora-eval-');
    const docs = [
      { id: 'fr', question: 'What is the capital of France?', choices: ['Paris', 'Rome', 'Lyon'], answer: 0 },
      { id: 'it', question: 'What is the capital of Italy?', choices: ['Paris', 'Rome', 'Milan'], answer: 1 },
    ];
    writeFileSync(join(dir, 'caps.jsonl'), docs.map((d) => JSON.stringify(d)).join('\n') + '\n');
    writeFileSync(join(dir, 'caps.json'), JSON.stringify({ name: 'caps', documents: 'caps.jsonl', normalizations: ['none'] }));
    const evaluate = (model: string, name: string, ...extra: string[]) => {
      const output = join(dir, `${name}.json`);
      const run = olmoe(['eval', model, '--tasks', join(dir, 'caps.json'), '--output', output, '--log-samples', join(dir, name), '-q', ...extra]);
      assert.equal(run.code, 0, run.stderr);
      const report = JSON.parse(readFileSync(output, 'utf8')) as { fingerprint: string; results: unknown };
      return { report, samples: readFileSync(join(dir, name, 'caps-cf.jsonl'), 'utf8') };
    };
    const fusedEval = evaluate(fused, 'fused');
    const adapterEval = evaluate(base, 'adapter', '--adapter', adapterDir, '--cache', join(dir, 'cache'));
    const baseEval = evaluate(base, 'base', '--cache', join(dir, 'cache'));
    assert.deepEqual(adapterEval.report.results, fusedEval.report.results);
    assert.equal(adapterEval.samples, fusedEval.samples, 'every instance scored alike');
    assert.notEqual(adapterEval.report.fingerprint, baseEval.report.fingerprint);
    assert.notEqual(baseEval.samples, adapterEval.samples, 'the base is not served from the adapter\'s cache');
  });

  it('--adapter for another base model: a named error, exit code 1', () => {
    const other = join(repoRoot, 'test', 'fixtures', 'tiny-olmoe-gqa', 'model');
    const run = olmoe(['generate', other, 'hello', '--adapter', adapterDir, '-n', '2', '-q']);
    assert.notEqual(run.code, 0);
    assert.match(run.stderr, /^olmoe: error: .*adapter_model\.safetensors: .*an adapter for another base model\?\n$/);
  });
});

describe('olmoe cast', () => {
  it('rewrites every tensor as bf16 rounded to nearest even, copies config and tokenizer, and refuses a bad dtype', () => {
    const { dir: f32 } = randomCheckpoint({ dtype: 'f32' }); // values off the bf16 grid, so rounding shows
    const out = join(tempDir('olmoe-cast-'), 'bf16');
    const result = spawnSync(process.execPath, [cliPath, 'cast', f32, out, '--dtype', 'bf16', '-q'], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stderr);
    const source = openCheckpoint(f32).tensors;
    assert.ok([...source.values()].every((entry) => entry.dtype === 'f32'));
    const cast = openCheckpoint(out).tensors;
    assert.equal(cast.size, source.size);
    for (const entry of cast.values()) {
      assert.equal(entry.dtype, 'bf16', entry.name);
      const expected = Float32Array.from(readTensorFloat32(source.get(entry.name)!), roundBf16);
      assert.deepEqual(readTensorFloat32(entry), expected, entry.name);
    }
    let moved = 0;
    for (const entry of cast.values()) moved += readTensorFloat32(entry).filter((x, i) => x !== readTensorFloat32(source.get(entry.name)!)[i]).length;
    assert.ok(moved > 0, 'the cast rounded values');
    for (const file of ['config.json', 'tokenizer.json']) assert.deepEqual(readFileSync(join(out, file)), readFileSync(join(f32, file)));
    const bad = spawnSync(process.execPath, [cliPath, 'cast', tinyModelDir, join(out, 'x'), '--dtype', 'int4'], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /--dtype int4: expected one of f32, bf16, f16/);
    assert.ok(!existsSync(join(out, 'x')));
  });
});
