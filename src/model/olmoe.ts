/**
 * Inference: the OLMoE forward (model/forward.ts) run on a Backend with a KV cache per sequence, one sequence
 * or a batch, routing decisions handed to observers, and non-finite logits traced to the stage that made them.
 * Dimension legend: T tokens, D hidden, E experts, K top-k, V vocab.
 */
import { DEFAULT_KV_CACHE_TYPE, kvRowBytes, parseKVCacheType, type Backend, type KVCache, type KVCacheType, type StepPlan, type Tensor } from '../core/backend.js';
import { InputError, NumericError, UnsupportedError } from '../core/errors.js';
import type { OlmoeConfig } from './config.js';
import { decoderStack, logits, TOKEN_CHOICE, type LayerRouting, type ModelVariant, type OlmoeParts, type SequenceSlice } from './forward.js';
import type { OlmoeWeights } from './weights.js';

/** What the router decided in one layer for the T tokens at positions [start, start+T) of one sequence. */
export interface RoutingEvent {
  readonly layer: number;
  readonly start: number;
  readonly tokens: number;
  readonly numExperts: number;
  readonly topK: number;
  /** [T, E] router logits x·gateᵀ. */
  readonly logits: Float32Array;
  /** [T, E] softmax over all experts. */
  readonly probs: Float32Array;
  /** [T, K] chosen experts, by probability descending, ties to the lower index. */
  readonly expertIds: Int32Array;
  /** [T, K] weights applied to the chosen experts' outputs (renormalized only when normTopKProb). */
  readonly weights: Float32Array;
}

/** Called once per layer per forward pass. The event's arrays are the backend's: copy what you keep. */
export type RoutingObserver = (event: RoutingEvent) => void;

export interface ForwardOptions {
  /** Keys/values of earlier positions; the new tokens follow them. Omit for a one-shot forward. */
  cache?: KVCache;
  observer?: RoutingObserver;
  /** 'last': logits of the final position only (generation); 'all': every position. Default 'all'. */
  logits?: 'all' | 'last';
}

/** One sequence of a batched forward: its new tokens, its cache (advanced by them) and an optional observer. */
export interface BatchInput {
  ids: Int32Array;
  cache: KVCache;
  observer?: RoutingObserver;
}

type StageProbe = (stage: string, hidden: Tensor) => void;

/**
 * Tokens per piece of a long prompt (OlmoeModel.forward), as llama.cpp's default micro-batch: the activations and the
 * expert layer's scratch are sized for a piece instead of the whole prompt (a 2,048-token prompt left Q4_0's process
 * ~300 MB larger than a 512-token one, beside its cache), and each piece still gives every expert enough tokens
 * for its tiles.
 */
export const PREFILL_CHUNK = 512;

/**
 * Index of the first NaN or ±∞, else −1. A branch-free pass first (x·0 is ±0 for every finite x, NaN otherwise),
 * in four independent sums: 18 µs for a 50,304-logit row where the test of each value took 44 (Node 20, AMD EPYC).
 */
export function firstNonFinite(values: Float32Array): number {
  const n = values.length, whole = n - (n % 4);
  let a = 0, b = 0, c = 0, d = 0;
  for (let i = 0; i < whole; i += 4) {
    a += values[i]! * 0;
    b += values[i + 1]! * 0;
    c += values[i + 2]! * 0;
    d += values[i + 3]! * 0;
  }
  for (let i = whole; i < n; i++) a += values[i]! * 0;
  if (a + b + c + d === 0) return -1;
  for (let i = 0; i < n; i++) if (!Number.isFinite(values[i]!)) return i;
  return -1;
}

export class OlmoeModel implements OlmoeParts {
  private cacheType: KVCacheType = DEFAULT_KV_CACHE_TYPE;
  /** Per cache: its decode step as the backend recorded it (Backend.recordStep), or null where it made none. */
  private readonly plans = new WeakMap<KVCache, StepPlan | null>();

  constructor(
    readonly config: OlmoeConfig,
    readonly weights: OlmoeWeights,
    readonly backend: Backend,
    readonly variant: ModelVariant = TOKEN_CHOICE,
  ) {}

  /** How the caches this model creates store keys and values (default f16); also a one-shot forward's cache. */
  get kvCacheType(): KVCacheType {
    return this.cacheType;
  }

  set kvCacheType(type: KVCacheType) {
    this.cacheType = parseKVCacheType(type, 'kvCache');
  }

  /** Bytes of cache one position takes (all layers, keys and values). */
  get kvBytesPerPosition(): number {
    const { numLayers, numKVHeads, headDim } = this.config;
    return 2 * numLayers * kvRowBytes(this.cacheType, numKVHeads * headDim);
  }

  /**
   * A cache for `capacity` positions, in the model's cache type unless `type` says otherwise, with storage for
   * `reserve` of them allocated up front (the rest grows by doubling as tokens are stored).
   */
  createCache(capacity = this.config.maxPositionEmbeddings, type: KVCacheType = this.cacheType, reserve = 0): KVCache {
    const { numLayers, numKVHeads, headDim } = this.config;
    return this.backend.createKVCache({ layers: numLayers, capacity, kvHeads: numKVHeads, headDim, dtype: type, reserve });
  }

  /**
   * Logits [T or 1, V] for `ids` following the cache's contents; advances the cache by T. With `logits: 'last'` (a
   * prompt before generation) and no observer, more than PREFILL_CHUNK tokens go through the layers PREFILL_CHUNK at a
   * time, the last piece giving the logits.
   */
  forward(ids: Int32Array, opts: ForwardOptions = {}): Tensor {
    if (opts.cache && ids.length === 1 && !opts.observer) return this.decodeStep({ ids, cache: opts.cache });
    const cache = opts.cache ?? this.createCache(Math.min(ids.length, this.config.maxPositionEmbeddings));
    if (opts.logits === 'last' && !opts.observer && ids.length > PREFILL_CHUNK) {
      this.checkInput(ids, cache); // the whole prompt, before any piece advances the cache
      let start = 0;
      for (; ids.length - start > PREFILL_CHUNK; start += PREFILL_CHUNK) {
        const piece = ids.subarray(start, start + PREFILL_CHUNK);
        this.pass(() => this.backend.rows(this.layers([{ ids: piece, cache }]), PREFILL_CHUNK - 1, 1));
      }
      ids = ids.subarray(start);
    }
    const input = { ids, cache, observer: opts.observer };
    return this.pass(() => {
      const hidden = this.layers([input]);
      const last = opts.logits === 'last' ? this.backend.rows(hidden, ids.length - 1, 1) : hidden;
      return this.checkFinite(logits(this.backend, this, last), [input]); // [T, V]
    });
  }

  /**
   * Several sequences in one pass, each with its own cache (and observer): every weight is read once for all of
   * their tokens — the matrix products and experts run over the concatenated rows, attention per sequence.
   * Returns the logits of each sequence's last token, [B, V] in input order. Each sequence's result equals its
   * own `forward` up to float summation order.
   */
  forwardBatch(inputs: readonly BatchInput[]): Tensor {
    if (inputs.length === 0) throw new InputError('forwardBatch: no sequences');
    if (inputs.length === 1 && inputs[0]!.ids.length === 1 && !inputs[0]!.observer) return this.decodeStep(inputs[0]!);
    return this.pass(() => {
      const hidden = this.layers(inputs);
      const { backend } = this;
      const lasts: Tensor[] = [];
      let offset = 0;
      for (const input of inputs) {
        offset += input.ids.length;
        lasts.push(backend.rows(hidden, offset - 1, 1));
      }
      return this.checkFinite(logits(backend, this, lasts.length === 1 ? lasts[0]! : backend.concatRows(lasts)), inputs);
    });
  }

  /**
   * One token after a cache (decode), logits [1, V]: where the backend records steps (Backend.recordStep), the first
   * step on a cache is recorded and later ones replay it (the model's code runs once per cache, not once per token);
   * recorded again when the replay cannot serve (the cache's storage moved).
   */
  private decodeStep(input: BatchInput): Tensor {
    const { backend } = this;
    const { ids, cache } = input;
    const plan = this.plans.get(cache);
    const run = () => this.checkFinite(logits(backend, this, this.layers([input])), [input]);
    if (plan === null || !backend.recordStep || !backend.replayStep) return this.pass(run);
    this.checkInput(ids, cache);
    const start = cache.length;
    return this.pass(() => {
      const replayed = plan && backend.replayStep!(plan, ids, start, cache);
      if (replayed) {
        cache.length = start + 1;
        return this.checkFinite(replayed, [input]);
      }
      const recorded = backend.recordStep!({ cache, start }, run);
      this.plans.set(cache, recorded.plan ?? null);
      return recorded.result;
    });
  }

  /** One forward pass: its intermediate tensors are the backend's to reuse once it returns (Backend.scoped). */
  private pass(run: () => Tensor): Tensor {
    return this.backend.scoped ? this.backend.scoped(run) : run();
  }

  /**
   * NaN or infinite logits are an error, never a sampled token: it names the first stage (embedding, a layer's
   * attention or experts, the head) whose output is not finite, found by running the new tokens again from an
   * empty cache with a check after every stage (exact when the pass started at position 0, as a prompt does).
   */
  private checkFinite(result: Tensor, inputs: readonly BatchInput[]): Tensor {
    const { backend } = this;
    const bad = backend.firstNonFinite ? backend.firstNonFinite(result) : firstNonFinite(backend.toFloat32(result));
    if (bad < 0) return result;
    const vocab = this.config.vocabSize;
    const where = `logit ${bad % vocab} of row ${Math.floor(bad / vocab)}`;
    throw new NumericError(`the model produced a non-finite value (${where}); ${this.locateNonFinite(inputs)}`);
  }

  private locateNonFinite(inputs: readonly BatchInput[]): string {
    const cached = Math.max(...inputs.map((input) => input.cache.length - input.ids.length));
    const fresh = inputs.map(({ ids }) => ({ ids, cache: this.createCache(ids.length) }));
    let first: string | undefined;
    const probe: StageProbe = (stage, hidden) => {
      if (first === undefined && firstNonFinite(this.backend.toFloat32(hidden)) >= 0) first = stage;
    };
    const hidden = this.layers(fresh, probe);
    probe('the final norm and head', logits(this.backend, this, hidden));
    const found = first === undefined ? 'not reproduced from an empty cache' : `first at ${first}`;
    const context = cached > 0 ? ` (the pass followed ${cached} cached positions, which the check cannot replay)` : '';
    return `${found}${context}. The weights may hold NaN/inf (load with --check-tensors) or the activations overflowed.`;
  }

  /** The decoder stack over the inputs' concatenated tokens → final hidden states [N, D]; advances each cache. */
  private layers(inputs: readonly BatchInput[], probe?: StageProbe): Tensor {
    const slices: SequenceSlice[] = inputs.map(({ ids, cache }) => {
      this.checkInput(ids, cache);
      return { ids, cache, start: cache.length };
    });
    const observed = inputs.some((input) => input.observer);
    const onRouting = observed ? (record: LayerRouting) => this.notify(record, inputs, slices) : undefined;
    const hidden = decoderStack(this.backend, this, slices, { probe, onRouting });
    slices.forEach(({ cache, start, ids }) => (cache!.length = start + ids.length));
    return hidden;
  }

  /** Hand each sequence's rows of a layer's routing to its observer. */
  private notify(record: LayerRouting, inputs: readonly BatchInput[], slices: readonly SequenceSlice[]): void {
    const { routing } = record;
    if (routing.mode !== 'token_choice') throw new UnsupportedError('routing observers need token-choice routing');
    const [e, k] = [routing.numExperts, routing.perGroup];
    const [logitValues, probs, weights] = [record.logits, routing.probs, routing.weights].map((t) => this.backend.toFloat32(t)) as [Float32Array, Float32Array, Float32Array];
    let offset = 0;
    inputs.forEach((input, i) => {
      const count = input.ids.length;
      const rows = <T extends Float32Array | Int32Array>(values: T, width: number) => values.subarray(offset * width, (offset + count) * width) as T;
      input.observer?.({
        layer: record.layer, start: slices[i]!.start, tokens: count, numExperts: e, topK: k,
        logits: rows(logitValues, e), probs: rows(probs, e), expertIds: rows(routing.expertIds, k), weights: rows(weights, k),
      });
      offset += count;
    });
  }

  private checkInput(ids: Int32Array, cache: KVCache): void {
    if (ids.length === 0) throw new InputError('no input tokens');
    const vocab = this.config.vocabSize;
    const bad = ids.findIndex((id) => id < 0 || id >= vocab);
    if (bad >= 0) throw new InputError(`token id ${ids[bad]} at position ${bad} is out of range: the vocabulary has ${vocab} ids (0..${vocab - 1})`);
    const context = Math.min(cache.capacity, this.config.maxPositionEmbeddings);
    if (cache.length + ids.length > context) {
      const limit = context === this.config.maxPositionEmbeddings ? 'max_position_embeddings' : 'the KV cache capacity';
      throw new InputError(`sequence of ${cache.length + ids.length} tokens exceeds the context of ${context} positions (${limit})`);
    }
  }
}
