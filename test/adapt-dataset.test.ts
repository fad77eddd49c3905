/**
 * The committed adaptation data (data/adapt/, built by scripts/build-adapt-data.mjs): every file reads with the
 * library's readers and holds the records its manifest states; every conversation encodes under OLMoE-0924's
 * template with one trained span per assistant turn; no preference prompt is an SFT prompt; and, where the
 * evaluation benchmarks are present (benchmarks/), the manifest names their current bytes and no example states
 * a benchmark question, fact or long answer.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { OlmoeTokenizer } from '../src/tokenizer/tokenizer.js';
import { encodeSftRecord } from '../src/train/adapt/encode.js';
import { readRecords } from '../src/train/adapt/jsonl.js';
import { encodeKto, encodePreferences } from '../src/train/adapt/preference.js';
import { parseKtoRecords, parsePreferenceRecord, parseSftRecord } from '../src/train/adapt/records.js';
import { maskRuns } from '../src/train/adapt/show-mask.js';
import { TEMPLATE_0924 } from './chat-templates.js';
import { realTokenizerDir, realTokenizerSkip, repoRoot } from './helpers.js';

const dataDir = join(repoRoot, 'data', 'adapt');
const benchmarksDir = join(repoRoot, 'benchmarks');
interface Manifest {
  files: { name: string; records: number }[];
  disjointness: { benchmarkFiles: Record<string, string> };
}
const manifest = JSON.parse(readFileSync(join(dataDir, 'manifest.json'), 'utf8')) as Manifest;
const recordsOf = (name: string) => manifest.files.find((f) => f.name === name)!.records;

describe('data/adapt', () => {
  it('every file reads with the library\'s readers and holds the records the manifest states', async () => {
    for (const name of ['sft-train.jsonl', 'sft-valid.jsonl']) assert.equal((await readRecords(join(dataDir, name), parseSftRecord)).length, recordsOf(name), name);
    for (const name of ['preference-train.jsonl', 'preference-test.jsonl']) assert.equal((await readRecords(join(dataDir, name), parsePreferenceRecord)).length, recordsOf(name), name);
    const kto = (await readRecords(join(dataDir, 'kto-train.jsonl'), parseKtoRecords)).flat();
    assert.equal(kto.length, recordsOf('kto-train.jsonl'));
    assert.ok(kto.some((k) => k.label) && kto.some((k) => !k.label), 'both labels');
  });

  it('encodes under OLMoE-0924\'s template: one trained span per assistant turn; pairs distinct; KTO pairs mismatched', { skip: realTokenizerSkip() }, async () => {
    const tokenizer = new OlmoeTokenizer(JSON.parse(readFileSync(join(realTokenizerDir, 'tokenizer.json'), 'utf8')) as Record<string, unknown>, { bos_token: '<|endoftext|>', eos_token: '<|endoftext|>', chat_template: TEMPLATE_0924 });
    const sft = await readRecords(join(dataDir, 'sft-train.jsonl'), parseSftRecord);
    let multiTurn = 0;
    for (const record of sft) {
      assert.equal(record.kind, 'chat');
      if (record.kind !== 'chat') continue;
      const spans = maskRuns(encodeSftRecord(tokenizer, record).lossMask).filter(([, , trained]) => trained).length;
      const turns = record.turns.filter((t) => t.role === 'assistant').length;
      assert.equal(spans, turns, `${record.source.file}: line ${record.source.line}`);
      if (turns > 1) multiTurn++;
    }
    assert.ok(multiTurn >= 30, `${multiTurn} multi-turn conversations`);
    const preferences = await readRecords(join(dataDir, 'preference-train.jsonl'), parsePreferenceRecord);
    const { stats } = encodePreferences(tokenizer, preferences, { maxLength: 1024, policy: 'drop' });
    assert.deepEqual([stats.identical, stats.dropped, stats.pairs], [0, 0, preferences.length]);
    const kto = (await readRecords(join(dataDir, 'kto-train.jsonl'), parseKtoRecords)).flat();
    assert.equal(encodeKto(tokenizer, kto, { maxLength: 1024, policy: 'drop', seed: 0 }).examples.length, kto.length);
  });

  it('no preference or KTO prompt is an SFT prompt', async () => {
    const sftPrompts = new Set((await readRecords(join(dataDir, 'sft-train.jsonl'), parseSftRecord)).flatMap((r) => (r.kind === 'chat' ? r.turns.filter((t) => t.role === 'user').map((t) => t.content) : [])));
    for (const name of ['preference-train.jsonl', 'preference-test.jsonl']) {
      for (const record of await readRecords(join(dataDir, name), parsePreferenceRecord)) assert.ok(!sftPrompts.has(record.prompt[0]!.content), `${name}: ${record.prompt[0]!.content}`);
    }
  });

  const benchmarkSkip = existsSync(benchmarksDir) ? false : `no ${benchmarksDir} (the evaluation benchmarks) in this checkout`;
  if (benchmarkSkip) console.log(`# SKIP: ${benchmarkSkip}`);
  it('is disjoint from the evaluation benchmarks it was checked against, which are unchanged', { skip: benchmarkSkip }, async () => {
    for (const [file, hash] of Object.entries(manifest.disjointness.benchmarkFiles)) {
      const actual = createHash('sha256').update(readFileSync(join(benchmarksDir, file))).digest('hex');
      assert.equal(actual, hash, `benchmarks/${file} changed since data/adapt was built: run node scripts/build-adapt-data.mjs`);
    }
    const disjoint = (await import(join(repoRoot, 'scripts', 'adapt-data', 'disjoint.mjs'))) as { BenchmarkIndex: new (b: unknown) => { conflict(text: string): string | undefined }; readBenchmarkItems(dir: string): unknown };
    const index = new disjoint.BenchmarkIndex(disjoint.readBenchmarkItems(benchmarksDir));
    for (const name of ['sft-train.jsonl', 'sft-valid.jsonl', 'preference-train.jsonl', 'preference-test.jsonl', 'kto-train.jsonl']) {
      for (const line of readFileSync(join(dataDir, name), 'utf8').trim().split('\n')) {
        const row = JSON.parse(line) as Record<string, unknown>;
        const text = Array.isArray(row.messages) ? (row.messages as { content: string }[]).map((m) => m.content).join('\n') : [row.prompt, row.chosen, row.rejected, row.completion].filter(Boolean).join('\n');
        assert.equal(index.conflict(text), undefined, `${name}: ${row.id as string}`);
      }
    }
  });
});
