/**
 * What a file may claim and what a model may compute: counts from config.json or GGUF metadata are bounded and
 * checked against the tensors present before anything is sized by them; NaN/inf in weights or activations is an
 * error naming where it first appears, never a sampled token; FIFOs and devices in a model folder are refused at
 * once; thread counts beyond the machine are clamped. Each case ends quickly with a message naming the culprit.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError, FormatError, NumericError, WeightError } from '../src/core/errors.js';
import { readSafetensorsHeader } from '../src/io/safetensors.js';
import { writeGguf } from '../src/model/convert.js';
import { loadModel, openCheckpoint } from '../src/model/load.js';
import { announceSkip, backendCases } from './backends.js';
import { editConfig } from './checkpoints.js';
import { cliPath, tempDir, tinyModelDir } from './helpers.js';

const IDS = Int32Array.from([144, 405, 55, 128, 190]);
const dirs: string[] = [];
after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
function copyOfTiny(): string {
  const dir = tempDir('olmoe-robust-');
  dirs.push(dir);
  cpSync(tinyModelDir, dir, { recursive: true });
  return dir;
}

/** Overwrite every element of one bf16 tensor of the tiny model (its weights are bf16) with the given bits. */
function fillTensor(dir: string, name: string, bits: number): void {
  const file = join(dir, 'model.safetensors');
  const entry = readSafetensorsHeader(file).tensors.get(name)!;
  assert.equal(entry.dtype, 'bf16');
  const bytes = readFileSync(file);
  for (let at = entry.offset; at < entry.offset + entry.byteLength; at += 2) bytes.writeUInt16LE(bits, at);
  writeFileSync(file, bytes);
}
const BF16_NAN = 0x7fc0;
const BF16_INF = 0x7f80;

const runCli = (args: string[], env: Record<string, string> = {}) =>
  spawnSync(process.execPath, [cliPath, ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });

describe('counts from files are bounded before anything is allocated', () => {
  it('config.json with 2³¹ layers or experts is refused by name', async () => {
    for (const key of ['num_hidden_layers', 'num_experts', 'max_position_embeddings', 'vocab_size']) {
      const dir = copyOfTiny();
      editConfig(dir, (json) => (json[key] = 2 ** 31));
      const started = Date.now();
      await assert.rejects(loadModel(dir, { backend: backendCases[0]!.create() }), (e: Error) => e instanceof ConfigError && new RegExp(`${key}: 2147483648 is larger than olmoe accepts`).test(e.message));
      assert.ok(Date.now() - started < 2000);
    }
  });

  it('a plausible count that the tensors cannot hold is refused before the weight table is built', () => {
    const dir = copyOfTiny();
    editConfig(dir, (json) => {
      json.num_hidden_layers = 1000;
      json.num_experts = 4000;
    });
    assert.throws(() => openCheckpoint(dir), (e: Error) => e instanceof WeightError && /1000 layers × 4000 experts\) needs 12009003 tensors in an HF checkpoint, the checkpoint has \d+/.test(e.message));
  });

  it('a GGUF whose block_count says 2³¹ is refused by name', () => {
    const dir = copyOfTiny();
    const path = join(dir, 'tiny.gguf');
    writeGguf(openCheckpoint(dir), path, { target: 'f32' });
    const bytes = readFileSync(path);
    const key = Buffer.from('olmoe.block_count');
    const at = bytes.indexOf(key) + key.length;
    assert.equal(bytes.readUInt32LE(at), 4, 'u32 value type');
    bytes.writeUInt32LE(2 ** 31, at + 4);
    writeFileSync(path, bytes);
    assert.throws(() => openCheckpoint(path), (e: Error) => e instanceof ConfigError && /num_hidden_layers: 2147483648 is larger than olmoe accepts/.test(e.message));
  });

  it('rope_theta of 1e-300 (all-NaN logits before) is refused', () => {
    const dir = copyOfTiny();
    editConfig(dir, (json) => (json.rope_theta = 1e-300));
    assert.throws(() => openCheckpoint(dir), (e: Error) => e instanceof ConfigError && /rope_theta: 1e-300 is below 1/.test(e.message));
  });
});

describe('non-finite numbers are errors that say where they start', () => {
  for (const backend of backendCases) {
    it(`NaN in layer 1's attention output projection is named (${backend.name})`, { skip: announceSkip(backend.skip) }, async () => {
      const dir = copyOfTiny();
      fillTensor(dir, 'model.layers.1.self_attn.o_proj.weight', BF16_NAN);
      const model = await loadModel(dir, { backend: backend.create() });
      assert.throws(() => model.forward(IDS), (e: Error) => e instanceof NumericError && /non-finite value .*first at layer 1 \(attention\)/.test(e.message));
      const cache = model.createCache(16);
      assert.throws(() => model.forward(IDS, { cache, logits: 'last' }), NumericError);
    });
  }

  it('infinity in the embedding is named as the embedding', async () => {
    const dir = copyOfTiny();
    fillTensor(dir, 'model.embed_tokens.weight', BF16_INF);
    const model = await loadModel(dir, { backend: backendCases[0]!.create() });
    assert.throws(() => model.forward(IDS), /first at the embedding/);
  });

  it('--check-tensors names the tensor and the element before anything runs', async () => {
    const dir = copyOfTiny();
    fillTensor(dir, 'model.layers.2.mlp.experts.3.down_proj.weight', BF16_NAN);
    await assert.rejects(loadModel(dir, { backend: backendCases[0]!.create(), checkTensors: true }), (e: Error) => e instanceof WeightError && /tensor model\.layers\.2\.mlp\.experts\.3\.down_proj\.weight \[96, 48\] bf16 holds NaN at element 0/.test(e.message));
  });

  it('olmoe generate exits non-zero with the message instead of emitting NUL characters', () => {
    const dir = copyOfTiny();
    fillTensor(dir, 'model.layers.0.mlp.experts.0.up_proj.weight', BF16_INF);
    fillTensor(dir, 'model.layers.0.self_attn.q_proj.weight', BF16_NAN);
    const result = runCli(['generate', dir, 'Hello', '-n', '4', '--greedy', '-q']);
    assert.notEqual(result.status, 0);
    assert.equal(result.stdout.includes('\0'), false);
    assert.match(result.stderr, /non-finite value .*first at layer 0 \(attention\)/);
    assert.doesNotMatch(result.stderr, /internal error|at .*\.js:\d+/);
  });
});

describe('what a model folder or the environment hands over', () => {
  it('a FIFO or a link to /dev/zero in a model folder is refused at once', () => {
    const fifo = copyOfTiny();
    rmSync(join(fifo, 'config.json'));
    assert.equal(spawnSync('mkfifo', [join(fifo, 'config.json')]).status, 0);
    assert.throws(() => openCheckpoint(fifo), (e: Error) => e instanceof FormatError && /config\.json: is a FIFO, not a regular file/.test(e.message));
    const zero = copyOfTiny();
    rmSync(join(zero, 'model.safetensors'));
    symlinkSync('/dev/zero', join(zero, 'model.safetensors'));
    assert.throws(() => openCheckpoint(zero), (e: Error) => e instanceof FormatError && /model\.safetensors: is a device, not a regular file/.test(e.message));
    const gguf = join(zero, 'zero.gguf');
    symlinkSync('/dev/zero', gguf);
    assert.throws(() => openCheckpoint(gguf), /zero\.gguf/);
  });

  it('--threads and OLMOE_THREADS beyond the machine are clamped with a message', { skip: announceSkip(backendCases[1]!.skip) }, () => {
    const cpus = availableParallelism();
    for (const [args, env, what] of [[['--threads', '100000'], {}, 'threads 100000'], [[], { OLMOE_THREADS: '100000' }, 'OLMOE_THREADS=100000']] as const) {
      const result = runCli(['generate', tinyModelDir, 'Hi', '-n', '2', '--greedy', '-q', '--backend', 'native', ...args], env);
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stderr, new RegExp(`${what} is more than this machine's ${cpus} CPUs; using ${cpus}`));
    }
  });
});
