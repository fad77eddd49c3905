/**
 * Teacher-forced log-probabilities of a whole prompt, as OpenAI's completions report them with `echo` and `logprobs`
 * (and as lm-evaluation-harness's `local-completions` scores a context + continuation): for every token after the
 * first, log p(token | the tokens before it) from the raw logits, with the N most likely tokens at that position.
 *
 * The forward runs over the KV cache in chunks — one per `step()` — so at most [chunk, V] logits exist at once and a
 * server can interleave the chunks with other work. When done, the cache holds the prompt and `lastLogits` are the
 * logits after it: a generation can continue from them (`GenerationBatch.add(…, { cache, logits })`) without a
 * second prefill. Dimension legend: T tokens, V vocab.
 */
import type { KVCache } from '../core/backend.js';
import { InputError } from '../core/errors.js';
import { tokenLogprob, type TokenLogprob } from '../generate/logprobs.js';
import type { OlmoeModel } from '../model/olmoe.js';

export interface PromptScorerOptions {
  /** Most likely alternatives reported per position (default 0). */
  topLogprobs?: number;
  /** Tokens per forward pass (default 64). */
  chunk?: number;
  /** Positions the KV cache may hold: the prompt plus the tokens a generation will add after it (default T). */
  capacity?: number;
}

export class PromptScorer {
  /** Entry t-1 scores token t (t = 1 … T-1): the first token has no context and no log-probability. */
  readonly logprobs: TokenLogprob[] = [];
  readonly cache: KVCache;
  /** The logits after the last prompt token [V], once `done`. */
  lastLogits: Float32Array | undefined;
  private readonly topLogprobs: number;
  private readonly chunk: number;

  constructor(
    private readonly model: OlmoeModel,
    private readonly ids: readonly number[],
    opts: PromptScorerOptions = {},
  ) {
    const { vocabSize, maxPositionEmbeddings } = model.config;
    if (ids.length === 0) throw new InputError('the prompt is empty: give at least one token');
    const bad = ids.findIndex((id) => !Number.isInteger(id) || id < 0 || id >= vocabSize);
    if (bad >= 0) throw new InputError(`prompt token ${bad} is ${ids[bad]}, outside the vocabulary of ${vocabSize} ids`);
    const capacity = opts.capacity ?? ids.length;
    if (!(capacity >= ids.length && capacity <= maxPositionEmbeddings)) {
      throw new InputError(`a prompt of ${ids.length} tokens with room for ${capacity} positions does not fit the model's ${maxPositionEmbeddings} (max_position_embeddings)`);
    }
    this.topLogprobs = opts.topLogprobs ?? 0;
    this.chunk = opts.chunk ?? 64;
    if (!(Number.isSafeInteger(this.topLogprobs) && this.topLogprobs >= 0)) throw new InputError(`topLogprobs ${opts.topLogprobs} is not a non-negative integer`);
    if (!(Number.isSafeInteger(this.chunk) && this.chunk >= 1)) throw new InputError(`chunk ${opts.chunk} must be a positive integer`);
    this.cache = model.createCache(capacity);
  }

  get done(): boolean {
    return this.cache.length === this.ids.length;
  }

  /** Run the next chunk of the prompt through the model and score the tokens its logits predict. */
  step(): void {
    const start = this.cache.length;
    const ids = Int32Array.from(this.ids.slice(start, Math.min(start + this.chunk, this.ids.length)));
    const { model } = this;
    const logits = model.backend.toFloat32(model.forward(ids, { cache: this.cache, logits: 'all' })); // [chunk, V]
    const vocab = model.config.vocabSize;
    for (let row = 0; row < ids.length; row++) {
      const logitsRow = logits.subarray(row * vocab, (row + 1) * vocab);
      const next = start + row + 1; // the position these logits predict
      if (next < this.ids.length) this.logprobs.push(tokenLogprob(logitsRow, this.ids[next]!, this.topLogprobs));
      else this.lastLogits = logitsRow.slice();
    }
  }
}

/** All of a prompt's teacher-forced log-probabilities at once (see PromptScorer). */
export function promptLogprobs(model: OlmoeModel, ids: readonly number[], opts: PromptScorerOptions = {}): TokenLogprob[] {
  const scorer = new PromptScorer(model, ids, opts);
  while (!scorer.done) scorer.step();
  return scorer.logprobs;
}
