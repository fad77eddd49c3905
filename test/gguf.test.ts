/**
 * GGUF: files written by `olmoe convert/quantize` load back with the same config, tokenizer and (for f32) the same
 * logits; files written by an independent writer (../shared/tools/make_olmoe.py, numpy) load and match an
 * independent float64 forward on the same dequantized weights; bad files fail with errors that name the problem.
 * (A quantized matmul rounds its activations to 8-bit blocks, as llama.cpp does: the numpy forward does not, so the
 * quantized files are compared with their weights dequantized at load.)
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { weightFromBytes, type Tensor, type WeightSource } from '../src/core/backend.js';
import { isQuantized } from '../src/core/dtype.js';
import { FormatError, UnsupportedError, WeightError } from '../src/core/errors.js';
import { readGguf } from '../src/io/gguf.js';
import { writeGguf } from '../src/model/convert.js';
import { loadModel, openCheckpoint } from '../src/model/load.js';
import { loadPretrained } from '../src/model/pretrained.js';
import { maxAbsDiff } from './checkpoints.js';
import { sharedDir, tempDir, tinyModelDir } from './helpers.js';

const IDS = Int32Array.from([144, 405, 55, 128, 190, 185, 545, 479]);
const backend = new ReferenceBackend();
// The exact (f32) KV cache throughout: these logits are compared with numpy's and across formats at 1e-4.
const logits = async (path: string) => {
  const model = await loadModel(path, { backend, kvCache: 'f32' });
  return model.backend.toFloat32(model.forward(IDS));
};

/** The reference backend with quantized weights widened to f32 at load: float math on the dequantized weights. */
class DequantizingBackend extends ReferenceBackend {
  override async weight(source: WeightSource): Promise<Tensor> {
    const stored = await super.weight(source);
    if (!isQuantized(source.dtype)) return stored;
    const values = this.toFloat32(stored);
    return super.weight(weightFromBytes(source.name, 'f32', source.shape, new Uint8Array(values.buffer, values.byteOffset, values.byteLength)));
  }
}

describe('GGUF written by olmoe', () => {
  const dir = tempDir('olmoe-gguf-');
  const path = (type: string) => join(dir, `tiny-${type}.gguf`);
  before(() => {
    for (const target of ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k_m'] as const) writeGguf(openCheckpoint(tinyModelDir), path(target), { target });
  });

  it('f32 and bf16 GGUFs give the HF checkpoint\'s logits exactly (the weights are bf16 values)', async () => {
    const hf = await logits(tinyModelDir);
    assert.equal(maxAbsDiff(hf, await logits(path('f32'))), 0);
    assert.equal(maxAbsDiff(hf, await logits(path('bf16'))), 0);
    assert.ok(maxAbsDiff(hf, await logits(path('f16'))) < 1e-4, 'f16 holds these bf16 values exactly or nearly');
  });

  it('quantized GGUFs stay close to the original and choose the documented tensor types', async () => {
    // Relative mean |Δlogit|: this random model (σ 0.25, sharp routing) amplifies weight error; q4_0 flips routes.
    const hf = await logits(tinyModelDir);
    const relative = (other: Float32Array) => other.reduce((s, v, i) => s + Math.abs(v - hf[i]!), 0) / hf.reduce((s, v) => s + Math.abs(v), 0);
    for (const [target, limit] of [['q8_0', 0.05], ['q4_0', 0.6], ['q4_k_m', 0.05]] as const) {
      assert.ok(relative(await logits(path(target))) < limit, target);
    }
    const q40 = readGguf(path('q4_0'));
    assert.equal(q40.tensors.get('blk.0.ffn_gate_exps.weight')!.dtype, 'q4_0');
    assert.equal(q40.tensors.get('blk.0.ffn_gate_inp.weight')!.dtype, 'f32', 'the router stays f32');
    assert.equal(q40.tensors.get('blk.0.attn_norm.weight')!.dtype, 'f32');
    // hidden 96 is not a multiple of 256: the K-quant file falls back to q8_0 as llama-quantize does.
    assert.equal(readGguf(path('q4_k_m')).tensors.get('blk.0.attn_q.weight')!.dtype, 'q8_0');
  });

  it('metadata, stacked experts and the tokenizer survive the round trip', async () => {
    const gguf = readGguf(path('f32'));
    assert.equal(gguf.metadata.get('general.architecture'), 'olmoe');
    assert.equal(gguf.metadata.get('olmoe.expert_count'), 16);
    assert.equal(gguf.metadata.get('olmoe.expert_used_count'), 4);
    assert.deepEqual(gguf.tensors.get('blk.2.ffn_down_exps.weight')!.shape, [16, 96, 48]);
    const fromHf = await loadPretrained(tinyModelDir, { backend });
    const fromGguf = await loadPretrained(path('f32'), { backend });
    assert.deepEqual({ ...fromGguf.model.config, torchDtype: null }, { ...fromHf.model.config, torchDtype: null });
    for (const text of ['Hello world', 'The experts of a sparse model', '  spaces  and\ttabs\n', 'café ünïcode 生活']) {
      assert.deepEqual(fromGguf.tokenizer.encode(text), fromHf.tokenizer.encode(text), text);
    }
    assert.deepEqual(fromGguf.generation.eosTokenIds, fromHf.generation.eosTokenIds);
  });

  it('a GGUF re-quantizes from a GGUF', async () => {
    const out = join(dir, 'requantized.gguf');
    writeGguf(openCheckpoint(path('f32')), out, { target: 'q8_0' });
    assert.equal(maxAbsDiff(await logits(out), await logits(path('q8_0'))), 0);
  });
});

describe('bad GGUF files', () => {
  const dir = tempDir('olmoe-bad-gguf-');
  const good = join(dir, 'good.gguf');
  before(() => writeGguf(openCheckpoint(tinyModelDir), good, { target: 'f32' }));
  const variant = (name: string, edit: (bytes: Buffer) => Buffer) => {
    const path = join(dir, name);
    writeFileSync(path, edit(Buffer.from(readFileSync(good))));
    return path;
  };
  /** Byte offset of a tensor info's type field: after its name, dims count and dims. */
  const typeFieldOf = (bytes: Buffer, tensor: string) => {
    const at = bytes.indexOf(Buffer.from(tensor)) + tensor.length;
    const dims = bytes.readUInt32LE(at);
    return at + 4 + 8 * dims;
  };

  it('not GGUF, wrong version, truncated header, truncated data', async () => {
    await assert.rejects(loadModel(variant('magic.gguf', (b) => (b.write('GGUX', 0), b)), { backend }), (e: Error) => e instanceof FormatError && /not a GGUF file/.test(e.message));
    await assert.rejects(loadModel(variant('v1.gguf', (b) => (b.writeUInt32LE(1, 4), b)), { backend }), (e: Error) => e instanceof UnsupportedError && /version 1/.test(e.message));
    await assert.rejects(loadModel(variant('header.gguf', (b) => b.subarray(0, 200)), { backend }), (e: Error) => e instanceof FormatError && /truncated/.test(e.message));
    await assert.rejects(loadModel(variant('data.gguf', (b) => b.subarray(0, b.length - 1000)), { backend }), (e: Error) => e instanceof FormatError && /truncated: tensor "output.weight"/.test(e.message));
  });

  it('an unsupported quantization type names the tensor and the type', async () => {
    const path = variant('q5_1.gguf', (b) => (b.writeUInt32LE(7, typeFieldOf(b, 'blk.0.attn_q.weight')), b));
    await assert.rejects(loadModel(path, { backend }), (e: Error) => e instanceof UnsupportedError && /"blk\.0\.attn_q\.weight" uses ggml type Q5_1 \(7\)/.test(e.message));
  });

  it('another architecture is refused', async () => {
    const path = variant('llama.gguf', (b) => {
      const at = b.indexOf(Buffer.from('olmoe'));
      b.write('llama', at);
      return b;
    });
    await assert.rejects(loadModel(path, { backend }), (e: Error) => e instanceof UnsupportedError && /architecture "llama" is not OLMoE/.test(e.message));
  });

  it('a misshaped stacked expert tensor is named with both shapes', async () => {
    const path = variant('shape.gguf', (b) => {
      const at = typeFieldOf(b, 'blk.1.ffn_up_exps.weight') - 24; // ne [96, 48, 16] → [48, 96, 16]: same byte size
      b.writeBigUInt64LE(48n, at);
      b.writeBigUInt64LE(96n, at + 8);
      return b;
    });
    await assert.rejects(loadModel(path, { backend }), (e: Error) => e instanceof WeightError && /blk\.1\.ffn_up_exps\.weight is \[16, 96, 48\]/.test(e.message));
  });

  it('a shape whose byte size does not match the tensor\'s span is named with the tensor after it', () => {
    const path = variant('span.gguf', (b) => {
      b.writeBigUInt64LE(15n, typeFieldOf(b, 'blk.1.ffn_up_exps.weight') - 8); // 15 experts: 1 expert's bytes short
      return b;
    });
    const misfit = /tensor "blk\.1\.ffn_down_exps\.weight" has offset \d+ but tensor "blk\.1\.ffn_up_exps\.weight" \(\[15, 48, 96\] f32\) ends at \d+/;
    assert.throws(() => readGguf(path), (e: Error) => e instanceof FormatError && misfit.test(e.message));
  });

  it('a tensor count one short leaves bytes no tensor claims', () => {
    const path = variant('count.gguf', (b) => (b.writeBigUInt64LE(b.readBigUInt64LE(8) - 1n, 8), b));
    assert.throws(() => readGguf(path), (e: Error) => e instanceof FormatError && /belong to no tensor \(wrong tensor count or offsets\?\)/.test(e.message));
    const extra = variant('tail.gguf', (b) => Buffer.concat([b, Buffer.alloc(64)]));
    assert.throws(() => readGguf(extra), /64 bytes after the last of its \d+ tensors belong to no tensor/);
  });

  it('general.alignment must be a power of two; each metadata key once; arrays nested at most 4 deep', () => {
    const header = (metadata: Buffer[], count = metadata.length) => {
      const start = Buffer.alloc(24);
      start.write('GGUF', 0);
      start.writeUInt32LE(3, 4);
      start.writeBigUInt64LE(0n, 8); // no tensors
      start.writeBigUInt64LE(BigInt(count), 16);
      return Buffer.concat([start, ...metadata]);
    };
    const str = (text: string) => {
      const length = Buffer.alloc(8);
      length.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
      return Buffer.concat([length, Buffer.from(text)]);
    };
    const u32 = (value: number) => {
      const bytes = Buffer.alloc(4);
      bytes.writeUInt32LE(value);
      return bytes;
    };
    const alignment = (value: number) => Buffer.concat([str('general.alignment'), u32(4), u32(value)]);
    const write = (name: string, bytes: Buffer) => {
      const path = join(dir, name);
      writeFileSync(path, bytes);
      return path;
    };
    assert.equal(readGguf(write('a64.gguf', header([alignment(64)]))).alignment, 64);
    assert.throws(() => readGguf(write('a24.gguf', header([alignment(24)]))), (e: Error) => e instanceof FormatError && /general\.alignment 24 is not a power of two/.test(e.message));
    assert.throws(() => readGguf(write('a0.gguf', header([alignment(0)]))), /general\.alignment 0 is not a power of two/);
    assert.throws(() => readGguf(write('twice.gguf', header([alignment(32), alignment(64)]))), (e: Error) => e instanceof FormatError && /metadata key "general\.alignment" appears twice/.test(e.message));
    // An array of arrays of … 20,000 deep: refused at depth 4, before the stack is at risk.
    const nested = Buffer.concat([str('deep'), u32(9), ...Array.from({ length: 20_000 }, () => Buffer.concat([u32(9), Buffer.from([1, 0, 0, 0, 0, 0, 0, 0])]))]);
    assert.throws(() => readGguf(write('deep.gguf', header([nested]))), (e: Error) => e instanceof FormatError && /metadata "deep": arrays nested more than 4 deep/.test(e.message));
    // An array claiming more elements than the file has bytes.
    const huge = Buffer.concat([str('huge'), u32(9), u32(0), Buffer.from([0, 0, 0, 0, 0, 0, 0, 0x10])]);
    assert.throws(() => readGguf(write('huge.gguf', header([huge]))), (e: Error) => e instanceof FormatError && /huge length \d+ is implausible/.test(e.message));
  });
});

describe('GGUF from an independent writer (make_olmoe.py, numpy)', () => {
  const tools = join(sharedDir, 'tools');
  const python = spawnSync('python3', ['-c', 'import numpy'], { encoding: 'utf8' });
  const skip = !existsSync(join(tools, 'make_olmoe.py')) ? 'no ../shared/tools' : python.status !== 0 ? 'python3 with numpy not available' : false;
  if (skip) console.log(`# SKIP: ${skip}`);

  it('f32, f16, q8_0 and q4_0 files load and match a float64 numpy forward on the same dequantized weights', { skip }, async () => {
    const dir = tempDir('olmoe-make-');
    const args = ['--layers', '2', '--hidden', '64', '--heads', '4', '--experts', '8', '--topk', '2', '--ffn', '64', '--vocab', '512', '--std', '0.3', '--norm-std', '0.1', '--seed', '1234', '--hf', join(dir, 'hf')];
    const types = ['f32', 'f16', 'q8_0', 'q4_0'];
    for (const type of types) args.push('--gguf', `${join(dir, type)}.gguf:${type}`);
    assert.equal(spawnSync('python3', [join(tools, 'make_olmoe.py'), ...args], { encoding: 'utf8' }).status, 0);
    const ids = [5, 80, 17, 200, 33, 9];
    const script = `import sys, json; sys.path.insert(0, ${JSON.stringify(tools)}); from ref_olmoe import OlmoeRef
print(json.dumps({t: OlmoeRef(${JSON.stringify(join(dir, 'hf'))}, gguf=${JSON.stringify(dir)} + '/' + t + '.gguf').forward(${JSON.stringify(ids)}).tolist() for t in ${JSON.stringify(types)}}))`;
    const reference = JSON.parse(spawnSync('python3', ['-c', script], { encoding: 'utf8', maxBuffer: 1 << 26 }).stdout) as Record<string, number[][]>;
    for (const type of types) {
      const model = await loadModel(join(dir, `${type}.gguf`), { backend: new DequantizingBackend(), kvCache: 'f32' });
      const ours = model.backend.toFloat32(model.forward(Int32Array.from(ids)));
      assert.ok(maxAbsDiff(ours, Float32Array.from(reference[type]!.flat())) < 1e-4, type);
    }
  });
});
