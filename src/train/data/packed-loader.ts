/**
 * Packed training batches over token shards (B batch rows, S sequence length).
 *
 * The stream is every document of every shard, in shard order, each followed by EOS. Sequence k is the S + 1
 * stream tokens starting at k·S: inputs are its first S tokens, next-token targets its last S, so consecutive
 * sequences share one token. An epoch has N = floor((L - 1) / S) sequences for a stream of L tokens; the last
 * (L - 1) mod S stream tokens never start an input position in any epoch (the tail remainder).
 *
 * Each epoch visits the N sequences once, in the order of a Fisher–Yates shuffle seeded by (seed, epoch).
 * Batches take B consecutive sequences of that order and run on into the next epoch, so every batch is full
 * and the position (epoch, index in the epoch's order) is the whole state: restore() resumes exactly.
 */
import { createHash } from 'node:crypto';
import { InputError } from '../../core/errors.js';
import { createRng } from '../../core/rng.js';
import { readTokenShard, type TokenShard } from './shard.js';

export interface PackedBatch {
  /** [rows, S + 1] token ids, row-major. */
  tokens: Int32Array;
  /** [rows, S + 1] domain id of each token (an EOS belongs to the document it ends). */
  domains: Int32Array;
  rows: number;
  seqLen: number;
  /** Epoch of the first row. */
  epoch: number;
}

export interface LoaderState {
  version: 1;
  epoch: number;
  position: number;
  seed: number;
  seqLen: number;
  sequencesPerEpoch: number;
  /** sha256 over the shards' checksums, so a state cannot be restored onto other data. */
  data: string;
}

export interface PackedLoaderOptions {
  seqLen: number;
  batchSize: number;
  seed: number;
}

/** Documents laid end to end with EOS after each, addressable by stream position. */
class DocumentStream {
  readonly starts: Float64Array;
  readonly length: number;

  constructor(
    private readonly shards: readonly TokenShard[],
    private readonly docs: { shard: Int32Array; doc: Int32Array; domain: Int32Array },
    private readonly eosId: number,
  ) {
    this.starts = new Float64Array(docs.shard.length + 1);
    for (let d = 0; d < docs.shard.length; d++) this.starts[d + 1] = this.starts[d]! + this.docLength(d) + 1;
    this.length = this.starts[docs.shard.length]!;
  }

  private docLength(d: number): number {
    return this.shards[this.docs.shard[d]!]!.documents[3 * this.docs.doc[d]! + 1]!;
  }

  /** Copy stream[start, start + count) into tokens/domains at `at`. */
  copy(start: number, count: number, tokens: Int32Array, domains: Int32Array, at: number): void {
    let d = this.findDocument(start);
    let position = start;
    const end = start + count;
    while (position < end) {
      const shard = this.shards[this.docs.shard[d]!]!;
      const offset = shard.documents[3 * this.docs.doc[d]!]!;
      const length = shard.documents[3 * this.docs.doc[d]! + 1]!;
      const domain = this.docs.domain[d]!;
      const inDoc = position - this.starts[d]!;
      const take = Math.min(length - inDoc, end - position);
      if (take > 0) {
        tokens.set(shard.tokens.subarray(offset + inDoc, offset + inDoc + take), at);
        domains.fill(domain, at, at + take);
        at += take;
        position += take;
      }
      if (position < end) {
        tokens[at] = this.eosId;
        domains[at++] = domain;
        position++;
      }
      d++;
    }
  }

  /** The document whose span (tokens + EOS) holds stream position p. */
  private findDocument(p: number): number {
    let lo = 0;
    let hi = this.starts.length - 2;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.starts[mid]! <= p) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  }
}

interface Catalogue {
  shards: readonly TokenShard[];
  domains: string[];
  eosId: number;
  vocabSize: number;
  docs: { shard: Int32Array; doc: Int32Array; domain: Int32Array };
  fingerprint: string;
}

/** All documents of the shards with global domain ids (domain names united in order of appearance). */
function catalogue(shards: readonly TokenShard[]): Catalogue {
  if (shards.length === 0) throw new InputError('no token shards given');
  const first = shards[0]!.header;
  for (const shard of shards) {
    for (const key of ['vocabSize', 'eosId', 'tokenizer'] as const) {
      if (shard.header[key] !== first[key]) throw new InputError(`${shard.path}: ${key} ${shard.header[key]} differs from ${shards[0]!.path}'s ${first[key]}: shards from different tokenizers cannot be mixed`);
    }
  }
  const domains: string[] = [];
  const total = shards.reduce((n, s) => n + s.header.documentCount, 0);
  const docs = { shard: new Int32Array(total), doc: new Int32Array(total), domain: new Int32Array(total) };
  let d = 0;
  shards.forEach((shard, s) => {
    const globalIds = shard.header.domains.map((name) => (domains.includes(name) ? domains.indexOf(name) : domains.push(name) - 1));
    for (let i = 0; i < shard.header.documentCount; i++, d++) {
      docs.shard[d] = s;
      docs.doc[d] = i;
      docs.domain[d] = globalIds[shard.documents[3 * i + 2]!]!;
    }
  });
  const fingerprint = createHash('sha256').update(shards.map((s) => s.header.sha256).join(',')).digest('hex');
  return { shards, domains, eosId: first.eosId, vocabSize: first.vocabSize, docs, fingerprint };
}

function checkPositiveInteger(name: string, value: number): void {
  if (!Number.isSafeInteger(value) || value < 1) throw new InputError(`${name} ${value} is invalid: it must be a positive integer`);
}

export class PackedLoader {
  readonly domains: readonly string[];
  readonly eosId: number;
  readonly vocabSize: number;
  readonly sequencesPerEpoch: number;
  readonly seqLen: number;
  readonly batchSize: number;
  private readonly seed: number;
  private readonly stream: DocumentStream;
  private readonly catalogue: Catalogue;
  private epoch = 0;
  private position = 0;
  private order: Uint32Array | undefined;
  private orderEpoch = -1;

  constructor(shards: readonly TokenShard[], opts: PackedLoaderOptions) {
    checkPositiveInteger('seqLen', opts.seqLen);
    checkPositiveInteger('batchSize', opts.batchSize);
    if (!Number.isSafeInteger(opts.seed) || opts.seed < 0 || opts.seed >= 2 ** 32) throw new InputError(`seed ${opts.seed} is invalid: it must be an integer in [0, 2^32)`);
    this.catalogue = catalogue(shards);
    this.domains = this.catalogue.domains;
    this.eosId = this.catalogue.eosId;
    this.vocabSize = this.catalogue.vocabSize;
    this.seqLen = opts.seqLen;
    this.batchSize = opts.batchSize;
    this.seed = opts.seed;
    this.stream = new DocumentStream(shards, this.catalogue.docs, this.eosId);
    this.sequencesPerEpoch = Math.floor((this.stream.length - 1) / this.seqLen);
    if (this.sequencesPerEpoch < 1) throw new InputError(`the shards hold ${this.stream.length} stream tokens, fewer than one sequence of seqLen + 1 = ${this.seqLen + 1}`);
  }

  /** Read and validate the shard files, in the order given (the order fixes the stream). */
  static open(paths: readonly string[], opts: PackedLoaderOptions): PackedLoader {
    return new PackedLoader(paths.map(readTokenShard), opts);
  }

  /** Total stream tokens (documents + one EOS each). */
  get streamLength(): number {
    return this.stream.length;
  }

  nextBatch(): PackedBatch {
    const width = this.seqLen + 1;
    const tokens = new Int32Array(this.batchSize * width);
    const domains = new Int32Array(this.batchSize * width);
    const epoch = this.epoch;
    for (let row = 0; row < this.batchSize; row++) {
      if (this.position === this.sequencesPerEpoch) {
        this.epoch++;
        this.position = 0;
      }
      const sequence = this.epochOrder(this.epoch)[this.position++]!;
      this.stream.copy(sequence * this.seqLen, width, tokens, domains, row * width);
    }
    return { tokens, domains, rows: this.batchSize, seqLen: this.seqLen, epoch };
  }

  /** Where the next batch starts; JSON-serialisable. */
  state(): LoaderState {
    return { version: 1, epoch: this.epoch, position: this.position, seed: this.seed, seqLen: this.seqLen, sequencesPerEpoch: this.sequencesPerEpoch, data: this.catalogue.fingerprint };
  }

  restore(state: unknown): void {
    const s = state as Record<string, unknown>;
    if (typeof s !== 'object' || s === null) throw new InputError('loader state must be an object');
    if (s.version !== 1) throw new InputError(`loader state version ${JSON.stringify(s.version)} is not supported (expected 1)`);
    const expected = { seed: this.seed, seqLen: this.seqLen, sequencesPerEpoch: this.sequencesPerEpoch, data: this.catalogue.fingerprint };
    for (const [key, value] of Object.entries(expected)) {
      if (s[key] !== value) throw new InputError(`loader state ${key} is ${JSON.stringify(s[key])}, this loader has ${JSON.stringify(value)}: the state belongs to other data or settings`);
    }
    if (!Number.isSafeInteger(s.epoch) || (s.epoch as number) < 0) throw new InputError(`loader state epoch ${JSON.stringify(s.epoch)} is not a non-negative integer`);
    if (!Number.isSafeInteger(s.position) || (s.position as number) < 0 || (s.position as number) > this.sequencesPerEpoch) {
      throw new InputError(`loader state position ${JSON.stringify(s.position)} is not in [0, ${this.sequencesPerEpoch}]`);
    }
    this.epoch = s.epoch as number;
    this.position = s.position as number;
  }

  /** Validation batches of one domain: its documents in order, non-overlapping S + 1 windows, no shuffle; the last batch may have fewer rows. */
  *validationBatches(domain: string, batchSize = this.batchSize): Generator<PackedBatch> {
    const domainId = this.domains.indexOf(domain);
    if (domainId < 0) throw new InputError(`domain ${JSON.stringify(domain)} is not in the shards (${this.domains.join(', ')})`);
    checkPositiveInteger('batchSize', batchSize);
    const { docs } = this.catalogue;
    const keep = docs.domain.reduce<number[]>((list, id, d) => (id === domainId ? (list.push(d), list) : list), []);
    const pick = (array: Int32Array) => Int32Array.from(keep, (d) => array[d]!);
    const stream = new DocumentStream(this.catalogue.shards, { shard: pick(docs.shard), doc: pick(docs.doc), domain: pick(docs.domain) }, this.eosId);
    const sequences = Math.floor((stream.length - 1) / this.seqLen);
    const width = this.seqLen + 1;
    for (let first = 0; first < sequences; first += batchSize) {
      const rows = Math.min(batchSize, sequences - first);
      const tokens = new Int32Array(rows * width);
      const domains = new Int32Array(rows * width);
      for (let row = 0; row < rows; row++) stream.copy((first + row) * this.seqLen, width, tokens, domains, row * width);
      yield { tokens, domains, rows, seqLen: this.seqLen, epoch: 0 };
    }
  }

  /** The epoch's sequence order: a Fisher–Yates shuffle from an RNG seeded by (seed, epoch). */
  private epochOrder(epoch: number): Uint32Array {
    if (this.orderEpoch === epoch && this.order) return this.order;
    const order = Uint32Array.from({ length: this.sequencesPerEpoch }, (_, i) => i);
    const rng = createRng(mixSeed(this.seed, epoch));
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(rng() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    this.order = order;
    this.orderEpoch = epoch;
    return order;
  }
}

/** One 32-bit RNG seed per (seed, epoch) (murmur3 finaliser over seed ⊕ epoch·golden ratio). */
function mixSeed(seed: number, epoch: number): number {
  let h = (seed ^ Math.imul(epoch + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}
