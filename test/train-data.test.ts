/**
 * Training data tests: token shard round trip and every validation error, the packed loader against a stream
 * built independently here (coverage per epoch, EOS placement, shuffling, exact resume, bad states), per-domain
 * validation batches, the repeated n-gram filter on hand-computed cases, and the train-tokenizer/shard CLI.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FormatError, InputError, OlmoeError } from '../src/core/errors.js';
import { PackedLoader, type PackedBatch } from '../src/train/data/packed-loader.js';
import { hasRepeatedNgrams, repeatStats } from '../src/train/data/repeat-filter.js';
import { readTokenShard, TokenShardBuilder, type TokenShard } from '../src/train/data/shard.js';
import { cliPath, tempDir } from './helpers.js';

const FINGERPRINT = 'a'.repeat(64);
const EOS = 999;

/** Document d of a shard with base b: tokens b + 100·d + 1 … b + 100·d + length (all distinct, none EOS). */
function docTokens(base: number, d: number, length: number): number[] {
  return Array.from({ length }, (_, i) => base + 100 * d + i + 1);
}

function writeShard(dir: string, name: string, opts: { base: number; lengths: number[]; domains: string[]; domainOf: (d: number) => number; vocabSize?: number }): string {
  const builder = new TokenShardBuilder({ vocabSize: opts.vocabSize ?? 1000, eosId: EOS, domains: opts.domains, tokenizer: FINGERPRINT });
  opts.lengths.forEach((length, d) => builder.add(docTokens(opts.base, d, length), opts.domainOf(d)));
  const path = join(dir, name);
  builder.write(path);
  return path;
}

function assertFails<E extends OlmoeError>(fn: () => unknown, cls: new (...args: never[]) => E, pattern: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof cls, `expected ${cls.name}, got ${(error as Error)?.name}: ${(error as Error)?.message}`);
    assert.match((error as Error).message, pattern);
    return true;
  });
}

test('shard: round trip keeps tokens, documents and header; dtype follows the vocab size', () => {
  const dir = tempDir();
  const path = writeShard(dir, 'a.shard', { base: 0, lengths: [3, 1, 5], domains: ['web', 'code'], domainOf: (d) => d % 2 });
  const shard = readTokenShard(path);
  assert.equal(shard.header.dtype, 'uint16');
  assert.deepEqual([...shard.tokens], [...docTokens(0, 0, 3), ...docTokens(0, 1, 1), ...docTokens(0, 2, 5)]);
  assert.deepEqual([...shard.documents], [0, 3, 0, 3, 1, 1, 4, 5, 0]);
  assert.deepEqual(shard.header.domains, ['web', 'code']);
  assert.equal(shard.header.tokenCount, 9);
  const wide = readTokenShard(writeShard(dir, 'b.shard', { base: 65600, lengths: [2], domains: ['x'], domainOf: () => 0, vocabSize: 70000 }));
  assert.equal(wide.header.dtype, 'uint32');
  assert.deepEqual([...wide.tokens], [65601, 65602]);
  assert.deepEqual(readdirSync(dir).sort(), ['a.shard', 'b.shard']); // no temporary files left
});

/** Rewrite a shard's body with `edit`, then fix the checksum so that only the edited field is wrong. */
function editBody(path: string, edit: (body: Buffer) => void): void {
  const bytes = readFileSync(path);
  const headerLength = bytes.readUInt32LE(12);
  const bodyStart = Math.ceil((16 + headerLength) / 8) * 8;
  const body = bytes.subarray(bodyStart);
  edit(body);
  const header = JSON.parse(bytes.subarray(16, 16 + headerLength).toString('utf8')) as { sha256: string };
  const fixed = bytes.subarray(16, 16 + headerLength).toString('utf8').replace(header.sha256, createHash('sha256').update(body).digest('hex'));
  Buffer.from(fixed).copy(bytes, 16);
  writeFileSync(path, bytes);
}

test('shard: empty, truncated and corrupt files fail with a FormatError naming file and field', () => {
  const dir = tempDir();
  const good = writeShard(dir, 'good.shard', { base: 0, lengths: [4, 4], domains: ['web', 'code'], domainOf: (d) => d });
  const bytes = readFileSync(good);
  const variant = (name: string, content: Uint8Array) => {
    const path = join(dir, name);
    writeFileSync(path, content);
    return path;
  };
  assertFails(() => readTokenShard(variant('empty.shard', new Uint8Array(0))), FormatError, /empty\.shard: empty file/);
  assertFails(() => readTokenShard(variant('short.shard', bytes.subarray(0, 10))), FormatError, /short\.shard: truncated/);
  assertFails(() => readTokenShard(variant('cut.shard', bytes.subarray(0, bytes.length - 4))), FormatError, /cut\.shard: truncated: tokenCount 8 and documentCount 2 need \d+ bytes/);
  const magic = Buffer.from(bytes);
  magic.write('XXXX', 0, 'latin1');
  assertFails(() => readTokenShard(variant('magic.shard', magic)), FormatError, /magic\.shard: magic is "XXXXESHD"/);
  const version = Buffer.from(bytes);
  version.writeUInt32LE(7, 8);
  assertFails(() => readTokenShard(variant('version.shard', version)), FormatError, /version 7 is not supported/);
  const flipped = Buffer.from(bytes);
  flipped[flipped.length - 20]! ^= 1;
  assertFails(() => readTokenShard(variant('flip.shard', flipped)), FormatError, /flip\.shard: sha256 .* corrupt/);
  const header = Buffer.from(bytes);
  header.write('"vocabSize":1e10', header.indexOf('"vocabSize":1000'), 'latin1'); // same length, so offsets hold
  assertFails(() => readTokenShard(variant('header.shard', header)), FormatError, /header\.shard: header field vocabSize is 10000000000, expected an integer in \[1, 4294967296\]/);

  const bigId = variant('id.shard', bytes);
  editBody(bigId, (body) => body.writeUInt16LE(1500, 2));
  assertFails(() => readTokenShard(bigId), FormatError, /id\.shard: token 1 has id 1500, not below vocabSize 1000/);
  const tableStart = 16; // 8 tokens × 2 bytes
  const offset = variant('offset.shard', bytes);
  editBody(offset, (body) => body.writeUInt32LE(5, tableStart + 12)); // document 1 offset 4 → 5
  assertFails(() => readTokenShard(offset), FormatError, /document 1: offset 5, expected 4/);
  const domain = variant('domain.shard', bytes);
  editBody(domain, (body) => body.writeUInt32LE(2, tableStart + 20));
  assertFails(() => readTokenShard(domain), FormatError, /document 1: domain id 2 is not below the 2 domains/);
});

test('shard: the builder rejects ids outside the vocabulary and writing nothing', () => {
  const builder = new TokenShardBuilder({ vocabSize: 10, eosId: 9, domains: ['x'], tokenizer: FINGERPRINT });
  assertFails(() => builder.add([1, 10], 0), InputError, /token id 10 is outside the vocabulary \(size 10\)/);
  assertFails(() => builder.write(join(tempDir(), 'x.shard')), InputError, /no documents to write/);
});

/** The packed stream, built here independently: each document's tokens then EOS, with per-token domains. */
function expectedStream(shards: TokenShard[], domainNames: string[]): { tokens: number[]; domains: number[] } {
  const tokens: number[] = [];
  const domains: number[] = [];
  for (const shard of shards) {
    for (let d = 0; d < shard.header.documentCount; d++) {
      const [offset, length, local] = [shard.documents[3 * d]!, shard.documents[3 * d + 1]!, shard.documents[3 * d + 2]!];
      const domain = domainNames.indexOf(shard.header.domains[local]!);
      for (let i = 0; i < length; i++) (tokens.push(shard.tokens[offset + i]!), domains.push(domain));
      tokens.push(EOS);
      domains.push(domain);
    }
  }
  return { tokens, domains };
}

function twoShards(): TokenShard[] {
  const dir = tempDir();
  return [
    readTokenShard(writeShard(dir, 'a.shard', { base: 0, lengths: [5, 9, 1, 14, 3], domains: ['web', 'code'], domainOf: (d) => d % 2 })),
    readTokenShard(writeShard(dir, 'b.shard', { base: 500, lengths: [7, 2, 11], domains: ['math', 'web'], domainOf: (d) => (d === 1 ? 1 : 0) })),
  ];
}

const rowsOf = (batch: PackedBatch) => Array.from({ length: batch.rows }, (_, r) => Array.from(batch.tokens.subarray(r * (batch.seqLen + 1), (r + 1) * (batch.seqLen + 1))));

test('loader: each epoch covers every sequence exactly once; rows are stream windows with EOS between documents', () => {
  const shards = twoShards();
  const S = 6;
  const loader = new PackedLoader(shards, { seqLen: S, batchSize: 4, seed: 1234 });
  assert.deepEqual(loader.domains, ['web', 'code', 'math']);
  const stream = expectedStream(shards, ['web', 'code', 'math']);
  assert.equal(loader.streamLength, stream.tokens.length); // 52 document tokens + 8 EOS = 60
  assert.equal(loader.sequencesPerEpoch, Math.floor((60 - 1) / S)); // 9 sequences; stream tokens 54..59 are the tail
  const rows: number[][] = [];
  const domainRows: number[][] = [];
  while (rows.length < 3 * loader.sequencesPerEpoch) {
    const batch = loader.nextBatch();
    assert.equal(batch.tokens.length, 4 * (S + 1));
    rows.push(...rowsOf(batch));
    for (let r = 0; r < batch.rows; r++) domainRows.push(Array.from(batch.domains.subarray(r * (S + 1), (r + 1) * (S + 1))));
  }
  const windows = Array.from({ length: 9 }, (_, k) => JSON.stringify(stream.tokens.slice(k * S, k * S + S + 1)));
  const epochs = [0, 1, 2].map((e) => rows.slice(9 * e, 9 * e + 9).map((row) => JSON.stringify(row)));
  for (const epoch of epochs) assert.deepEqual([...epoch].sort(), [...windows].sort());
  const inputs = epochs[0]!.flatMap((row) => (JSON.parse(row) as number[]).slice(0, S)).filter((t) => t !== EOS);
  assert.equal(new Set(inputs).size, inputs.length); // every document token at most once per epoch…
  assert.equal(inputs.length, stream.tokens.slice(0, 9 * S).filter((t) => t !== EOS).length); // …and all before the tail
  assert.notDeepEqual(epochs[0], epochs[1]);
  assert.notDeepEqual(epochs[1], epochs[2]);
  // domains: each row's domains equal the stream's, the EOS after a document carries its domain
  rows.forEach((row, i) => {
    const k = windows.indexOf(JSON.stringify(row));
    assert.deepEqual(domainRows[i], stream.domains.slice(k * S, k * S + S + 1));
  });
  assert.deepEqual(stream.tokens.slice(0, 7), [1, 2, 3, 4, 5, EOS, 101]);
});

test('loader: the same seed gives the same batches, another seed another order', () => {
  const shards = twoShards();
  const take = (seed: number) => Array.from({ length: 5 }, () => rowsOf(new PackedLoader(shards, { seqLen: 5, batchSize: 2, seed }).nextBatch()));
  const a = new PackedLoader(shards, { seqLen: 5, batchSize: 2, seed: 7 });
  const b = new PackedLoader(shards, { seqLen: 5, batchSize: 2, seed: 7 });
  for (let i = 0; i < 12; i++) assert.deepEqual(rowsOf(a.nextBatch()), rowsOf(b.nextBatch()));
  assert.notDeepEqual(take(7), take(8));
});

test('loader: a saved state (through JSON) resumes exactly, across epoch boundaries', () => {
  const shards = twoShards();
  const opts = { seqLen: 4, batchSize: 3, seed: 99 };
  const original = new PackedLoader(shards, opts);
  for (let i = 0; i < 5; i++) original.nextBatch();
  const saved = JSON.stringify(original.state());
  const rest = Array.from({ length: 12 }, () => original.nextBatch());
  const resumed = new PackedLoader(shards, opts);
  resumed.restore(JSON.parse(saved));
  const again = Array.from({ length: 12 }, () => resumed.nextBatch());
  assert.deepEqual(again.map(rowsOf), rest.map(rowsOf));
  assert.deepEqual(again.map((b) => b.epoch), rest.map((b) => b.epoch));
  assert.ok(rest.at(-1)!.epoch >= 2, 'the resumed run crossed epochs');
});

test('loader: bad states and options fail with an InputError naming the field', () => {
  const shards = twoShards();
  const loader = new PackedLoader(shards, { seqLen: 4, batchSize: 3, seed: 99 });
  const state = loader.state();
  assertFails(() => loader.restore(null), InputError, /loader state must be an object/);
  assertFails(() => loader.restore({ ...state, version: 2 }), InputError, /version 2/);
  assertFails(() => loader.restore({ ...state, seed: 100 }), InputError, /loader state seed is 100, this loader has 99/);
  assertFails(() => loader.restore({ ...state, seqLen: 8 }), InputError, /loader state seqLen is 8/);
  assertFails(() => loader.restore({ ...state, data: 'x' }), InputError, /loader state data/);
  assertFails(() => loader.restore({ ...state, position: 1000 }), InputError, /position 1000 is not in \[0, 14\]/);
  assertFails(() => loader.restore({ ...state, epoch: -1 }), InputError, /epoch -1/);
  assertFails(() => new PackedLoader(shards, { seqLen: 0, batchSize: 1, seed: 1 }), InputError, /seqLen 0/);
  assertFails(() => new PackedLoader(shards, { seqLen: 100, batchSize: 1, seed: 1 }), InputError, /fewer than one sequence/);
  assertFails(() => new PackedLoader([], { seqLen: 4, batchSize: 1, seed: 1 }), InputError, /no token shards/);
});

test('loader: validation batches of a domain are its documents in order, without shuffling', () => {
  const shards = twoShards();
  const loader = new PackedLoader(shards, { seqLen: 4, batchSize: 2, seed: 5 });
  const web = expectedStream(shards, ['web', 'code', 'math']);
  const webTokens = web.tokens.filter((_, i) => web.domains[i] === 0);
  const batches = [...loader.validationBatches('web')];
  const rows = batches.flatMap(rowsOf);
  const sequences = Math.floor((webTokens.length - 1) / 4);
  assert.equal(rows.length, sequences);
  rows.forEach((row, k) => assert.deepEqual(row, webTokens.slice(4 * k, 4 * k + 5)));
  assert.ok(batches.every((b) => b.domains.every((d) => d === 0)));
  assert.deepEqual(rowsOf([...loader.validationBatches('web')][0]!), rowsOf(batches[0]!)); // deterministic
  assertFails(() => loader.validationBatches('poetry').next(), InputError, /domain "poetry" is not in the shards \(web, code, math\)/);
});

test('repeat filter: hand-computed statistics; a repetitive document is dropped, normal prose and code are kept', () => {
  // words a b a b a b c: the bigram "a b" repeats three times back to back; words 2..5 (4 of 7 characters) repeat it
  assert.deepEqual(repeatStats('a b a b a b c'), { repeatedFraction: 4 / 7, maxRepeats: 3 });
  assert.deepEqual(repeatStats('the cat sat on the mat'), { repeatedFraction: 0, maxRepeats: 1 });
  assert.deepEqual(repeatStats(''), { repeatedFraction: 0, maxRepeats: 0 });
  const prose =
    'It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife. ' +
    'However little known the feelings or views of such a man may be on his first entering a neighbourhood, this truth is so well ' +
    'fixed in the minds of the surrounding families, that he is considered the rightful property of some one or other of their daughters.';
  const code = 'def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\nif __name__ == "__main__":\n    print(add(1, 2), sub(3, 4))\n';
  assert.equal(hasRepeatedNgrams(prose), false);
  assert.equal(hasRepeatedNgrams(code), false);
  const spam = 'Great offer today. ' + 'buy now '.repeat(40) + 'Call us.';
  assert.ok(repeatStats(spam).maxRepeats >= 40);
  assert.equal(hasRepeatedNgrams(spam), true);
  const pasted = 'Intro line here. ' + 'This sentence was pasted again and again by a broken scraper. '.repeat(4) + 'The end.';
  const stats = repeatStats(pasted);
  assert.ok(stats.maxRepeats === 4 && stats.repeatedFraction > 0.3, JSON.stringify(stats));
  assert.equal(hasRepeatedNgrams(pasted), true);
  assert.equal(hasRepeatedNgrams(pasted, { maxRepeatedFraction: 0.9 }), false);
});

test('cli: train-tokenizer then shard a corpus folder; the shards load and hold the corpus documents', () => {
  const dir = tempDir();
  const corpus = join(dir, 'corpus');
  const docs: Record<string, string[]> = {
    prose: Array.from({ length: 40 }, (_, i) => `Document ${i} tells a short story about the river and the town number ${i % 7}.`),
    code: Array.from({ length: 40 }, (_, i) => `function f${i}(x) {\n  return x * ${i} + 1;\n}`),
  };
  for (const [domain, texts] of Object.entries(docs)) {
    mkdirSync(join(corpus, domain), { recursive: true });
    writeFileSync(join(corpus, domain, 'train.jsonl'), texts.map((text) => JSON.stringify({ text, source: 'test' })).join('\n') + '\n');
    writeFileSync(join(corpus, domain, 'valid.jsonl'), JSON.stringify({ text: `held out ${domain}`, source: 'test' }) + '\n');
  }
  writeFileSync(join(corpus, 'prose', 'test.jsonl'), JSON.stringify({ text: 'spam '.repeat(50), source: 'test' }) + '\n');
  const run = (...args: string[]) => JSON.parse(execFileSync(process.execPath, [cliPath, ...args, '-q'], { encoding: 'utf8' })) as Record<string, unknown>;
  const tok = run('train-tokenizer', corpus, '--out', join(dir, 'tok'), '--vocab-size', '300');
  assert.equal(tok.vocabSize, 300);
  const result = run('shard', corpus, '--tokenizer', join(dir, 'tok'), '--out', join(dir, 'shards'), '--filter-repeats') as { documents: number; droppedRepetitive: number; domains: string[] };
  assert.deepEqual(result.domains, ['code', 'prose']);
  assert.equal(result.documents, 82);
  assert.equal(result.droppedRepetitive, 1);
  assert.deepEqual(readdirSync(join(dir, 'shards')).sort(), ['train-00000.shard', 'valid-00000.shard']);
  const train = readTokenShard(join(dir, 'shards', 'train-00000.shard'));
  assert.equal(train.header.documentCount, 80);
  assert.equal(train.header.vocabSize, 300);
  assert.equal(train.header.eosId, 298);
  assert.equal(train.header.tokenizer, createHash('sha256').update(readFileSync(join(dir, 'tok', 'tokenizer.json'))).digest('hex'));
  const loader = new PackedLoader([train], { seqLen: 16, batchSize: 4, seed: 1 });
  assert.ok(loader.nextBatch().tokens.every((id) => id >= 0 && id < 300));
});
