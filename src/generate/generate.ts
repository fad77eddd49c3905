/**
 * Generation: prefill the prompt in one batched forward, then decode one token at a time over the KV cache.
 * `generate` is an async iterator of tokens with their newly final text; `generateText` collects it.
 */
import type { KVCache } from '../core/backend.js';
import { AbortError, InputError } from '../core/errors.js';
import { createRng, type Rng } from '../core/rng.js';
import type { BatchInput, OlmoeModel } from '../model/olmoe.js';
import type { GenerationDefaults } from '../model/pretrained.js';
import type { OlmoeTokenizer } from '../tokenizer/tokenizer.js';
import type { StreamDecoder } from '../tokenizer/stream.js';
import { tokenLogprob, type TokenLogprob } from './logprobs.js';
import { resolveOptions, type GenerateOptions, type ResolvedOptions } from './options.js';
import { sampleToken } from './sampling.js';
import { StopStringMatcher } from './stop.js';

export type { GenerateOptions } from './options.js';

/** What generation needs: a model, its tokenizer, and optionally the checkpoint's generation defaults. */
export interface LanguageModel {
  model: OlmoeModel;
  tokenizer: OlmoeTokenizer;
  generation?: GenerationDefaults;
}

export type FinishReason = 'eos' | 'stop' | 'length';

export interface TokenEvent {
  /** The generated token; null for the last event when it only releases held-back text. */
  id: number | null;
  /** Text that became final with this token (may be '' while a character or stop string is incomplete). */
  text: string;
  /** With the `logprobs` option: the token's log-probability under the raw logits and the most likely alternatives. */
  logprob?: TokenLogprob;
}

/**
 * A prompt that already went through the model (e.g. scored teacher-forced for its log-probabilities): the KV cache
 * holding exactly its tokens, and the logits of its last position. Generation samples from them without a prefill.
 */
export interface Prefilled {
  cache: KVCache;
  logits: Float32Array;
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

/**
 * Prompt tokens per forward pass of `generate`: long prompts prefill in chunks, so an abort lands within one (~0.6 s of
 * full-size Q4_0 on 2 cores). Each chunk reads every expert's weights again: a 512-token prompt prefilled at 407–416
 * tok/s in chunks of 256, 376–381 in chunks of 64, 411–422 whole (AMD EPYC, 2 threads).
 */
const PREFILL_CHUNK = 256;
/** Positions of a generation's KV cache allocated up front at most (OLMoE-1B-7B's f16 rows: 32 MiB a layer's keys). */
const RESERVED_POSITIONS = 8192;
/** GenerationBatch's default: a long prompt that joins stalls the other streams for one chunk at most. */
const BATCH_PREFILL_CHUNK = 64;

export async function* generate(lm: LanguageModel, promptIds: readonly number[], opts: GenerateOptions = {}): AsyncGenerator<TokenEvent, GenerationResult> {
  const run = new GenerationRun(lm, promptIds, resolveOptions(opts, lm.generation, lm.model.config.eosTokenIds));
  try {
    while (!run.finished) {
      const event = run.canSample ? run.sample() : undefined;
      forwardPending(lm.model, [run], PREFILL_CHUNK); // the sampled token's routing is observed before its event goes out
      if (event) yield event;
      await new Promise((resolve) => setImmediate(resolve)); // let abort signals and I/O through between tokens
    }
  } finally {
    run.releaseCache(); // also when the caller stops iterating early, or an error ends it
  }
  const tail = run.flush();
  if (tail) yield tail;
  return run.result();
}

/** Run `generate` to the end; `onToken` sees every event as it comes. */
export async function generateText(
  lm: LanguageModel,
  promptIds: readonly number[],
  opts: GenerateOptions & { onToken?: (event: TokenEvent) => void } = {},
): Promise<GenerationResult> {
  const iterator = generate(lm, promptIds, opts);
  for (;;) {
    const step = await iterator.next();
    if (step.done) return step.value;
    opts.onToken?.(step.value);
  }
}

/**
 * Several generations advanced together (continuous batching): each step, every generation that has logits samples
 * its next token, then one batched forward pass runs every generation's pending tokens — new prompts and the tokens
 * just sampled — so the weights are read once per step for all of them. Generations join and leave between steps.
 * Each one produces the same tokens as `generate` alone (up to float summation order in the native kernels).
 */
export class GenerationBatch {
  private readonly runs: GenerationRun[] = [];
  private readonly prefillChunk: number;

  /**
   * `prefillChunk`: at most this many prompt tokens of one generation per step, so a long prompt that joins does not
   * stall the others' streams for its whole prefill, and a removal lands within one chunk (default 64: ~0.17 s of
   * full-size Q4_0 on 2 cores, whose 512-token prompt prefills at 376–381 tok/s in chunks of 64, 411–422 whole).
   */
  constructor(
    private readonly lm: LanguageModel,
    opts: { prefillChunk?: number } = {},
  ) {
    this.prefillChunk = opts.prefillChunk ?? BATCH_PREFILL_CHUNK;
    if (!(this.prefillChunk >= 1)) throw new InputError(`prefill chunk ${opts.prefillChunk} must be at least 1 token`);
  }

  get size(): number {
    return this.runs.length;
  }

  /**
   * Start a generation; it prefills in the next step, or samples at once from `prefilled`. Throws InputError for bad
   * options or a prompt that does not fit.
   */
  add(promptIds: readonly number[], opts: GenerateOptions = {}, prefilled?: Prefilled): GenerationRun {
    const run = new GenerationRun(this.lm, promptIds, resolveOptions(opts, this.lm.generation, this.lm.model.config.eosTokenIds), prefilled);
    if (!run.finished) this.runs.push(run);
    return run;
  }

  /** Drop a generation (e.g. its client went away). */
  remove(run: GenerationRun): void {
    const at = this.runs.indexOf(run);
    if (at >= 0) this.runs.splice(at, 1);
    run.releaseCache();
  }

  /**
   * One step for every generation. Returns the token events of this step; a generation that finished in it has
   * `finished` set and has left the batch (its held-back text comes from `flush()`). A generation whose signal
   * aborted leaves the batch and is reported as `{ run, error }`; the others go on.
   */
  step(): { run: GenerationRun; event?: TokenEvent; error?: unknown }[] {
    const results: { run: GenerationRun; event?: TokenEvent; error?: unknown }[] = [];
    const live = this.runs.filter((run) => {
      try {
        if (run.canSample) results.push({ run, event: run.sample() });
        return true;
      } catch (error) {
        results.push({ run, error });
        run.releaseCache();
        return false;
      }
    });
    forwardPending(this.lm.model, live, this.prefillChunk);
    this.runs.splice(0, this.runs.length, ...live.filter((run) => !run.finished));
    for (const run of live) if (run.finished) run.releaseCache();
    return results;
  }
}

/** One forward pass over the pending tokens (up to `chunk` per run) of every run that has any. */
function forwardPending(model: OlmoeModel, runs: readonly GenerationRun[], chunk: number): void {
  const pending = runs.filter((run) => run.pendingInput !== undefined);
  if (pending.length === 0) return;
  const result = model.forwardBatch(pending.map((run) => run.batchInput(chunk)));
  const logits = model.backend.toFloat32(result);
  const vocab = logits.length / pending.length;
  pending.forEach((run, i) => run.accept(logits.subarray(i * vocab, (i + 1) * vocab)));
  model.backend.release?.(result); // copied out: its storage takes the next step's logits
}

/** The state of one generation: sequence so far, KV cache, sampler, detokenizer and stop rules. */
export class GenerationRun {
  readonly generated: number[] = [];
  finishReason: FinishReason | undefined;
  /** With the `logprobs` option: the eos token that ended generation (not in `generated`) and its log-probabilities. */
  eosLogprob: TokenLogprob | undefined;
  /** Tokens the model must see next: the prompt first, then each sampled token. */
  pendingInput: readonly number[] | undefined;
  private readonly sequence: number[];
  private readonly cache: KVCache | undefined;
  private readonly ownsCache: boolean;
  private readonly rng: Rng;
  private readonly detokenizer: StreamDecoder;
  private readonly stops: StopStringMatcher;
  private readonly eos: Set<number>;
  private readonly maxNewTokens: number;
  private readonly started = performance.now();
  private logits: Float32Array | undefined;
  /** The run's copy of its last logits, reused step after step (fresh memory each token cost page faults). */
  private logitsCopy: Float32Array | undefined;
  private inFlight = 0;
  /** Without a KV cache (useCache false): the one-pass cache of the forward in flight. */
  private scratch: KVCache | undefined;
  private prefillMs: number | undefined;
  private text = '';

  constructor(
    private readonly lm: LanguageModel,
    private readonly promptIds: readonly number[],
    private readonly opts: ResolvedOptions,
    prefilled?: Prefilled,
  ) {
    this.maxNewTokens = checkLength(lm.model, promptIds, opts.maxNewTokens);
    this.sequence = [...promptIds];
    if (prefilled) checkPrefilled(prefilled, promptIds.length, this.maxNewTokens, opts.useCache);
    // Storage for every position up front (up to RESERVED_POSITIONS) costs address space only (pages fault in as rows
    // are stored; 8 native or reference caches of 4,096 positions added no RSS) and spares the doublings' resizes and
    // the re-recording of the native decode step they force: 8 streams of 64 tokens ran 1.047× faster (median of 8
    // phase-matched pairs). Longer contexts grow from there, so that a million-token one is not refused up front.
    const capacity = promptIds.length + this.maxNewTokens;
    this.cache = prefilled?.cache ?? (opts.useCache ? lm.model.createCache(capacity, opts.kvCache, Math.min(capacity, RESERVED_POSITIONS)) : undefined);
    this.ownsCache = prefilled === undefined;
    this.rng = createRng(opts.seed);
    this.detokenizer = lm.tokenizer.streamDecoder({ skipSpecialTokens: true });
    this.stops = new StopStringMatcher(opts.stopStrings);
    this.eos = new Set(opts.eosTokenIds);
    if (this.maxNewTokens === 0) this.finishReason = 'length';
    else if (prefilled) {
      this.logits = prefilled.logits; // ready to sample: no prefill of its own
      this.prefillMs = 0;
    } else this.pendingInput = promptIds;
  }

  /** Ended, and nothing left for the model to see. */
  get finished(): boolean {
    return this.finishReason !== undefined && this.pendingInput === undefined;
  }

  get canSample(): boolean {
    return this.logits !== undefined && this.finishReason === undefined;
  }

  /** Up to `limit` pending tokens as a forward pass needs them (without a cache: the whole sequence, from scratch). */
  batchInput(limit = Infinity): BatchInput {
    const ids = Int32Array.from(this.cache ? this.pendingInput!.slice(0, limit) : this.sequence);
    this.inFlight = this.cache ? ids.length : this.pendingInput!.length;
    if (!this.cache) this.scratch = this.lm.model.createCache(ids.length, this.opts.kvCache);
    return { ids, cache: this.cache ?? this.scratch!, observer: this.opts.observer };
  }

  /**
   * The logits after the tokens of `batchInput` went through the model; they count once all pending tokens have. They
   * are copied: the caller's array may be reused once this returns.
   */
  accept(logits: Float32Array): void {
    this.scratch?.release?.(); // without a cache: the pass's own, for the next pass's storage
    this.scratch = undefined;
    if (this.inFlight < this.pendingInput!.length) {
      this.pendingInput = this.pendingInput!.slice(this.inFlight); // more of the prompt to go
      return;
    }
    this.prefillMs ??= performance.now() - this.started;
    if (this.logitsCopy?.length !== logits.length) this.logitsCopy = new Float32Array(logits.length);
    this.logitsCopy.set(logits);
    this.logits = this.logitsCopy;
    this.pendingInput = undefined;
  }

  /** Sample one token from the last logits; returns its event, or undefined when it ends generation (eos). */
  sample(): TokenEvent | undefined {
    if (this.opts.signal?.aborted) throw new AbortError('generation aborted');
    const id = sampleToken(this.logits!, this.opts, this.rng, this.sequence);
    const logprob = this.opts.logprobs === undefined ? undefined : tokenLogprob(this.logits!, id, this.opts.logprobs); // raw logits: before the sampling transforms
    this.logits = undefined;
    if (this.eos.has(id)) {
      this.eosLogprob = logprob;
      return void (this.finishReason = 'eos');
    }
    this.generated.push(id);
    this.sequence.push(id);
    const text = this.stops.push(this.detokenizer.push(id));
    this.text += text;
    if (this.stops.stopped) this.finishReason = 'stop';
    else if (this.generated.length >= this.maxNewTokens) this.finishReason = 'length';
    // An observer sees the routing of every generated token, the last one included (one forward more).
    if (!this.finishReason || this.opts.observer) this.pendingInput = [id];
    return logprob ? { id, text, logprob } : { id, text };
  }

  /**
   * Its KV cache's storage back to the backend for later caches (KVCache.release), once it has finished or left its
   * batch. A prefilled cache is left to whoever made it.
   */
  releaseCache(): void {
    if (this.ownsCache) this.cache?.release?.();
  }

  /** Text held back for an incomplete character or a possible stop string, released at the end. */
  flush(): TokenEvent | undefined {
    const tail = this.stops.push(this.detokenizer.flush()) + this.stops.flush();
    if (this.stops.stopped) this.finishReason = 'stop';
    this.text += tail;
    return tail ? { id: null, text: tail } : undefined;
  }

  result(): GenerationResult {
    const elapsed = performance.now() - this.started;
    const prefillMs = this.prefillMs ?? 0;
    return {
      ids: this.generated, text: this.text, finishReason: this.finishReason ?? 'length', promptTokens: this.promptIds.length,
      seed: this.opts.seed, prefillMs, decodeMs: elapsed - prefillMs,
    };
  }
}

/** A prefilled prompt's cache must hold the prompt and have room for the new tokens. */
function checkPrefilled({ cache }: Prefilled, promptTokens: number, maxNewTokens: number, useCache: boolean): void {
  if (!useCache) throw new InputError('a prefilled prompt needs the KV cache (useCache must not be false)');
  if (cache.length !== promptTokens) throw new InputError(`the prefilled KV cache holds ${cache.length} tokens; the prompt has ${promptTokens}`);
  if (cache.capacity < promptTokens + maxNewTokens) {
    throw new InputError(`the prefilled KV cache has room for ${cache.capacity} positions; this generation needs ${promptTokens + maxNewTokens}`);
  }
}

/** The prompt must fit the context; the number of new tokens is capped by what is left of it. */
function checkLength(model: OlmoeModel, promptIds: readonly number[], maxNewTokens: number): number {
  const context = model.config.maxPositionEmbeddings;
  if (promptIds.length === 0) throw new InputError('the prompt is empty: give at least one token');
  if (promptIds.length >= context) {
    throw new InputError(`prompt of ${promptIds.length} tokens does not fit the context of ${context} positions (max_position_embeddings) with room to generate`);
  }
  return Math.min(maxNewTokens, context - promptIds.length);
}
