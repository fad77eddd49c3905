/**
 * A byte-level BPE trainer that writes a tokenizer.json shaped like OLMo's (spec §4.1): NFC normalizer,
 * ByteLevel pre-tokenizer (GPT-2 regex, add_prefix_space false), ByteLevel post-processor and decoder,
 * BPE model with "a b" merges. Ids: 0..255 are the bytes in GPT-2 byte→unicode order (byte b has id b),
 * then one id per merge in merge order, then <|endoftext|> (EOS) and <|padding|> (PAD).
 *
 * Algorithm (Sennrich et al. 2016, as in HF tokenizers' BpeTrainer): count unique pre-tokens, then merge the
 * most frequent adjacent pair repeatedly. Pair counts are updated incrementally from the words that hold the
 * merged pair, and a lazy max-heap picks the next pair: a pair's count never grows after it first appears
 * (a merge only removes occurrences of old pairs and creates pairs with the new token), so a popped entry
 * whose count is stale is pushed again with its current count.
 *
 * Tie-breaking: the highest count wins; among equal counts, the pair whose (left, right) token strings (the
 * byte-level strings written in tokenizer.json) are smallest, comparing left first, then right, by code unit.
 */
import { InputError } from '../core/errors.js';
import { byteToUnicode, EOS_TOKEN, PAD_TOKEN } from './byte-level.js';

export interface BpeTrainerOptions {
  /** Total vocabulary: 256 bytes + merges + 2 special tokens. */
  vocabSize: number;
  /** Stop merging when the best pair occurs fewer times than this (default 2). */
  minFrequency?: number;
  /** At most this many bytes of text per source (a file or a domain), sampled by document (default: all). */
  maxBytesPerSource?: number;
  onProgress?: (progress: { phase: 'merge'; done: number; total: number }) => void;
}

export interface TrainedBpe {
  /** tokenizer.json as text, deterministic for a given input. */
  text: string;
  json: Record<string, unknown>;
  merges: string[];
  vocabSize: number;
  eosId: number;
  padId: number;
  /** Bytes of text counted, unique pre-tokens, and whether merging stopped on minFrequency. */
  stats: { bytes: number; documents: number; uniquePreTokens: number; stoppedEarly: boolean };
}

/** Rust regex's \s is Unicode White_Space; JS's also matches U+FEFF and misses U+0085, so spell it out. */
const SPACE = '\\t\\n\\v\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
/** The GPT-2 pre-tokenizer regex that HF's ByteLevel pre-tokenizer uses with use_regex: true. */
export const GPT2_PRETOKENIZE = new RegExp(
  `'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^${SPACE}\\p{L}\\p{N}]+|[${SPACE}]+(?![^${SPACE}])|[${SPACE}]+`,
  'gu',
);

export const MIN_VOCAB_SIZE = 258;

/** Counts pre-tokens of the documents it is given; train() then learns the merges. */
export class BpeTrainer {
  private readonly preTokens = new Map<string, number>();
  private readonly opts: Required<Omit<BpeTrainerOptions, 'onProgress'>> & Pick<BpeTrainerOptions, 'onProgress'>;
  private bytes = 0;
  private documents = 0;

  constructor(opts: BpeTrainerOptions) {
    if (!Number.isSafeInteger(opts.vocabSize) || opts.vocabSize < MIN_VOCAB_SIZE) {
      throw new InputError(`vocabSize ${opts.vocabSize} is invalid: it must be an integer ≥ ${MIN_VOCAB_SIZE} (256 bytes + 2 special tokens)`);
    }
    const minFrequency = opts.minFrequency ?? 2;
    if (!Number.isSafeInteger(minFrequency) || minFrequency < 1) throw new InputError(`minFrequency ${minFrequency} is invalid: it must be an integer ≥ 1`);
    const maxBytes = opts.maxBytesPerSource ?? Infinity;
    if (!(maxBytes > 0)) throw new InputError(`maxBytesPerSource ${maxBytes} is invalid: it must be > 0`);
    this.opts = { vocabSize: opts.vocabSize, minFrequency, maxBytesPerSource: maxBytes, onProgress: opts.onProgress };
  }

  /**
   * Count one source's documents. With `totalBytes` (the source's size) above maxBytesPerSource, each document is
   * kept with probability maxBytes/totalBytes by a hash of its index, so the sample spreads over the whole source;
   * counting stops once maxBytesPerSource bytes are taken either way.
   */
  addSource(name: string, documents: Iterable<string>, totalBytes?: number): void {
    const take = this.sampler(name, totalBytes);
    for (const text of documents) if (take(text) === 'stop') break;
  }

  /** addSource over an async stream of documents (files read line by line). */
  async addSourceAsync(name: string, documents: AsyncIterable<string>, totalBytes?: number): Promise<void> {
    const take = this.sampler(name, totalBytes);
    for await (const text of documents) if (take(text) === 'stop') break;
  }

  private sampler(name: string, totalBytes: number | undefined): (text: string) => 'taken' | 'skipped' | 'stop' {
    const budget = this.opts.maxBytesPerSource;
    const keep = totalBytes !== undefined && totalBytes > budget ? budget / totalBytes : 1;
    const salt = hashString(name);
    let taken = 0;
    let index = 0;
    return (text) => {
      if (taken >= budget) return 'stop';
      if (keep < 1 && hashIndex(index++, salt) >= keep) return 'skipped';
      taken += this.addDocument(text);
      return 'taken';
    };
  }

  /** Count one document's pre-tokens; returns its UTF-8 size. */
  addDocument(text: string): number {
    const normalized = text.normalize('NFC');
    for (const match of normalized.matchAll(GPT2_PRETOKENIZE)) {
      const piece = match[0];
      this.preTokens.set(piece, (this.preTokens.get(piece) ?? 0) + 1);
    }
    const size = Buffer.byteLength(normalized);
    this.bytes += size;
    this.documents++;
    return size;
  }

  train(): TrainedBpe {
    if (this.preTokens.size === 0) {
      throw new InputError(`BPE training: the corpus is empty (${this.documents} documents, ${this.bytes} bytes of text)`);
    }
    const merger = new PairMerger(this.preTokens, this.opts.vocabSize - MIN_VOCAB_SIZE);
    const target = this.opts.vocabSize - MIN_VOCAB_SIZE;
    while (merger.mergeCount < target) {
      if (!merger.mergeBest(this.opts.minFrequency)) break;
      if (merger.mergeCount % 256 === 0) this.opts.onProgress?.({ phase: 'merge', done: merger.mergeCount, total: target });
    }
    this.opts.onProgress?.({ phase: 'merge', done: merger.mergeCount, total: target });
    const stats = { bytes: this.bytes, documents: this.documents, uniquePreTokens: this.preTokens.size, stoppedEarly: merger.mergeCount < target };
    return tokenizerFile(merger.tokens, merger.merges, stats);
  }
}

/** Train on sources of documents in one call. */
export function trainBpe(sources: Iterable<{ name: string; documents: Iterable<string>; totalBytes?: number }>, opts: BpeTrainerOptions): TrainedBpe {
  const trainer = new BpeTrainer(opts);
  for (const source of sources) trainer.addSource(source.name, source.documents, source.totalBytes);
  return trainer.train();
}

/** The words (unique pre-tokens as symbol ids), pair counts, the words holding each pair, and the heap. */
class PairMerger {
  readonly tokens: string[] = byteToUnicode();
  readonly merges: [number, number][] = [];
  private readonly words: Int32Array[] = [];
  private readonly wordCounts: number[] = [];
  private readonly pairCounts = new Map<number, number>();
  private readonly pairWords = new Map<number, number[]>();
  private readonly visited: Int32Array;
  private readonly stride: number;
  private readonly heap: PairHeap;

  constructor(preTokens: Map<string, number>, maxMerges: number) {
    this.stride = 256 + maxMerges;
    const encoder = new TextEncoder();
    for (const [piece, count] of preTokens) {
      this.words.push(Int32Array.from(encoder.encode(piece)));
      this.wordCounts.push(count);
    }
    this.visited = new Int32Array(this.words.length).fill(-1);
    this.words.forEach((word, w) => this.forEachPair(word, (key) => this.addPair(key, this.wordCounts[w]!, w)));
    this.heap = new PairHeap(this.tokens, this.stride);
    for (const [key, count] of this.pairCounts) this.heap.push(count, key);
  }

  get mergeCount(): number {
    return this.merges.length;
  }

  /** Merge the best pair if it occurs at least minFrequency times; false when none does. */
  mergeBest(minFrequency: number): boolean {
    for (;;) {
      const top = this.heap.pop();
      if (top === undefined) return false;
      const count = this.pairCounts.get(top.key) ?? 0;
      if (count !== top.count) {
        if (count > 0) this.heap.push(count, top.key); // stale: counts only shrink, so re-queue and look again
        continue;
      }
      if (count < minFrequency) return false;
      this.merge(top.key);
      return true;
    }
  }

  private merge(key: number): void {
    const left = Math.floor(key / this.stride);
    const right = key % this.stride;
    const newId = this.tokens.length;
    this.tokens.push(this.tokens[left]! + this.tokens[right]!);
    this.merges.push([left, right]);
    const step = this.merges.length;
    const delta = new Map<number, number>();
    for (const w of this.pairWords.get(key) ?? []) {
      if (this.visited[w] === step) continue;
      this.visited[w] = step;
      const word = this.words[w]!;
      const merged = mergeWord(word, left, right, newId);
      if (merged === word) continue;
      const count = this.wordCounts[w]!;
      this.forEachPair(word, (pair) => delta.set(pair, (delta.get(pair) ?? 0) - count));
      this.forEachPair(merged, (pair) => {
        delta.set(pair, (delta.get(pair) ?? 0) + count);
        if (Math.floor(pair / this.stride) === newId || pair % this.stride === newId) this.notePairWord(pair, w);
      });
      this.words[w] = merged;
    }
    this.pairWords.delete(key);
    for (const [pair, change] of delta) {
      if (change === 0) continue;
      const count = (this.pairCounts.get(pair) ?? 0) + change;
      if (count > 0) this.pairCounts.set(pair, count);
      else this.pairCounts.delete(pair);
      if (change > 0) this.heap.push(count, pair); // only pairs with the new token grow (from 0)
    }
  }

  private forEachPair(word: Int32Array, visit: (key: number) => void): void {
    for (let i = 0; i + 1 < word.length; i++) visit(word[i]! * this.stride + word[i + 1]!);
  }

  private addPair(key: number, count: number, w: number): void {
    this.pairCounts.set(key, (this.pairCounts.get(key) ?? 0) + count);
    this.notePairWord(key, w);
  }

  private notePairWord(key: number, w: number): void {
    const list = this.pairWords.get(key);
    if (list === undefined) this.pairWords.set(key, [w]);
    else if (list[list.length - 1] !== w) list.push(w);
  }
}

/** The word with every non-overlapping (left, right), scanned left to right, replaced by newId; the same array when none. */
function mergeWord(word: Int32Array, left: number, right: number, newId: number): Int32Array {
  let out: number[] | undefined;
  for (let i = 0; i < word.length; i++) {
    if (word[i] === left && word[i + 1] === right && i + 1 < word.length) {
      out ??= Array.from(word.subarray(0, i));
      out.push(newId);
      i++;
    } else if (out !== undefined) {
      out.push(word[i]!);
    }
  }
  return out === undefined ? word : Int32Array.from(out);
}

/** A binary max-heap of (count, pair key) in the tie-breaking order of the file comment. */
class PairHeap {
  private readonly counts: number[] = [];
  private readonly keys: number[] = [];

  constructor(private readonly tokens: readonly string[], private readonly stride: number) {}

  push(count: number, key: number): void {
    this.counts.push(count);
    this.keys.push(key);
    let i = this.counts.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(i, parent)) break;
      this.swap(i, parent);
      i = parent;
    }
  }

  pop(): { count: number; key: number } | undefined {
    if (this.counts.length === 0) return undefined;
    const top = { count: this.counts[0]!, key: this.keys[0]! };
    const lastCount = this.counts.pop()!;
    const lastKey = this.keys.pop()!;
    if (this.counts.length > 0) {
      this.counts[0] = lastCount;
      this.keys[0] = lastKey;
      this.siftDown(0);
    }
    return top;
  }

  private siftDown(i: number): void {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let best = i;
      if (l < this.counts.length && this.before(l, best)) best = l;
      if (r < this.counts.length && this.before(r, best)) best = r;
      if (best === i) return;
      this.swap(i, best);
      i = best;
    }
  }

  /** Does entry i come out before entry j? */
  private before(i: number, j: number): boolean {
    if (this.counts[i] !== this.counts[j]) return this.counts[i]! > this.counts[j]!;
    return comparePairs(this.tokens, this.stride, this.keys[i]!, this.keys[j]!) < 0;
  }

  private swap(i: number, j: number): void {
    [this.counts[i], this.counts[j]] = [this.counts[j]!, this.counts[i]!];
    [this.keys[i], this.keys[j]] = [this.keys[j]!, this.keys[i]!];
  }
}

function comparePairs(tokens: readonly string[], stride: number, a: number, b: number): number {
  const leftA = tokens[Math.floor(a / stride)]!;
  const leftB = tokens[Math.floor(b / stride)]!;
  if (leftA !== leftB) return leftA < leftB ? -1 : 1;
  const rightA = tokens[a % stride]!;
  const rightB = tokens[b % stride]!;
  return rightA === rightB ? 0 : rightA < rightB ? -1 : 1;
}

/** The tokenizer.json object and its text; vocab is written in id order. */
function tokenizerFile(tokens: readonly string[], merges: readonly [number, number][], stats: TrainedBpe['stats']): TrainedBpe {
  const eosId = tokens.length;
  const padId = tokens.length + 1;
  const allTokens = [...tokens, EOS_TOKEN, PAD_TOKEN];
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
  const mergeStrings = merges.map(([left, right]) => `${tokens[left]} ${tokens[right]}`);
  const model = { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab: '\u0000VOCAB', merges: mergeStrings };
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(eosId, EOS_TOKEN), special(padId, PAD_TOKEN)],
    normalizer: { type: 'NFC' },
    pre_tokenizer: byteLevel,
    post_processor: byteLevel,
    decoder: byteLevel,
    model,
  };
  // JS objects list integer-like keys ("12") first, so the vocab is written by hand to keep id order.
  const vocabText = `{\n${allTokens.map((token, id) => `      ${JSON.stringify(token)}: ${id}`).join(',\n')}\n    }`;
  const text = JSON.stringify(json, null, 2).replace('"\\u0000VOCAB"', vocabText) + '\n';
  const vocab = Object.fromEntries(allTokens.map((token, id) => [token, id]));
  return { text, json: { ...json, model: { ...model, vocab } }, merges: mergeStrings, vocabSize: allTokens.length, eosId, padId, stats };
}

/** FNV-1a of a string's code units. */
function hashString(text: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return hash;
}

/** A well-mixed uniform value in [0, 1) from a document index and a salt (murmur3's finaliser). */
function hashIndex(index: number, salt: number): number {
  let h = (index ^ salt) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return ((h ^ (h >>> 16)) >>> 0) / 4294967296;
}
