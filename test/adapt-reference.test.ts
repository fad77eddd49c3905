/**
 * The reference log-prob cache: its values equal a plain teacher-forced forward (log-softmax in float64 summed over
 * the masked tokens) on the tiny fixture to 1e-5, multi-span masks included; a second run reads the file and never
 * runs the model; an interrupted pass resumes with only the missing sequences; a line cut short by a kill is
 * dropped; other weights or other data open another file.
 */
import assert from 'node:assert/strict';
import { appendFileSync, readdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import { AbortError } from '../src/core/errors.js';
import { loadModel } from '../src/model/load.js';
import type { OlmoeModel } from '../src/model/olmoe.js';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { OlmoeTokenizer } from '../src/tokenizer/tokenizer.js';
import { encodeTurns, trainedCount, type EncodedSequence } from '../src/train/adapt/encode.js';
import { encodePreferences } from '../src/train/adapt/preference.js';
import { parsePreferenceRecord, type Turn } from '../src/train/adapt/records.js';
import { dataFingerprint, referenceLogprobs } from '../src/train/adapt/reference-cache.js';
import { tempDir, tinyModelDir } from './helpers.js';

const FINGERPRINT = '0123456789abcdef';

/** Σ over masked t of log softmax(logits[t − 1])[tokens[t]] from one uncached forward of the whole sequence. */
function direct(model: OlmoeModel, sequence: EncodedSequence): number {
  const logits = model.backend.toFloat32(model.forward(sequence.tokens));
  const vocab = model.config.vocabSize;
  let sum = 0;
  for (let t = 1; t < sequence.tokens.length; t++) {
    if (!sequence.lossMask[t]) continue;
    const row = Array.from(logits.subarray((t - 1) * vocab, t * vocab));
    const max = Math.max(...row);
    sum += row[sequence.tokens[t]!]! - max - Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
  }
  return sum;
}

function sequences(): EncodedSequence[] {
  const tokenizer = OlmoeTokenizer.fromFolder(tinyModelDir);
  const source = { file: 'pref.jsonl', line: 1 };
  const records = [
    { prompt: 'What is the capital of Peru?', chosen: 'Lima.', rejected: 'I would rather not say.' },
    { prompt: 'Name a colour.', chosen: 'Blue.', rejected: 'Blu' },
    { prompt: 'Spell cat.', chosen: 'C, A, T.', rejected: 'Why do you want me to spell cat?' },
  ].map((r) => parsePreferenceRecord(r, source));
  const { pairs } = encodePreferences(tokenizer, records, { maxLength: 128, policy: 'drop' });
  const turn = (role: Turn['role'], content: string): Turn => ({ role, content, train: role === 'assistant' });
  const multiTurn = encodeTurns(tokenizer, [turn('user', 'Hi'), turn('assistant', 'Hello.'), turn('user', 'Bye'), turn('assistant', 'Goodbye.')], source);
  return [...pairs.flatMap((p) => [p.chosen, p.rejected]), multiTurn];
}

/** The model, with forward calls counted (or refused). */
function counted(model: OlmoeModel, refuse = false): { model: OlmoeModel; calls: () => number } {
  let calls = 0;
  const wrapper = Object.create(model) as OlmoeModel;
  wrapper.forward = (...args: Parameters<OlmoeModel['forward']>) => {
    calls++;
    if (refuse) throw new Error('the model ran although every value was cached');
    return model.forward(...args);
  };
  return { model: wrapper, calls: () => calls };
}

describe('reference log-prob cache', () => {
  it('equals a direct teacher-forced computation (1e-5), and a second run does not run the model', async () => {
    const model = await loadModel(tinyModelDir, { backend: new ReferenceBackend() });
    const seqs = sequences();
    assert.ok(seqs.some((s) => s.lossMask.filter((bit, t) => bit === 1 && s.lossMask[t - 1] === 0).length === 2), 'one sequence has two trained spans');
    const dir = tempDir();
    const first = await referenceLogprobs(model, seqs, { dir, modelFingerprint: FINGERPRINT, group: 2 });
    assert.equal(first.computed, seqs.length);
    seqs.forEach((s, i) => {
      const expected = direct(model, s);
      assert.ok(Math.abs(first.values[i]!.logprob - expected) < 1e-5, `sequence ${i}: ${first.values[i]!.logprob} vs ${expected}`);
      assert.equal(first.values[i]!.tokens, trainedCount(s));
    });
    const refusing = counted(model, true);
    const second = await referenceLogprobs(refusing.model, seqs, { dir, modelFingerprint: FINGERPRINT });
    assert.deepEqual([second.computed, second.cached, refusing.calls()], [0, seqs.length, 0]);
    assert.deepEqual(second.values, first.values);
    assert.equal(second.path, first.path);
  });

  it('resumes an interrupted pass, drops a line cut by a kill, and never reuses a file for other weights or data', async () => {
    const model = await loadModel(tinyModelDir, { backend: new ReferenceBackend() });
    const seqs = sequences();
    const dir = tempDir();
    const controller = new AbortController();
    await assert.rejects(referenceLogprobs(model, seqs, { dir, modelFingerprint: FINGERPRINT, group: 2, signal: controller.signal, onProgress: () => controller.abort() }), AbortError);
    const resumed = counted(model);
    const after = await referenceLogprobs(resumed.model, seqs, { dir, modelFingerprint: FINGERPRINT, group: 2 });
    assert.deepEqual([after.cached, after.computed], [2, seqs.length - 2], 'the first group was kept');
    assert.ok(resumed.calls() > 0);
    appendFileSync(after.path, '{"key":"99","value":{"logp'); // a kill in the middle of an append
    const repaired = await referenceLogprobs(counted(model, true).model, seqs, { dir, modelFingerprint: FINGERPRINT });
    assert.equal(repaired.computed, 0);

    const otherWeights = await referenceLogprobs(model, seqs.slice(0, 2), { dir, modelFingerprint: 'fedcba9876543210' });
    assert.equal(otherWeights.computed, 2, 'another model fingerprint scores again');
    const changed = seqs.map((s, i) => (i === 0 ? { tokens: Int32Array.from(s.tokens, (t, k) => (k === s.tokens.length - 2 ? (t + 1) % model.config.vocabSize : t)), lossMask: s.lossMask } : s));
    assert.notEqual(dataFingerprint(changed), dataFingerprint(seqs));
    const otherData = await referenceLogprobs(model, changed, { dir, modelFingerprint: FINGERPRINT });
    assert.equal(otherData.computed, seqs.length, 'changed data is a new file, scored whole');
    assert.equal(new Set([after.path, otherWeights.path, otherData.path]).size, 3);
    assert.equal(readdirSync(dir).length, 3);
  });

  it('refuses sequences longer than the model and fingerprints that are not hex', async () => {
    const model = await loadModel(tinyModelDir, { backend: new ReferenceBackend() });
    const long = { tokens: new Int32Array(model.config.maxPositionEmbeddings + 2), lossMask: new Uint8Array(model.config.maxPositionEmbeddings + 2).fill(1) };
    await assert.rejects(referenceLogprobs(model, [long], { dir: tempDir(), modelFingerprint: FINGERPRINT }), /apply max_length/);
    await assert.rejects(referenceLogprobs(model, sequences(), { dir: tempDir(), modelFingerprint: 'not hex!' }), /not a hex digest/);
  });
});
