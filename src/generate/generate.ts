/**
 * Generation: prefill the prompt in one batched forward, then decode one token at a time over the KV cache.
 * `generate` is an async iterator of tokens with their newly final text; `generateText` collects it.
 */
import type { KVCache } from '../core/backend.js';
import { AbortError, InputError } from '../core/errors.js';
import type { OlmoeModel, RoutingObserver } from '../model/olmoe.js';
import type { OlmoeTokenizer } from '../tokenizer/tokenizer.js';
import { createRng, randomSeed } from '../core/rng.js';
import { checkSamplingOptions, sampleToken, type SamplingOptions } from './sampling.js';
import { StopStringMatcher } from './stop.js';

export interface GenerateOptions extends SamplingOptions {
  maxNewTokens?: number; // default 128
  seed?: number;
  /** Token ids that end generation (the eos id itself is not part of the output). */
  eosTokenIds?: readonly number[];
  ignoreEos?: boolean;
  stopStrings?: readonly string[];
  signal?: AbortSignal;
  /** false: recompute the whole sequence every step (slow; must give the same tokens). */
  useCache?: boolean;
  /** Routing of every forward pass: the prompt's tokens, then each generated token's. */
  observer?: RoutingObserver;
}

export type FinishReason = 'eos' | 'stop' | 'length';

export interface TokenEvent {
  /** The generated token; null for the last event when it only releases held-back text. */
  id: number | null;
  /** Text that became final with this token (may be '' while a character or stop string is incomplete). */
  text: string;
}

export interface GenerationResult {
  /** Generated ids only, without the prompt and without the eos token that ended generation. */
  ids: number[];
  text: string;
  finishReason: FinishReason;
  promptTokens: number;
  seed: number;
  prefillMs: number;
  decodeMs: number;
}

interface DecodeState {
  ids: number[];
  all: number[];
  cache: KVCache | undefined;
}

export async function* generate(
  model: OlmoeModel,
  tokenizer: OlmoeTokenizer,
  promptIds: readonly number[],
  opts: GenerateOptions = {},
): AsyncGenerator<TokenEvent, GenerationResult> {
  checkSamplingOptions(opts);
  const maxNewTokens = checkLength(model, promptIds, opts.maxNewTokens ?? 128);
  const seed = opts.seed ?? randomSeed();
  const rng = createRng(seed);
  const eos = new Set(opts.ignoreEos ? [] : (opts.eosTokenIds ?? model.config.eosTokenIds));
  const detokenizer = tokenizer.streamDecoder({ skipSpecialTokens: true });
  const stops = new StopStringMatcher(opts.stopStrings ?? []);
  const state: DecodeState = { ids: [], all: [...promptIds], cache: opts.useCache === false ? undefined : model.createCache(promptIds.length + maxNewTokens) };
  const started = performance.now();
  let logits = nextLogits(model, state, promptIds, opts);
  const prefillMs = performance.now() - started;
  let text = '';
  let finishReason: FinishReason = 'length';
  while (state.ids.length < maxNewTokens) {
    if (opts.signal?.aborted) throw new AbortError('generation aborted');
    const id = sampleToken(logits, opts, rng, state.all);
    if (eos.has(id)) {
      finishReason = 'eos';
      break;
    }
    state.ids.push(id);
    state.all.push(id);
    const piece = stops.push(detokenizer.push(id));
    text += piece;
    yield { id, text: piece };
    if (stops.stopped) {
      finishReason = 'stop';
      break;
    }
    if (state.ids.length < maxNewTokens) logits = nextLogits(model, state, [id], opts);
    await new Promise((resolve) => setImmediate(resolve)); // let abort signals and I/O through between tokens
  }
  const tail = stops.push(detokenizer.flush()) + stops.flush();
  if (tail) {
    text += tail;
    yield { id: null, text: tail };
  }
  if (stops.stopped) finishReason = 'stop';
  return { ids: state.ids, text, finishReason, promptTokens: promptIds.length, seed, prefillMs, decodeMs: performance.now() - started - prefillMs };
}

/** Run `generate` to the end; `onToken` sees every event as it comes. */
export async function generateText(
  model: OlmoeModel,
  tokenizer: OlmoeTokenizer,
  promptIds: readonly number[],
  opts: GenerateOptions & { onToken?: (event: TokenEvent) => void } = {},
): Promise<GenerationResult> {
  const iterator = generate(model, tokenizer, promptIds, opts);
  for (;;) {
    const step = await iterator.next();
    if (step.done) return step.value;
    opts.onToken?.(step.value);
  }
}

function nextLogits(model: OlmoeModel, state: DecodeState, newIds: readonly number[], opts: GenerateOptions): Float32Array {
  const input = state.cache ? newIds : state.all;
  const logits = model.forward(Int32Array.from(input), { cache: state.cache, logits: 'last', observer: opts.observer });
  return model.backend.toFloat32(logits);
}

/** The prompt must fit the context; the number of new tokens is capped by what is left of it. */
function checkLength(model: OlmoeModel, promptIds: readonly number[], maxNewTokens: number): number {
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new InputError(`max new tokens ${maxNewTokens} is not a non-negative integer`);
  const context = model.config.maxPositionEmbeddings;
  if (promptIds.length === 0) throw new InputError('the prompt is empty: give at least one token');
  if (promptIds.length >= context) {
    throw new InputError(`prompt of ${promptIds.length} tokens does not fit the context of ${context} positions (max_position_embeddings) with room to generate`);
  }
  return Math.min(maxNewTokens, context - promptIds.length);
}
