// Atomic writes after a kill: staging a dead process left is removed by the next writer of the same path (and only
// that), and a resumed run whose steps are all done writes the export the kill prevented.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { AtomicFile, processAlive, removeStaleStaging, stagingPath } from '../src/io/atomic-file.js';
import { byteLevelTokenizerJson } from '../src/tokenizer/byte-level.js';
import { TokenShardBuilder, tokenizerFingerprint } from '../src/train/data/shard.js';
import { parseTrainConfig } from '../src/train/config.js';
import { train } from '../src/train/trainer.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { writePrunedCheckpoint } from '../src/analysis/prune.js';
import { writeRandomCheckpoint } from '../src/model/random-checkpoint.js';
import { tempDir, tinyModelDir } from './helpers.js';

const dirs: string[] = [];
after(() => dirs.forEach((dir) => rmSync(dir, { recursive: true, force: true })));
const scratch = () => {
  const dir = tempDir('olmoe-writes-');
  dirs.push(dir);
  return dir;
};

/** The pid of a process that has exited (a short-lived child), as a kill leaves behind. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  const pid = Number(child.stdout);
  assert.equal(processAlive(pid), false, `pid ${pid} is running again`);
  return pid;
}

describe('writes in whole pieces', () => {
  it('pieces of any size reach the staged file in 16 MiB writes at 16 MiB offsets, and the file has every byte in order', () => {
    const target = join(scratch(), 'model.gguf');
    const MiB = 1 << 20;
    const sizes = [1, 3 * MiB, 20 * MiB + 5, 7, 16 * MiB - 8, 33 * MiB, 2 * MiB + 3];
    const file = new AtomicFile(target);
    const expected = Buffer.alloc(sizes.reduce((a, b) => a + b));
    let at = 0;
    let state = 12345;
    for (const size of sizes) {
      const piece = Buffer.alloc(size);
      for (let i = 0; i < size; i++) piece[i] = (state = (state * 1103515245 + 12345) >>> 0) >>> 24;
      file.write(piece);
      piece.copy(expected, at);
      at += size;
      piece.fill(0); // the writer keeps no reference to a caller's buffer
      const staged = statSync(stagingPath(target)).size;
      assert.equal(staged % (16 * MiB), 0, `staged ${staged} bytes after ${at}`);
      assert.ok(at - staged < 16 * MiB, `staged ${staged} of ${at} bytes`);
    }
    assert.equal(existsSync(target), false);
    file.finish();
    assert.equal(file.written, expected.length);
    assert.ok(readFileSync(target).equals(expected));
  });
});

describe('stale staging', () => {
  it('a writer of a path removes the staging a dead process left for that path, and nothing else', () => {
    const dir = scratch();
    const target = join(dir, 'model.gguf');
    const dead = deadPid();
    const live = process.ppid; // the test runner: alive, and not this process
    writeFileSync(`${target}.tmp-${dead}`, 'half of a file');
    mkdirSync(`${target}.tmp-${dead + 1000000}`); // a staged folder (a checkpoint) of a pid that cannot run
    writeFileSync(`${target}.tmp-${live}`, 'another writer still at work');
    writeFileSync(join(dir, `other.gguf.tmp-${dead}`), 'staging of another file');
    writeFileSync(`${target}.tmp-notapid`, 'not staging');
    const file = new AtomicFile(target);
    file.write(Buffer.from('complete'));
    file.finish();
    assert.equal(readFileSync(target, 'utf8'), 'complete');
    assert.deepEqual(readdirSync(dir).sort(), ['model.gguf', `model.gguf.tmp-${live}`, 'model.gguf.tmp-notapid', `other.gguf.tmp-${dead}`].sort());
  });

  it('a checkpoint save removes a dead writer\'s staged folder of the same checkpoint', () => {
    const dir = scratch();
    const stale = join(dir, `step-000005.tmp-${deadPid()}`);
    mkdirSync(stale);
    writeFileSync(join(stale, 'model.safetensors.tmp-1'), 'x');
    assert.deepEqual(removeStaleStaging(join(dir, 'step-000005') + '/'), [stale]);
    assert.equal(existsSync(stale), false);
  });

  it('create-random and prune remove a dead run\'s staged folder of their output, not a live one\'s', () => {
    const dir = scratch();
    const stale = () => {
      const path = join(dir, `out.tmp-${deadPid()}`);
      mkdirSync(path);
      writeFileSync(join(path, 'model.safetensors'), 'half');
      return path;
    };
    const live = join(dir, `out.tmp-${process.ppid}`);
    mkdirSync(live);
    const first = stale();
    writeRandomCheckpoint(join(dir, 'out'), { layers: 1, experts: 4, topK: 2, hidden: 8, heads: 2, intermediate: 8, vocab: 300, context: 16, dtype: 'f32', seed: 1 });
    assert.equal(existsSync(first), false);
    const second = stale();
    writePrunedCheckpoint(tinyModelDir, join(dir, 'out'), [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]]);
    assert.equal(existsSync(second), false);
    assert.deepEqual(readdirSync(dir).sort(), ['out', `out.tmp-${process.ppid}`].sort());
  });
});

describe('resume after a kill at the end of a run', () => {
  function fixture(): string {
    const dir = scratch();
    const { json, eosId, size } = byteLevelTokenizerJson();
    const tokenizerText = JSON.stringify(json);
    writeFileSync(join(dir, 'tokenizer.json'), tokenizerText);
    const builder = new TokenShardBuilder({ vocabSize: size, eosId, domains: ['prose'], tokenizer: tokenizerFingerprint(tokenizerText) });
    builder.add([...Buffer.from('Experts each learn a part of the language. '.repeat(20))], 0);
    builder.write(join(dir, 'train.shard'));
    return dir;
  }
  const config = (dir: string, out: string, extra: Record<string, unknown> = {}) =>
    parseTrainConfig({
      out: join(dir, out), seed: 1, tokenizer: join(dir, 'tokenizer.json'), steps: 4, checkpoint_every: 2, eval_every: 0,
      model: { hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, num_experts: 4, num_experts_per_tok: 2, intermediate_size: 8 },
      data: { train: [join(dir, 'train.shard')], valid: [], sequence_length: 16, batch_size: 2 },
      optimizer: { warmup_steps: 1 },
      ...extra,
    });

  it('--resume of a run whose last checkpoint is written but not its export writes the export (same bytes as a straight run)', async () => {
    const dir = fixture();
    await train({ config: config(dir, 'straight', { export_dtype: 'bf16' }), backend: new ReferenceBackend() });
    // The state a kill after the final checkpoint leaves: latest.json names step 4, no export/ (only staging).
    await train({ config: config(dir, 'killed'), backend: new ReferenceBackend() });
    const staging = join(dir, 'killed', `export.tmp-${deadPid()}`);
    mkdirSync(staging);
    writeFileSync(join(staging, 'model.safetensors.tmp-1'), 'partial');
    const said: string[] = [];
    await train({ config: config(dir, 'killed', { export_dtype: 'bf16' }), backend: new ReferenceBackend(), resume: true, say: (line) => said.push(line) });
    for (const file of ['config.json', 'model.safetensors', 'tokenizer.json']) {
      assert.deepEqual(readFileSync(join(dir, 'killed', 'export', file)), readFileSync(join(dir, 'straight', 'export', file)), file);
    }
    assert.deepEqual(readFileSync(join(dir, 'killed', 'latest.json')), readFileSync(join(dir, 'straight', 'latest.json')));
    assert.equal(existsSync(staging), false, 'stale export staging removed');
    assert.ok(said.some((line) => /export\/ written from checkpoints\/step-000004/.test(line)), said.join('\n'));
  });

  it('a kill between the checkpoint and dropping the older optimizer state: the resume drops it', async () => {
    const dir = fixture();
    await train({ config: config(dir, 'run'), backend: new ReferenceBackend() });
    const older = join(dir, 'run', 'checkpoints', 'step-000002', 'optimizer.safetensors');
    assert.equal(existsSync(older), false);
    writeFileSync(older, readFileSync(join(dir, 'run', 'checkpoints', 'step-000004', 'optimizer.safetensors')));
    await train({ config: config(dir, 'run'), backend: new ReferenceBackend(), resume: true });
    assert.equal(existsSync(older), false);
    assert.ok(existsSync(join(dir, 'run', 'checkpoints', 'step-000004', 'optimizer.safetensors')));
  });
});
