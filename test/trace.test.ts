/**
 * Routing traces: what `recordTrace` writes equals the model's own routing and logits, the Arrow parts read back
 * exactly, a killed recording resumes to the same trace, and bad trace folders get clear errors.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { FormatError, InputError } from '../src/core/errors.js';
import { readDocuments } from '../src/io/documents.js';
import { recordTrace, traceModel, type TraceDocument } from '../src/analysis/record.js';
import { openTrace, TraceWriter } from '../src/analysis/trace-file.js';
import type { TraceChunk } from '../src/analysis/trace.js';
import type { RoutingEvent } from '../src/model/olmoe.js';
import { loadPretrained, type Pretrained } from '../src/model/pretrained.js';
import { randomCheckpoint } from './checkpoints.js';
import { tempDir, tinyModelDir } from './helpers.js';

async function* documentsOf(list: TraceDocument[]) {
  yield* list;
}

function collect(dir: string): TraceChunk[] {
  return [...openTrace(dir).chunks()];
}

/** All chunks' columns concatenated, for comparing traces cut into different chunks. */
function flatten(chunks: TraceChunk[]) {
  const join = <T extends Int32Array | Uint16Array | Float32Array>(pick: (c: TraceChunk) => T | undefined) => chunks.flatMap((c) => Array.from(pick(c) ?? []));
  return {
    document: join((c) => c.document), position: join((c) => c.position), domain: join((c) => c.domain), input: join((c) => c.input),
    target: join((c) => c.target), predicted: join((c) => c.predicted), experts: join((c) => c.experts), weights: join((c) => c.weights), probs: join((c) => c.probs),
  };
}

describe('routing traces', () => {
  let lm: Pretrained;
  const header = () => ({ version: 1, model: traceModel('tiny', tinyModelDir, lm.model), domains: [], withProbs: true });
  const docs: TraceDocument[] = [
    { ids: Array.from({ length: 40 }, (_, i) => (i * 31 + 7) % 550), domain: 'prose' },
    { ids: [5, 6, 7], domain: 'code' },
    { ids: Array.from({ length: 25 }, (_, i) => (i * 17 + 3) % 550), domain: 'prose' },
    { ids: [9], domain: 'math' },
  ];
  before(async () => {
    lm = await loadPretrained(tinyModelDir, { backend: new ReferenceBackend() });
  });

  it('records, per token, the routing, prediction and next token of each window of the model', async () => {
    const dir = join(tempDir(), 'trace');
    const writer = new TraceWriter(dir, header());
    const done = await recordTrace(lm, documentsOf(docs), writer, { maxLength: 16 });
    assert.deepEqual(done, { documents: 4, tokens: 69, bytes: 0 });
    const trace = openTrace(dir);
    assert.deepEqual(trace.header.domains, ['prose', 'code', 'math']);
    const flat = flatten([...trace.chunks()]);
    assert.equal(flat.input.length, 69);
    // independently: each document in windows of 16, through the model with an observer
    const { numLayers: L, numExpertsPerTok: K, numExperts: E, vocabSize: V } = lm.model.config;
    let t = 0;
    docs.forEach((doc, d) => {
      const ids = doc.ids!;
      for (let start = 0; start < ids.length; start += 16) {
        const window = ids.slice(start, start + 16);
        const events: RoutingEvent[] = [];
        const logits = lm.model.backend.toFloat32(lm.model.forward(Int32Array.from(window), { observer: (e) => events.push({ ...e, expertIds: e.expertIds.slice(), weights: e.weights.slice(), probs: e.probs.slice() }) }));
        window.forEach((id, w) => {
          const p = start + w;
          assert.equal(flat.document[t], d);
          assert.equal(flat.position[t], p);
          assert.equal(trace.header.domains[flat.domain[t]!], doc.domain);
          assert.equal(flat.input[t], id);
          assert.equal(flat.target[t], p + 1 < ids.length ? ids[p + 1] : -1);
          const row = Array.from(logits.subarray(w * V, (w + 1) * V));
          assert.equal(flat.predicted[t], row.indexOf(Math.max(...row)));
          for (const e of events) {
            assert.deepEqual(flat.experts.slice((t * L + e.layer) * K, (t * L + e.layer + 1) * K), Array.from(e.expertIds.subarray(w * K, (w + 1) * K)));
            assert.deepEqual(flat.weights.slice((t * L + e.layer) * K, (t * L + e.layer + 1) * K), Array.from(e.weights.subarray(w * K, (w + 1) * K)));
            assert.deepEqual(flat.probs.slice((t * L + e.layer) * E, (t * L + e.layer + 1) * E), Array.from(e.probs.subarray(w * E, (w + 1) * E)));
          }
          t++;
        });
      }
    });
  });

  it('a killed recording resumes to the same trace; a part written but not indexed is dropped', async () => {
    const whole = join(tempDir(), 'whole');
    await recordTrace(lm, documentsOf(docs), new TraceWriter(whole, header(), { partTokens: 10 }), { maxLength: 16 });
    const dir = join(tempDir(), 'resumed');
    await recordTrace(lm, documentsOf(docs), new TraceWriter(dir, header(), { partTokens: 10 }), { maxLength: 16, maxDocuments: 2 });
    assert.equal(openTrace(dir).index.parts.length, 2);
    writeFileSync(join(dir, 'part-000002.arrow'), 'half-written by a killed run');
    assert.throws(() => new TraceWriter(dir, header()), /already holds a trace: pass --resume/);
    const resumed = new TraceWriter(dir, header(), { resume: true, partTokens: 10 });
    assert.equal(resumed.documentsDone, 2);
    const done = await recordTrace(lm, documentsOf(docs), resumed, { maxLength: 16 });
    assert.equal(done.documents, 2);
    assert.deepEqual(flatten(collect(dir)), flatten(collect(whole)));
  });

  it('resuming with another model, a corrupt part, a wrong version or no trace at all are clear errors', async () => {
    const dir = join(tempDir(), 'trace');
    await recordTrace(lm, documentsOf(docs.slice(0, 2)), new TraceWriter(dir, header()), { maxLength: 16 });
    const other = randomCheckpoint({ seed: 99 });
    const otherModel = (await loadPretrained(other.dir, { backend: new ReferenceBackend() })).model;
    assert.throws(
      () => new TraceWriter(dir, { ...header(), model: traceModel('other', other.dir, otherModel) }, { resume: true }),
      (error: unknown) => error instanceof InputError && /recorded with another model \(tiny/.test(error.message),
    );
    assert.throws(() => new TraceWriter(dir, { ...header(), withProbs: false }, { resume: true }), /recorded with --probs/);
    writeFileSync(join(dir, 'part-000000.arrow'), readFileSync(join(dir, 'part-000000.arrow')).subarray(0, 200));
    assert.throws(() => collect(dir), (error: unknown) => error instanceof FormatError && /part-000000\.arrow/.test(error.message));
    const index = JSON.parse(readFileSync(join(dir, 'trace.json'), 'utf8'));
    writeFileSync(join(dir, 'trace.json'), JSON.stringify({ ...index, version: 7 }));
    assert.throws(() => openTrace(dir), /trace version 7; this olmoe reads version 1/);
    assert.throws(() => openTrace(tempDir()), /not a trace \(no trace\.json\)/);
  });

  it('reads documents from text (blank-line separated) and .jsonl files, with domains', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'books.txt'), 'first paragraph\nstill first\n\n\nsecond\n');
    writeFileSync(join(dir, 'mixed.jsonl'), '{"text": "a", "domain": "code"}\n\n{"text": "b"}\n');
    const read = [];
    for await (const d of readDocuments([join(dir, 'books.txt'), join(dir, 'mixed.jsonl')])) read.push([d.text, d.domain]);
    assert.deepEqual(read, [['first paragraph\nstill first', 'books'], ['second', 'books'], ['a', 'code'], ['b', 'mixed']]);
    mkdirSync(join(dir, 'math'));
    writeFileSync(join(dir, 'math', 'valid.jsonl'), '{"text": "1 + 1 = 2"}\n');
    for await (const d of readDocuments([join(dir, 'math', 'valid.jsonl')])) assert.equal(d.domain, 'math'); // a corpus split file: its folder
    writeFileSync(join(dir, 'bad.jsonl'), '{"text": "a"}\n{"txt": 1}\n');
    await assert.rejects(async () => {
      for await (const _ of readDocuments([join(dir, 'bad.jsonl')])) void _;
    }, /bad\.jsonl: line 2 has no "text" string/);
  });
});
