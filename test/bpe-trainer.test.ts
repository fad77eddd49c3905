/**
 * BPE trainer tests: merges derived by hand on tiny corpora, an independent naive trainer (full recount per merge)
 * on a larger corpus, the written tokenizer.json loaded by the project's tokenizer (round trip, merges applied),
 * exact vocab size, determinism, and input errors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../src/core/errors.js';
import { BpeTrainer, trainBpe, type TrainedBpe } from '../src/tokenizer/bpe-trainer.js';
import { OlmoeTokenizer } from '../src/tokenizer/tokenizer.js';
import { loadTokenizer } from '../src/model/pretrained.js';
import { tempDir } from './helpers.js';

const train = (texts: string[], vocabSize: number, minFrequency = 1): TrainedBpe => trainBpe([{ name: 'test', documents: texts }], { vocabSize, minFrequency });
const load = (trained: TrainedBpe) => new OlmoeTokenizer(JSON.parse(trained.text) as Record<string, unknown>);

test('bpe: merges on a tiny corpus equal the ones derived by hand', () => {
  // "ab ab ab abc" → pre-tokens ab, Ġab ×2, Ġabc. Pairs: (a,b) 4, (Ġ,a) 3, (b,c) 1 → "a b";
  // then (Ġ,ab) 3, (ab,c) 1 → "Ġ ab"; then (Ġab,c) 1 → "Ġab c".
  assert.deepEqual(train(['ab ab ab abc'], 256 + 3 + 2).merges, ['a b', 'Ġ ab', 'Ġab c']);
  // All counts 1: (b,a) < (d,c) < (Ġ,d) by token strings (Ġ is U+0120); after "d c" the pair is (Ġ,dc).
  assert.deepEqual(train(['ba dc'], 256 + 3 + 2).merges, ['b a', 'd c', 'Ġ dc']);
  // minFrequency 2 stops after the pairs seen twice or more.
  assert.deepEqual(train(['ab ab ab abc'], 300, 2).merges, ['a b', 'Ġ ab']);
});

test('bpe: the loaded tokenizer applies the learned merges and ids follow the spec layout', () => {
  const trained = train(['ab ab ab abc'], 261);
  const tok = load(trained);
  assert.equal(tok.vocabSize, 261);
  assert.deepEqual(tok.encode('ab ab abc').map((id) => tok.idToToken(id)), ['ab', 'Ġab', 'Ġabc']);
  assert.deepEqual(tok.encode('ab ab abc'), [256, 257, 258]);
  assert.equal(tok.tokenId('<|endoftext|>'), 259);
  assert.equal(tok.tokenId('<|padding|>'), 260);
  assert.equal(tok.idToToken(0x41), 'A'); // byte b has id b
  assert.equal(tok.idToToken(0x20), 'Ġ');
  assert.deepEqual(tok.encode('ba'), [0x62, 0x61]); // no merge learned for it
});

/** An independent trainer: recount every pair before each merge (whitespace-split words, ASCII text only). */
function naiveMerges(text: string, merges: number): string[] {
  const toChar = (c: string) => (c === ' ' ? 'Ġ' : c === '\n' ? 'Ċ' : c);
  const pieces = text.match(/ ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+/g) ?? [];
  const words = pieces.map((piece) => [...piece].map(toChar));
  const result: string[] = [];
  for (let m = 0; m < merges; m++) {
    const counts = new Map<string, number>();
    for (const word of words) for (let i = 0; i + 1 < word.length; i++) counts.set(`${word[i]} ${word[i + 1]}`, (counts.get(`${word[i]} ${word[i + 1]}`) ?? 0) + 1);
    let best: [string, string] | undefined;
    let bestCount = 0;
    for (const [pair, count] of counts) {
      const [l, r] = pair.split(' ') as [string, string];
      if (count > bestCount || (count === bestCount && best && (l < best[0] || (l === best[0] && r < best[1])))) [best, bestCount] = [[l, r], count];
    }
    if (!best) break;
    result.push(best.join(' '));
    for (const word of words) {
      for (let i = 0; i + 1 < word.length; i++) if (word[i] === best[0] && word[i + 1] === best[1]) word.splice(i, 2, best[0] + best[1]);
    }
  }
  return result;
}

function syntheticCorpus(): string {
  const words = ['the', 'then', 'there', 'other', 'mother', 'moth', 'thermal', 'ant', 'anthem', 'pant', 'x1', 'x12', 'x123', 'aaaa', 'aaa', 'a'];
  let state = 7;
  const next = () => (state = (Math.imul(state, 1103515245) + 12345) >>> 0) % 65536;
  const out: string[] = [];
  const letters = 'etaoinshrdlu';
  const randomWord = () => Array.from({ length: 2 + (next() % 6) }, () => letters[next() % letters.length]).join('');
  for (let i = 0; i < 3000; i++) {
    const word = next() % 3 === 0 ? randomWord() : words[next() % words.length]!;
    out.push(word + (next() % 11 === 0 ? '.\n' : next() % 7 === 0 ? ', ' : ' '));
  }
  return out.join('');
}

test('bpe: incremental merges equal an independent full-recount trainer', () => {
  const corpus = syntheticCorpus();
  const trained = train([corpus], 258 + 150);
  assert.deepEqual(trained.merges, naiveMerges(corpus, 150));
});

/** GPT-2 BPE encoding of one pre-token by merge rank (lowest rank first), written independently of both libraries. */
function naiveEncode(piece: string, ranks: Map<string, number>): string[] {
  let symbols = [...piece].map((c) => (c === ' ' ? 'Ġ' : c === '\n' ? 'Ċ' : c));
  for (;;) {
    let best = -1;
    for (let i = 0; i + 1 < symbols.length; i++) {
      const rank = ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
      if (rank !== undefined && (best < 0 || rank < ranks.get(`${symbols[best]} ${symbols[best + 1]}`)!)) best = i;
    }
    if (best < 0) return symbols;
    const [l, r] = [symbols[best]!, symbols[best + 1]!];
    const next: string[] = [];
    for (let i = 0; i < symbols.length; i++) {
      if (symbols[i] === l && symbols[i + 1] === r) (next.push(l + r), i++);
      else next.push(symbols[i]!);
    }
    symbols = next;
  }
}

test('bpe: the loaded tokenizer encodes training text exactly as the merge ranks say', () => {
  const corpus = syntheticCorpus();
  const trained = train([corpus], 500);
  const tok = load(trained);
  const ranks = new Map(trained.merges.map((merge, rank) => [merge, rank]));
  const text = corpus.slice(0, 4000);
  const pieces = text.match(/ ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+/g) ?? [];
  const expected = pieces.flatMap((piece) => naiveEncode(piece, ranks));
  assert.deepEqual(tok.encode(text).map((id) => tok.idToToken(id)), expected);
});

test('bpe: round trip through the loaded tokenizer on mixed text; merged tokens are used', () => {
  const corpus = [
    'The quick brown fox jumps over the lazy dog. The dog sleeps.\n\nIt was the best of times, it was the worst of times.',
    'def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(add(i, i))\n',
    'Ünïcödé: 生活的真谛是 — naïve café, emoji 🎉🎉 and tabs\tand  double  spaces   end',
    'const x = { key: "value", n: 42 };\r\nconsole.log(x);',
  ];
  const tok = load(train(corpus, 400));
  for (const text of [...corpus, '  leading and trailing  ', 'e\u0301 composed', '\n\n\n', 'unseen words: zyxwvut ∑∫√ 𝔘𝔫𝔦']) {
    assert.equal(tok.decode(tok.encode(text)), text.normalize('NFC'), JSON.stringify(text));
  }
  const ids = tok.encode(corpus[0]!);
  assert.ok(ids.length < Buffer.byteLength(corpus[0]!) / 2, `merges shorten the training text (${ids.length} ids)`);
  assert.ok(ids.some((id) => id >= 256));
});

test('bpe: vocab size is exact and training is deterministic', () => {
  const corpus = syntheticCorpus();
  const a = train([corpus], 300, 2);
  const b = train([corpus], 300, 2);
  assert.equal(a.vocabSize, 300);
  assert.equal(Object.keys((a.json.model as { vocab: object }).vocab).length, 300);
  assert.equal(a.merges.length, 300 - 258);
  assert.equal(a.text, b.text);
  assert.ok(!a.stats.stoppedEarly);
});

test('bpe: the written file loads through loadTokenizer from a folder', async () => {
  const dir = tempDir();
  const trained = train([syntheticCorpus()], 300);
  writeFileSync(join(dir, 'tokenizer.json'), trained.text);
  const tok = await loadTokenizer(dir);
  assert.equal(tok.vocabSize, 300);
  assert.equal(tok.decode(tok.encode('the mother thermal x123')), 'the mother thermal x123');
});

test('bpe: bad input names the value', () => {
  assert.throws(() => new BpeTrainer({ vocabSize: 257 }), (e: unknown) => e instanceof InputError && /vocabSize 257/.test(e.message));
  assert.throws(() => new BpeTrainer({ vocabSize: 300, minFrequency: 0 }), (e: unknown) => e instanceof InputError && /minFrequency 0/.test(e.message));
  assert.throws(() => train([], 300), (e: unknown) => e instanceof InputError && /corpus is empty/.test(e.message));
  assert.throws(() => train(['', ''], 300), (e: unknown) => e instanceof InputError && /2 documents, 0 bytes/.test(e.message));
});

test('bpe: maxBytesPerSource caps the text counted per source', () => {
  const docs = Array.from({ length: 1000 }, (_, i) => `document number ${i} with some words`);
  const trainer = new BpeTrainer({ vocabSize: 300, maxBytesPerSource: 2000 });
  trainer.addSource('a', docs, docs.reduce((n, d) => n + d.length, 0));
  const stats = trainer.train().stats;
  assert.ok(stats.bytes <= 2000 + 40 && stats.bytes >= 1000, `${stats.bytes} bytes`);
  assert.ok(stats.documents < 100);
});
