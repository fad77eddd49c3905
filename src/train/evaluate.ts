/**
 * Validation: cross-entropy per domain and overall, and bits per byte (total negative log-likelihood in bits
 * over the UTF-8 bytes of the predicted tokens; special tokens such as EOS count zero bytes but their loss counts).
 */
import { Tape } from './autograd.js';
import type { PackedLoader } from './data/packed-loader.js';
import type { GemmKernels } from './kernels.js';
import type { TrainModel } from './model.js';
import { byteToUnicode } from '../tokenizer/byte-level.js';

export interface DomainScore {
  readonly domain: string; // "all" for every domain together
  readonly crossEntropy: number; // nats per token
  readonly bitsPerByte: number;
  readonly tokens: number;
}

export interface EvaluateOptions {
  readonly kernels: GemmKernels;
  /** At most this many batches per domain. */
  readonly batches: number;
  readonly tokenBytes: Float64Array;
}

export function evaluate(model: TrainModel, loader: PackedLoader, opts: EvaluateOptions): DomainScore[] {
  const totals = { nats: 0, bytes: 0, tokens: 0 };
  const scores = loader.domains.map((domain) => {
    const sums = { nats: 0, bytes: 0, tokens: 0 };
    let seen = 0;
    for (const batch of loader.validationBatches(domain)) {
      if (seen++ >= opts.batches) break;
      const tape = new Tape('f32', opts.kernels, { grad: false });
      const { crossEntropy } = model.forward(tape, batch.tokens, batch.rows, { loadBalancing: 0, routerZ: 0 });
      const targets = batch.rows * batch.seqLen;
      sums.nats += crossEntropy * targets;
      sums.tokens += targets;
      for (let row = 0; row < batch.rows; row++) {
        for (let s = 1; s <= batch.seqLen; s++) sums.bytes += opts.tokenBytes[batch.tokens[row * (batch.seqLen + 1) + s]!]!;
      }
    }
    totals.nats += sums.nats;
    totals.bytes += sums.bytes;
    totals.tokens += sums.tokens;
    return score(domain, sums);
  });
  return [...scores, score('all', totals)];
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
