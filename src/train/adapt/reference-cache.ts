/**
 * The reference model's sequence log-probs for DPO and KTO, computed once through the inference path and kept on
 * disk, so that only the policy is in memory while training (the "cached reference pass"; TRL's
 * precompute_ref_log_probs does the same in memory).
 *
 * A sequence's value is Σ log p_ref over its masked tokens. Each contiguous masked run becomes one of the
 * harness's loglikelihood requests (context = the tokens before it, continuation = the run), so prefix sharing
 * computes a prompt shared by chosen and rejected once.
 *
 * The cache file is named by a hash of the model fingerprint and of the data (every sequence's ids and mask), so
 * other weights or other data always open another file: a cache is never silently reused for what it was not
 * computed on. Results are appended sequence by sequence (eval/cache.ts ResultCache: a line cut short by a kill
 * is dropped), so an interrupted pass resumes where it stopped.
 */
import { createHash } from 'node:crypto';
import { InputError } from '../../core/errors.js';
import { ResultCache } from '../../eval/cache.js';
import { loglikelihood, type LoglikelihoodRequest } from '../../eval/loglikelihood.js';
import type { OlmoeModel } from '../../model/olmoe.js';
import type { EncodedSequence } from './encode.js';
import { maskRuns } from './show-mask.js';

export interface SequenceLogprob {
  /** Σ log p over the masked tokens (natural log). */
  readonly logprob: number;
  /** Number of masked tokens. */
  readonly tokens: number;
}

export function isSequenceLogprob(value: unknown): value is SequenceLogprob {
  const v = value as SequenceLogprob;
  return typeof v === 'object' && v !== null && typeof v.logprob === 'number' && Number.isFinite(v.logprob) && Number.isSafeInteger(v.tokens) && v.tokens > 0;
}

/** sha256 over every sequence's ids and mask, in order. */
export function dataFingerprint(sequences: readonly EncodedSequence[]): string {
  const hash = createHash('sha256');
  const length = Buffer.alloc(4);
  for (const { tokens, lossMask } of sequences) {
    length.writeUInt32LE(tokens.length);
    hash.update(length).update(new Uint8Array(tokens.buffer, tokens.byteOffset, tokens.byteLength)).update(lossMask);
  }
  return hash.digest('hex');
}

/** One loglikelihood request per contiguous masked run of the sequence. */
export function maskedRequests(sequence: EncodedSequence, index: number): LoglikelihoodRequest[] {
  const tokens = Array.from(sequence.tokens);
  const runs = maskRuns(sequence.lossMask).filter(([, , trained]) => trained);
  if (runs.length === 0) throw new InputError(`sequence ${index} has no masked token: there is nothing to score`);
  return runs.map(([start, end]) => ({ context: tokens.slice(0, start), continuation: tokens.slice(start, end) }));
}

export interface ReferenceCacheOptions {
  /** Folder of cache files (created when missing). */
  dir: string;
  /** Hex digest naming the reference model's weights (the CLI's modelFingerprint). */
  modelFingerprint: string;
  /** Sequences scored between two appends to the cache (keep chosen/rejected pairs in one group: even). */
  group?: number;
  /** Positions per forward pass. */
  chunk?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
}

export interface ReferenceResult {
  readonly values: SequenceLogprob[];
  /** Sequences scored by the model in this call. */
  readonly computed: number;
  /** Sequences taken from the cache file. */
  readonly cached: number;
  readonly path: string;
}

/** The reference log-probs of `sequences`, from the cache where present; the rest scored and appended. */
export async function referenceLogprobs(model: OlmoeModel, sequences: readonly EncodedSequence[], opts: ReferenceCacheOptions): Promise<ReferenceResult> {
  const maxLength = model.config.maxPositionEmbeddings;
  sequences.forEach((s, i) => {
    if (s.tokens.length - 1 > maxLength) throw new InputError(`sequence ${i} has ${s.tokens.length} tokens; the reference model reads at most ${maxLength + 1} (apply max_length)`);
  });
  if (!/^[0-9a-f]{8,64}$/.test(opts.modelFingerprint)) throw new InputError(`model fingerprint ${JSON.stringify(opts.modelFingerprint)} is not a hex digest`);
  // The KV cache's storage changes the numbers: named in the key (the commands score with the exact f32 cache).
  const name = createHash('sha256').update(`${opts.modelFingerprint}\n${dataFingerprint(sequences)}\nkv-cache=${model.kvCacheType}`).digest('hex').slice(0, 32);
  const cache = ResultCache.open(opts.dir, name, isSequenceLogprob);
  const values: SequenceLogprob[] = new Array(sequences.length);
  const pending: number[] = [];
  sequences.forEach((_, i) => {
    const known = cache.get(String(i));
    if (known) values[i] = known;
    else pending.push(i);
  });
  const group = opts.group ?? 32;
  let done = sequences.length - pending.length;
  for (let at = 0; at < pending.length; at += group) {
    const indices = pending.slice(at, at + group);
    const requests = indices.map((i) => maskedRequests(sequences[i]!, i));
    const scored = await loglikelihood(model, requests.flat(), { maxLength, chunk: opts.chunk, signal: opts.signal });
    let next = 0;
    indices.forEach((i, k) => {
      const parts = scored.slice(next, (next += requests[k]!.length));
      const value = { logprob: parts.reduce((sum, r) => sum + r.logprob, 0), tokens: requests[k]!.reduce((sum, r) => sum + r.continuation.length, 0) };
      values[i] = value;
      cache.put(String(i), value);
    });
    done += indices.length;
    opts.onProgress?.(done, sequences.length);
  }
  return { values, computed: pending.length, cached: sequences.length - pending.length, path: cache.path };
}
