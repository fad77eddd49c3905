/**
 * `olmoe quantize` / `olmoe convert` against an independent GGUF writer, and on a model carrying the real OLMo
 * tokenizer.
 *
 * 1. test/fixtures/q8-peer (see its README): one random model written by ../shared/tools/make_olmoe.py as an HF
 *    F32 folder and, from the same weights, as Q8_0, Q4_0 and F16 GGUFs (its own numpy writer and quantizers,
 *    ggml's reference rounding). olmoe's files from the HF folder must hold the same bytes for every tensor both
 *    store in the same type, and give the same logits as make_olmoe's files.
 * 2. A random model with OLMoE's vocabulary size (50,304) carrying test/fixtures/olmo-tokenizer/tokenizer.json
 *    (50,280 tokens: the GGUF header is over 64 KiB): convert and every quantize type succeed and load, f16 logits
 *    stay within f16 rounding of the HF folder's, q8_0 within q8_0 rounding. It is written at test time with the
 *    repo's random-checkpoint writer (an HF folder of 12.9 MB is too big for git; make_olmoe.py cannot run here),
 *    so its exactness claims rest on part 1.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { loadModel } from '../src/model/load.js';
import { writeRandomCheckpoint } from '../src/model/random-checkpoint.js';
import { cliPath, repoRoot, tempDir } from './helpers.js';

const peerDir = join(repoRoot, 'test', 'fixtures', 'q8-peer');
const peerModel = join(peerDir, 'model');
const realTokenizer = join(repoRoot, 'test', 'fixtures', 'olmo-tokenizer', 'tokenizer.json');
const IDS = Int32Array.from([3, 250, 17, 99, 142, 7, 201, 64, 45, 120, 0, 259]);

function olmoe(args: string[]): void {
  const result = spawnSync(process.execPath, [cliPath, ...args, '--quiet'], { encoding: 'utf8' });
  assert.equal(result.status, 0, `olmoe ${args.join(' ')}: ${result.stderr}`);
}

async function logitsOf(path: string, ids: Int32Array = IDS): Promise<Float32Array> {
  const model = await loadModel(path, { backend: new ReferenceBackend() });
  return model.backend.toFloat32(model.forward(ids));
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length);
  return a.reduce((max, value, i) => Math.max(max, Math.abs(value - b[i]!)), 0);
}

// ---- a minimal GGUF v3 reader (written from the format, not olmoe's reader): tensor types and raw bytes
interface RawTensor {
  type: number;
  dims: number[];
  bytes: Buffer;
}

const TYPE_NAMES: Record<number, string> = { 0: 'f32', 1: 'f16', 2: 'q4_0', 8: 'q8_0', 12: 'q4_k', 14: 'q6_k' };
/** [bytes per block, values per block] of the ggml types these files use. */
const BLOCK: Record<number, [number, number]> = { 0: [4, 1], 1: [2, 1], 2: [18, 32], 8: [34, 32], 12: [144, 256], 14: [210, 256] };
const SCALAR_SIZE: Record<number, number> = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

function readGgufRaw(path: string): { metadata: Map<string, unknown>; tensors: Map<string, RawTensor>; headerBytes: number } {
  const file = readFileSync(path);
  let pos = 0;
  const u32 = () => ((pos += 4), file.readUInt32LE(pos - 4));
  const u64 = () => ((pos += 8), Number(file.readBigUInt64LE(pos - 8)));
  const str = () => {
    const n = u64();
    pos += n;
    return file.toString('utf8', pos - n, pos);
  };
  const value = (type: number): unknown => {
    if (type === 8) return str();
    if (type === 9) {
      const [itemType, n] = [u32(), u64()];
      return Array.from({ length: n }, () => value(itemType));
    }
    const size = SCALAR_SIZE[type];
    assert.ok(size, `metadata type ${type}`);
    pos += size;
    return type === 4 ? file.readUInt32LE(pos - 4) : type === 7 ? file[pos - 1] === 1 : undefined;
  };
  assert.equal(u32(), 0x46554747, 'GGUF magic');
  assert.equal(u32(), 3, 'GGUF version');
  const [tensorCount, kvCount] = [u64(), u64()];
  const metadata = new Map<string, unknown>();
  for (let i = 0; i < kvCount; i++) {
    const key = str();
    metadata.set(key, value(u32()));
  }
  const infos = Array.from({ length: tensorCount }, () => {
    const name = str();
    const dims = Array.from({ length: u32() }, () => u64());
    return { name, dims, type: u32(), offset: u64() };
  });
  const alignment = (metadata.get('general.alignment') as number | undefined) ?? 32;
  const dataStart = Math.ceil(pos / alignment) * alignment;
  const tensors = new Map<string, RawTensor>();
  for (const { name, dims, type, offset } of infos) {
    const [blockBytes, blockValues] = BLOCK[type] ?? assert.fail(`${name}: ggml type ${type}`);
    const size = (dims.reduce((a, b) => a * b, 1) / blockValues) * blockBytes;
    assert.ok(dataStart + offset + size <= file.length, `${name} inside the file`);
    tensors.set(name, { type, dims, bytes: file.subarray(dataStart + offset, dataStart + offset + size) });
  }
  return { metadata, tensors, headerBytes: dataStart };
}

/** Tensors both files store in the same type: their bytes must be equal. Returns the names compared. */
function assertSameBytesWhereSameType(mine: Map<string, RawTensor>, peer: Map<string, RawTensor>, type: number): string[] {
  assert.deepEqual([...mine.keys()].sort(), [...peer.keys()].sort(), 'same tensor names');
  const compared: string[] = [];
  for (const [name, theirs] of peer) {
    const ours = mine.get(name)!;
    assert.deepEqual(ours.dims, theirs.dims, `${name}: dims`);
    if (ours.type !== type || theirs.type !== type) continue;
    assert.ok(ours.bytes.equals(theirs.bytes), `${name}: ${TYPE_NAMES[type]} bytes differ from make_olmoe.py's`);
    compared.push(name);
  }
  return compared;
}

/** The 2-D and 3-D tensors of the 2-layer fixture: embeddings, head, q/k/v/o and the stacked experts. */
const MATRICES = ['token_embd.weight', 'output.weight', ...[0, 1].flatMap((l) => ['attn_q', 'attn_k', 'attn_v', 'attn_output', 'ffn_gate_exps', 'ffn_up_exps', 'ffn_down_exps'].map((t) => `blk.${l}.${t}.weight`))];

describe('olmoe quantize/convert vs make_olmoe.py’s GGUF writer (test/fixtures/q8-peer)', () => {
  let dir: string;
  before(() => {
    dir = tempDir('olmoe-peer-');
    olmoe(['quantize', peerModel, join(dir, 'q8_0.gguf'), '--type', 'q8_0']);
    olmoe(['quantize', peerModel, join(dir, 'q4_0.gguf'), '--type', 'q4_0']);
    olmoe(['quantize', peerModel, join(dir, 'q4_k_m.gguf'), '--type', 'q4_k_m']);
    olmoe(['convert', peerModel, join(dir, 'f16.gguf'), '--type', 'f16']);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('q8_0: every matrix holds make_olmoe’s bytes, norms and router stay f32, and the logits are identical', async () => {
    const mine = readGgufRaw(join(dir, 'q8_0.gguf')).tensors;
    const peer = readGgufRaw(join(peerDir, 'make_olmoe-q8_0.gguf')).tensors;
    assert.deepEqual(assertSameBytesWhereSameType(mine, peer, 8).sort(), [...MATRICES].sort());
    assertSameBytesWhereSameType(mine, peer, 0);
    for (const [name, tensor] of mine) assert.equal(tensor.type, MATRICES.includes(name) ? 8 : 0, name);
    const [ours, theirs] = [await logitsOf(join(dir, 'q8_0.gguf')), await logitsOf(join(peerDir, 'make_olmoe-q8_0.gguf'))];
    assert.ok(maxAbsDiff(ours, theirs) <= 1e-6, `max |Δlogit| ${maxAbsDiff(ours, theirs)}`);
  });

  it('q4_0: the same bytes for every tensor both store as q4_0 (all matrices but the output head)', () => {
    const mine = readGgufRaw(join(dir, 'q4_0.gguf')).tensors;
    const peer = readGgufRaw(join(peerDir, 'make_olmoe-q4_0.gguf')).tensors;
    // olmoe keeps the head at higher precision (q6_k, or q8_0 when a row is not 256 wide), as llama-quantize does.
    assert.deepEqual(assertSameBytesWhereSameType(mine, peer, 2).sort(), MATRICES.filter((name) => name !== 'output.weight').sort());
  });

  it('q4_k_m: no row here is 256 wide, so every matrix falls back to q8_0, with make_olmoe’s q8_0 bytes', () => {
    const mine = readGgufRaw(join(dir, 'q4_k_m.gguf')).tensors;
    const peer = readGgufRaw(join(peerDir, 'make_olmoe-q8_0.gguf')).tensors;
    assert.deepEqual(assertSameBytesWhereSameType(mine, peer, 8).sort(), [...MATRICES].sort());
  });

  it('f16: the same bytes as make_olmoe’s F16 file, and logits within f16 rounding of the HF folder’s', async () => {
    const mine = readGgufRaw(join(dir, 'f16.gguf')).tensors;
    const peer = readGgufRaw(join(peerDir, 'make_olmoe-f16.gguf')).tensors;
    assert.deepEqual(assertSameBytesWhereSameType(mine, peer, 1).sort(), [...MATRICES].sort());
    const [f16, hf] = [await logitsOf(join(dir, 'f16.gguf')), await logitsOf(peerModel)];
    // Weights rounded to 11 significant bits (relative error ≤ 2^-11 each) move these logits (|logit| < 10) by
    // well under 0.02; a wrong tensor, layout or type moves them by whole units.
    const error = maxAbsDiff(f16, hf);
    assert.ok(error > 0 && error < 0.02, `max |Δlogit| f16 vs HF ${error}`);
  });
});

describe('convert and quantize a model carrying the real OLMo tokenizer (50,280 tokens, vocab 50,304)', () => {
  const ids = Int32Array.from([50279, 510, 4062, 50000, 12, 0, 50303]);
  let dir: string;
  let hfLogits: Float32Array;
  before(async () => {
    dir = tempDir('olmoe-realtok-');
    // intermediate 256: ffn_down rows fit the 256-wide K-quant blocks, so q4_k_m writes q4_k and q6_k tensors;
    // top-2 of 2 experts: no routing decision for quantization noise to flip.
    writeRandomCheckpoint(join(dir, 'hf'), { layers: 2, experts: 2, topK: 2, hidden: 32, heads: 2, intermediate: 256, vocab: 50304, context: 128, dtype: 'f32', seed: 5, std: 0.3 });
    copyFileSync(realTokenizer, join(dir, 'hf', 'tokenizer.json'));
    const config = JSON.parse(readFileSync(join(dir, 'hf', 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(dir, 'hf', 'config.json'), JSON.stringify({ ...config, eos_token_id: 50279, pad_token_id: 1 })); // OLMoE-1B-7B-0924's
    writeFileSync(join(dir, 'hf', 'tokenizer_config.json'), JSON.stringify({ add_bos_token: false, add_eos_token: false, bos_token: null, eos_token: '<|endoftext|>', pad_token: '<|padding|>' }));
    hfLogits = await logitsOf(join(dir, 'hf'), ids);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const cases: { type: string; verb: string; tolerance: number; quantTypes: number[] }[] = [
    // Measured here: f16 0.010, q8_0 0.30, q4_k_m 0.48, q4_0 3.3 (|logit| < 9, every expert used, so no routing
    // flips); a wrong tensor or layout moves logits by ~10. Exactness is part 1's job: these catch gross errors.
    { type: 'f16', verb: 'convert', tolerance: 0.02, quantTypes: [1] },
    { type: 'q8_0', verb: 'quantize', tolerance: 0.6, quantTypes: [8] },
    { type: 'q4_0', verb: 'quantize', tolerance: 5, quantTypes: [2, 8] },
    { type: 'q4_k_m', verb: 'quantize', tolerance: 1, quantTypes: [8, 12, 14] },
  ];
  for (const { type, verb, tolerance, quantTypes } of cases) {
    it(`olmoe ${verb} --type ${type} succeeds, keeps the 50,280 tokens, and the file loads with logits within ${tolerance} of the HF folder’s`, async () => {
      const out = join(dir, `${type}.gguf`);
      olmoe([verb, join(dir, 'hf'), out, '--type', type]);
      const { metadata, tensors, headerBytes } = readGgufRaw(out);
      assert.ok(headerBytes > 65536, `header ${headerBytes} bytes`);
      const tokens = metadata.get('tokenizer.ggml.tokens') as string[];
      assert.equal(tokens.length, 50304, 'the 50,280 tokens padded to the vocabulary size, as llama.cpp expects');
      assert.equal((metadata.get('tokenizer.ggml.token_type') as unknown[]).length, 50304);
      assert.equal(tokens[50279], '<|endoftext|>');
      const types = new Set([...tensors.values()].filter((t) => t.dims.length > 1).map((t) => t.type));
      for (const wanted of quantTypes) assert.ok(types.has(wanted), `${type}: has ${TYPE_NAMES[wanted]} tensors (${[...types].map((t) => TYPE_NAMES[t])})`);
      const logits = await logitsOf(out, ids);
      assert.ok(logits.every(Number.isFinite));
      const error = maxAbsDiff(logits, hfLogits);
      assert.ok(error > 0 && error < tolerance, `max |Δlogit| ${type} vs HF ${error}`);
    });
  }
});
