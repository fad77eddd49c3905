/**
 * GGUF with the real 50,280-token OLMo tokenizer: the header is several MiB (tokens, types, merges), beyond the
 * writer's first 64 KiB buffer; every field reads back as written, every convert/quantize type succeeds, and the
 * tokenizer rebuilt from the GGUF gives tokenizer.json's ids, also for vocabulary entries named like
 * Object.prototype's members (`constructor`, `toString`, `valueOf`).
 */
import assert from 'node:assert/strict';
import { copyFileSync, readFileSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { readGguf } from '../src/io/gguf.js';
import { GGUF_TARGETS, writeGguf } from '../src/model/convert.js';
import { loadModel, openCheckpoint } from '../src/model/load.js';
import { writeRandomCheckpoint } from '../src/model/random-checkpoint.js';
import { tokenizerFromGguf } from '../src/tokenizer/gguf.js';
import { OlmoeTokenizer } from '../src/tokenizer/tokenizer.js';
import { maxAbsDiff } from './checkpoints.js';
import { repoRoot, tempDir } from './helpers.js';

const fixture = join(repoRoot, 'test', 'fixtures', 'olmo-tokenizer');
const tokenizerJson = JSON.parse(readFileSync(join(fixture, 'tokenizer.json'), 'utf8')) as {
  model: { vocab: Record<string, number>; merges: (string | [string, string])[] };
  added_tokens: { id: number; content: string; special: boolean }[];
};
const golden = JSON.parse(readFileSync(join(fixture, 'golden-ids-subset.json'), 'utf8')) as { cases: { text: string; ids: number[] }[] };
const PROTOTYPE_NAMES = 'x.toString() constructor valueOf __proto__ hasOwnProperty constructor.prototype';

describe('GGUF with the real OLMo tokenizer', () => {
  const dir = tempDir('olmoe-real-vocab-');
  const hf = join(dir, 'hf');
  const gguf = (target: string) => join(dir, `${target}.gguf`);
  after(() => rmSync(dir, { recursive: true, force: true }));
  before(() => {
    const shape = { layers: 1, experts: 2, topK: 1, hidden: 16, heads: 2, intermediate: 16, vocab: 50304, context: 64 };
    writeRandomCheckpoint(hf, { ...shape, dtype: 'f16', seed: 7, std: 0.5 }); // f16 weights: the f16 GGUF holds them exactly
    copyFileSync(join(fixture, 'tokenizer.json'), join(hf, 'tokenizer.json'));
    for (const target of GGUF_TARGETS) writeGguf(openCheckpoint(hf), gguf(target), { target });
  });

  it('every convert and quantize type writes a file that reads back, header field by field', () => {
    const vocab = tokenizerJson.model.vocab;
    const merges = tokenizerJson.model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : m));
    for (const target of GGUF_TARGETS) {
      const file = readGguf(gguf(target));
      const tokens = file.metadata.get('tokenizer.ggml.tokens') as string[];
      const types = file.metadata.get('tokenizer.ggml.token_type') as number[];
      assert.equal(tokens.length, 50304, target);
      for (const [token, id] of Object.entries(vocab)) assert.equal(tokens[id], token, `${target}: token ${id}`);
      for (const added of tokenizerJson.added_tokens) assert.equal(tokens[added.id], added.content, `${target}: added token ${added.id}`);
      assert.equal(tokens[50300], '[PAD50300]');
      assert.equal(types[50300], 5, 'padding rows are unused');
      assert.equal(types[vocab['constructor']!], 1);
      assert.deepEqual(file.metadata.get('tokenizer.ggml.merges'), merges, `${target}: merges`);
      assert.equal(file.metadata.get('general.architecture'), 'olmoe');
    }
    const headerBytes = statSync(gguf('f32')).size - [...readGguf(gguf('f32')).tensors.values()].reduce((s, t) => s + t.byteLength, 0);
    assert.ok(headerBytes > 1 << 20, `the header is ${headerBytes} bytes: several times the writer's first buffer`);
  });

  it('the GGUF tokenizer gives tokenizer.json\'s ids (and the Rust tokenizer\'s golden ids)', () => {
    const fromJson = OlmoeTokenizer.fromFolder(hf);
    const fromGguf = tokenizerFromGguf(readGguf(gguf('q8_0')));
    for (const { text, ids } of golden.cases) {
      assert.deepEqual(fromJson.encode(text), ids, `tokenizer.json: ${JSON.stringify(text)}`);
      assert.deepEqual(fromGguf.encode(text), ids, `GGUF: ${JSON.stringify(text)}`);
    }
    assert.deepEqual(fromGguf.encode(PROTOTYPE_NAMES), fromJson.encode(PROTOTYPE_NAMES));
    // Independent of either path: these words are single vocabulary entries.
    assert.deepEqual(fromGguf.encode('constructor'), [tokenizerJson.model.vocab['constructor']]);
    assert.deepEqual(fromGguf.encode('valueOf'), [tokenizerJson.model.vocab['valueOf']]);
    assert.equal(fromGguf.decode(fromGguf.encode(PROTOTYPE_NAMES)), PROTOTYPE_NAMES);
  });

  it('f16 logits equal the HF folder\'s; quantized files give finite logits', async () => {
    const backend = new ReferenceBackend();
    const ids = Int32Array.from([36073, 18264, 48559, 50279, 0]);
    const logits = async (path: string) => {
      const model = await loadModel(path, { backend });
      return backend.toFloat32(model.forward(ids));
    };
    const reference = await logits(hf);
    const f16 = await logits(gguf('f16'));
    assert.equal(maxAbsDiff(f16, reference), 0, 'the same f16 values give the same logits');
    for (const target of ['q8_0', 'q4_0', 'q4_k_m']) assert.ok((await logits(gguf(target))).every(Number.isFinite), target);
  });
});
