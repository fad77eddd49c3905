/**
 * Validation: cross-entropy per domain and overall, and bits per byte (total negative log-likelihood in bits
 * over the UTF-8 bytes of the predicted tokens; special tokens such as EOS count zero bytes but their loss counts).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { withIo } from '../core/errors.js';
import { loadParams, readArchitecture } from './checkpoint.js';
import { PackedLoader, type PackedBatch } from './data/packed-loader.js';
import { readShardsFor } from './data/shard.js';
import { TrainModel } from './model.js';
import type { TokenShard } from './data/shard.js';
import type { TrainingBackend } from '../core/training.js';
import { byteToUnicode } from '../tokenizer/byte-level.js';

export interface DomainScore {
  readonly domain: string; // "all" for every domain together
  readonly crossEntropy: number; // nats per token
  readonly bitsPerByte: number;
  readonly tokens: number;
}

export interface EvaluateOptions {
  /** At most this many batches per domain. */
  readonly batches: number;
  readonly tokenBytes: Float64Array;
}

export function evaluate(model: TrainModel, loader: PackedLoader, opts: EvaluateOptions): DomainScore[] {
  return scoreDomains(loader, opts, (batch) => {
    return model.forward(model.backend, { tokens: batch.tokens, sequences: batch.rows }, { loadBalancing: 0, routerZ: 0 }).crossEntropy * batch.rows * batch.seqLen;
  });
}

/** Per domain and overall: the summed negative log-likelihood `natsOf` gives each validation batch, per token and per byte. */
function scoreDomains(loader: PackedLoader, opts: Pick<EvaluateOptions, 'batches' | 'tokenBytes'>, natsOf: (batch: PackedBatch) => number): DomainScore[] {
  const totals = { nats: 0, bytes: 0, tokens: 0 };
  const scores = loader.domains.map((domain) => {
    const sums = { nats: 0, bytes: 0, tokens: 0 };
    let seen = 0;
    for (const batch of loader.validationBatches(domain)) {
      if (seen++ >= opts.batches) break;
      sums.nats += natsOf(batch);
      forEachTarget(batch, (id) => {
        sums.bytes += opts.tokenBytes[id]!;
        sums.tokens++;
      });
    }
    totals.nats += sums.nats;
    totals.bytes += sums.bytes;
    totals.tokens += sums.tokens;
    return score(domain, sums);
  });
  return [...scores, score('all', totals)];
}

/** The predicted ids of a batch: positions 1..S of every row. */
function forEachTarget(batch: PackedBatch, visit: (id: number) => void): void {
  for (let row = 0; row < batch.rows; row++) for (let s = 1; s <= batch.seqLen; s++) visit(batch.tokens[row * (batch.seqLen + 1) + s]!);
}

function score(domain: string, sums: { nats: number; bytes: number; tokens: number }): DomainScore {
  return { domain, crossEntropy: sums.nats / sums.tokens, bitsPerByte: sums.nats / Math.LN2 / sums.bytes, tokens: sums.tokens };
}

/** UTF-8 bytes each token id stands for in a byte-level BPE tokenizer.json (added/special tokens: 0). */
export function tokenByteLengths(tokenizerJson: string, vocabSize: number): Float64Array {
  const json = JSON.parse(tokenizerJson) as { model?: { vocab?: Record<string, number> }; added_tokens?: { id: number; special?: boolean }[] };
  const byteChars = new Set(byteToUnicode());
  const lengths = new Float64Array(vocabSize);
  for (const [token, id] of Object.entries(json.model?.vocab ?? {})) {
    // Each character of a byte-level token is one byte (GPT-2's byte → unicode map).
    if (id < vocabSize) lengths[id] = [...token].filter((c) => byteChars.has(c)).length;
  }
  for (const added of json.added_tokens ?? []) if (added.id < vocabSize) lengths[added.id] = 0;
  return lengths;
}

/**
 * The unigram baseline on the same validation windows: −log p(token) with p from the training shards' token
 * counts (add-one smoothed over the vocabulary, EOS counted once per document), per domain and overall.
 */
export function unigramScores(trainShards: readonly TokenShard[], loader: PackedLoader, opts: Pick<EvaluateOptions, 'batches' | 'tokenBytes'>): DomainScore[] {
  const vocab = opts.tokenBytes.length;
  const counts = new Float64Array(vocab).fill(1);
  for (const shard of trainShards) {
    for (const id of shard.tokens) counts[id]!++;
    counts[shard.header.eosId]! += shard.header.documentCount;
  }
  const total = counts.reduce((a, b) => a + b, 0);
  const nll = Float64Array.from(counts, (c) => -Math.log(c / total));
  return scoreDomains(loader, opts, (batch) => {
    let nats = 0;
    forEachTarget(batch, (id) => (nats += nll[id]!));
    return nats;
  });
}

export interface CheckpointEvalOptions {
  readonly backend: TrainingBackend;
  /** Default: min(256, max_position_embeddings). */
  readonly sequenceLength?: number;
  readonly batchSize: number;
  readonly maxBatches?: number;
  /** Training shards: also report the unigram baseline on the same windows. */
  readonly baselineShards?: readonly string[];
}

/** Validation CE and bits per byte per domain of an HF checkpoint on token shards (and the unigram baseline). */
export function evaluateCheckpoint(dir: string, shardPaths: readonly string[], opts: CheckpointEvalOptions): { model: DomainScore[]; unigram?: DomainScore[] } {
  const arch = readArchitecture(dir);
  const { config } = arch;
  const model = new TrainModel(arch, opts.backend);
  loadParams(model, dir);
  const tokenizerJson = withIo(join(dir, 'tokenizer.json'), 'read', () => readFileSync(join(dir, 'tokenizer.json'), 'utf8'));
  const tokenBytes = tokenByteLengths(tokenizerJson, config.vocabSize);
  const shards = (paths: readonly string[]) => readShardsFor(paths, tokenizerJson, config.vocabSize);
  const seqLen = opts.sequenceLength ?? Math.min(256, config.maxPositionEmbeddings);
  const loader = new PackedLoader(shards(shardPaths), { seqLen, batchSize: opts.batchSize, seed: 0 });
  const batches = opts.maxBatches ?? Infinity;
  const result = evaluate(model, loader, { batches, tokenBytes });
  return { model: result, unigram: opts.baselineShards ? unigramScores(shards(opts.baselineShards), loader, { batches, tokenBytes }) : undefined };
}
