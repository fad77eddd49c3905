/**
 * Generation: prefill the prompt in one batched forward, then decode one token at a time over the KV cache.
 * `generate` is an async iterator of tokens with their newly final text; `generateText` collects it.
 */
import type { KVCache } from '../core/backend.js';
import { AbortError, InputError } from '../core/errors.js';
import { createRng, type Rng } from '../core/rng.js';
import type { OlmoeModel } from '../model/olmoe.js';
import type { GenerationDefaults } from '../model/pretrained.js';
import type { OlmoeTokenizer } from '../tokenizer/tokenizer.js';
import type { StreamDecoder } from '../tokenizer/stream.js';
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

export async function* generate(lm: LanguageModel, promptIds: readonly number[], opts: GenerateOptions = {}): AsyncGenerator<TokenEvent, GenerationResult> {
  const run = new GenerationRun(lm, promptIds, resolveOptions(opts, lm.generation, lm.model.config.eosTokenIds));
  while (!run.finishReason) {
    const event = run.step();
    if (event) yield event;
    await new Promise((resolve) => setImmediate(resolve)); // let abort signals and I/O through between tokens
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

/** The state of one generation: sequence so far, KV cache, sampler, detokenizer and stop rules. */
class GenerationRun {
  readonly generated: number[] = [];
  finishReason: FinishReason | undefined;
  private readonly sequence: number[];
  private readonly cache: KVCache | undefined;
  private readonly rng: Rng;
  private readonly detokenizer: StreamDecoder;
  private readonly stops: StopStringMatcher;
  private readonly eos: Set<number>;
  private readonly maxNewTokens: number;
  private readonly started = performance.now();
  private logits: Float32Array | undefined;
  private prefillMs = 0;
  private text = '';

  constructor(
    private readonly lm: LanguageModel,
    private readonly promptIds: readonly number[],
    private readonly opts: ResolvedOptions,
  ) {
    this.maxNewTokens = checkLength(lm.model, promptIds, opts.maxNewTokens);
    this.sequence = [...promptIds];
    this.cache = opts.useCache ? lm.model.createCache(promptIds.length + this.maxNewTokens) : undefined;
    this.rng = createRng(opts.seed);
    this.detokenizer = lm.tokenizer.streamDecoder({ skipSpecialTokens: true });
    this.stops = new StopStringMatcher(opts.stopStrings);
    this.eos = new Set(opts.eosTokenIds);
    if (this.maxNewTokens === 0) this.finishReason = 'length';
  }

  /** Sample one token (prefilling first if needed); returns its event, or undefined when generation ends. */
  step(): TokenEvent | undefined {
    if (this.opts.signal?.aborted) throw new AbortError('generation aborted');
    this.logits ??= this.prefill();
    const id = sampleToken(this.logits, this.opts, this.rng, this.sequence);
    if (this.eos.has(id)) return void (this.finishReason = 'eos');
    this.generated.push(id);
    this.sequence.push(id);
    const text = this.stops.push(this.detokenizer.push(id));
    this.text += text;
    if (this.stops.stopped) this.finishReason = 'stop';
    else if (this.generated.length >= this.maxNewTokens) this.finishReason = 'length';
    // An observer sees the routing of every generated token, the last one included (one forward more).
    if (!this.finishReason || this.opts.observer) this.logits = this.forward([id]);
    return { id, text };
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
    return {
      ids: this.generated, text: this.text, finishReason: this.finishReason ?? 'length', promptTokens: this.promptIds.length,
      seed: this.opts.seed, prefillMs: this.prefillMs, decodeMs: elapsed - this.prefillMs,
    };
  }

  private prefill(): Float32Array {
    const start = performance.now();
    const logits = this.forward(this.promptIds);
    this.prefillMs = performance.now() - start;
    return logits;
  }

  private forward(newIds: readonly number[]): Float32Array {
    const { model } = this.lm;
    const input = this.cache ? newIds : this.sequence;
    return model.backend.toFloat32(model.forward(Int32Array.from(input), { cache: this.cache, logits: 'last', observer: this.opts.observer }));
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
