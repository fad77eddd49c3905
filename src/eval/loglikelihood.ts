/**
 * lm-evaluation-harness's scoring requests over an OlmoeModel, at the token level:
 * - loglikelihood(context, continuation) → Σ log p(continuation | context) and whether greedy decoding would
 *   produce the continuation. As in the harness, the input is (context + continuation) without its last token,
 *   truncated from the left to the model's length; the final continuation token is never fed.
 * - rolling windows over a whole text (the harness's get_rolling_token_windows + make_disjoint_window), scored
 *   through the same path, so every token is predicted exactly once.
 *
 * Prefix sharing: requests run in lexicographic order of their inputs, and each starts from the KV cache the
 * previous one left, rewound to their common prefix. A few-shot prefix shared by a task's questions, and a
 * question shared by its answer choices, are each computed once. Only the scored positions produce logits.
 * Dimension legend: T tokens, V vocab.
 */
import { AbortError, InputError } from '../core/errors.js';
import type { KVCache } from '../core/backend.js';
import type { OlmoeModel } from '../model/olmoe.js';
import { requestKey, type ResultCache } from './cache.js';

export interface LoglikelihoodRequest {
  readonly context: readonly number[];
  readonly continuation: readonly number[];
}

export interface LoglikelihoodResult {
  /** Σ over the continuation's tokens of log p(token | everything before it), natural log. */
  readonly logprob: number;
  /** Every continuation token is the argmax (first index on ties) of its position's logits. */
  readonly isGreedy: boolean;
  /** Context tokens dropped from the left to fit the model's length. */
  readonly truncated: number;
}

export interface ScoreOptions {
  /** Longest input fed to the model (default: max_position_embeddings). */
  maxLength?: number;
  /** Reuse the KV cache across requests that share a prefix (default true). Off: each request from scratch. */
  prefixSharing?: boolean;
  /** Positions per forward pass (bounds the [T, V] logits held at once). */
  chunk?: number;
  signal?: AbortSignal;
  onProgress?: (done: number, total: number) => void;
  /** Results already scored for this model are taken from here, new ones are added. */
  cache?: ResultCache<LoglikelihoodResult>;
}

export function isLoglikelihoodResult(value: unknown): value is LoglikelihoodResult {
  const v = value as LoglikelihoodResult;
  return typeof v === 'object' && v !== null && typeof v.logprob === 'number' && typeof v.isGreedy === 'boolean' && Number.isSafeInteger(v.truncated);
}

const DEFAULT_CHUNK = 256;

interface Item {
  index: number;
  /** (context + continuation)[:-1], left-truncated to maxLength. */
  input: number[];
  continuation: readonly number[];
  /** First input position whose logits predict a continuation token. */
  scoreFrom: number;
  truncated: number;
}

/** Score every request; results in request order. Yields to the event loop between requests. */
export async function loglikelihood(model: OlmoeModel, requests: readonly LoglikelihoodRequest[], opts: ScoreOptions = {}): Promise<LoglikelihoodResult[]> {
  const maxLength = opts.maxLength ?? model.config.maxPositionEmbeddings;
  const items = requests.map((request, index) => prepare(request, index, maxLength, model.config.vocabSize));
  const results: LoglikelihoodResult[] = new Array(items.length);
  const keys = opts.cache && items.map((item) => requestKey('loglikelihood', item.input, item.continuation, item.truncated));
  const pending = items.filter((item) => {
    const known = keys && opts.cache!.get(keys[item.index]!);
    if (known) results[item.index] = known;
    return !known;
  });
  const sharing = opts.prefixSharing ?? true;
  const order = sharing ? pending.sort((a, b) => compareTokens(a.input, b.input)) : pending;
  const cache = model.createCache(order.reduce((longest, item) => Math.max(longest, item.input.length), 1)); // no spread: tasks have 10⁴–10⁵ requests
  let cached: readonly number[] = [];
  let done = items.length - pending.length;
  for (const item of order) {
    if (opts.signal?.aborted) throw new AbortError('evaluation aborted');
    const keep = sharing ? Math.min(commonPrefix(cached, item.input), item.scoreFrom) : 0;
    cache.length = keep; // rewind: positions ≥ keep are overwritten by this request
    const result = scoreItem(model, cache, item, keep, opts.chunk ?? DEFAULT_CHUNK);
    results[item.index] = result;
    if (keys) opts.cache!.put(keys[item.index]!, result);
    cached = item.input;
    opts.onProgress?.(++done, items.length);
    await new Promise((resolve) => setImmediate(resolve));
  }
  return results;
}

function prepare(request: LoglikelihoodRequest, index: number, maxLength: number, vocab: number): Item {
  const { context, continuation } = request;
  for (const [part, ids] of [['context', context], ['continuation', continuation]] as const) {
    const bad = ids.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocab);
    if (bad >= 0) throw new InputError(`request ${index}: ${part} token ${bad} is ${ids[bad]}, outside the vocabulary of ${vocab} ids`);
  }
  if (continuation.length === 0) throw new InputError(`request ${index}: the continuation is empty (nothing to score)`);
  if (context.length === 0) throw new InputError(`request ${index}: the context is empty; give at least one token (the harness uses the end-of-text token)`);
  if (continuation.length > maxLength) throw new InputError(`request ${index}: a continuation of ${continuation.length} tokens does not fit the model's ${maxLength} positions`);
  const whole = [...context, ...continuation];
  const truncated = Math.max(0, whole.length - 1 - maxLength);
  const input = whole.slice(truncated, -1);
  return { index, input, continuation, scoreFrom: input.length - continuation.length, truncated };
}

/** Feed input[keep:] after the cache's first `keep` positions; score the continuation from the logits. */
function scoreItem(model: OlmoeModel, cache: KVCache, item: Item, keep: number, chunk: number): LoglikelihoodResult {
  const { input, continuation, scoreFrom } = item;
  for (let at = keep; at < scoreFrom; at += chunk) {
    const result = model.forward(Int32Array.from(input.slice(at, Math.min(at + chunk, scoreFrom))), { cache, logits: 'last' });
    model.backend.release?.(result); // (not the call's argument: an absent release would skip the pass)
  }
  const vocab = model.config.vocabSize;
  let logprob = 0;
  let isGreedy = true;
  for (let at = scoreFrom; at < input.length; at += chunk) {
    const ids = Int32Array.from(input.slice(at, Math.min(at + chunk, input.length)));
    const result = model.forward(ids, { cache, logits: 'all' });
    const logits = model.backend.toFloat32(result); // [T, V]
    for (let row = 0; row < ids.length; row++) {
      const target = continuation[at + row - scoreFrom]!;
      const scored = logSoftmaxAt(logits.subarray(row * vocab, (row + 1) * vocab), target);
      logprob += scored.logprob;
      isGreedy &&= scored.argmax === target;
    }
    model.backend.release?.(result); // read: its storage serves the next request's logits (fresh memory costs page faults)
  }
  return { logprob, isGreedy, truncated: item.truncated };
}

/** log softmax(row)[target] in float64, and the row's argmax (first index of the maximum, as torch.argmax). */
export function logSoftmaxAt(row: Float32Array, target: number): { logprob: number; argmax: number } {
  let argmax = 0;
  for (let i = 1; i < row.length; i++) if (row[i]! > row[argmax]!) argmax = i;
  const max = row[argmax]!;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - max);
  return { logprob: row[target]! - max - Math.log(sum), argmax };
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

function compareTokens(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/**
 * Disjoint windows that predict every token of `tokens` exactly once, each seeing up to `maxLength` tokens:
 * the first window is conditioned on `prefixToken` alone (lm-eval's rolling loglikelihood with context_len 1).
 */
export function rollingWindows(tokens: readonly number[], prefixToken: number, maxLength: number): LoglikelihoodRequest[] {
  if (!Number.isSafeInteger(maxLength) || maxLength < 1) throw new InputError(`rolling windows: maxLength ${maxLength} must be a positive integer`);
  const windows: LoglikelihoodRequest[] = [];
  if (tokens.length === 0) return windows;
  const first = Math.min(maxLength, tokens.length);
  windows.push({ context: [prefixToken], continuation: tokens.slice(0, first) });
  for (let predicted = first; predicted < tokens.length; ) {
    const length = Math.min(tokens.length - predicted, maxLength);
    const end = predicted + length;
    // The window's input is tokens[end - maxLength - 1, end - 1); its last `length` positions are scored.
    const input = tokens.slice(Math.max(0, end - maxLength - 1), end - 1);
    windows.push({ context: input.slice(0, input.length - (length - 1)), continuation: tokens.slice(predicted, end) });
    predicted = end;
  }
  return windows;
}

/** Σ log p over a whole token sequence (every token scored once), through rolling windows. */
export async function loglikelihoodRolling(
  model: OlmoeModel,
  sequences: readonly (readonly number[])[],
  prefixToken: number,
  opts: ScoreOptions = {},
): Promise<{ logprob: number; tokens: number }[]> {
  const maxLength = opts.maxLength ?? model.config.maxPositionEmbeddings;
  const windows = sequences.map((tokens) => rollingWindows(tokens, prefixToken, maxLength));
  const scored = await loglikelihood(model, windows.flat(), opts);
  let at = 0;
  return windows.map((list, i) => {
    const logprob = scored.slice(at, (at += list.length)).reduce((sum, r) => sum + r.logprob, 0);
    return { logprob, tokens: sequences[i]!.length };
  });
}
