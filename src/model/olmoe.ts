/**
 * The OLMoE forward pass (spec §3), top to bottom in the order of the equations:
 * embedding → L × [attention with QK-norm and RoPE, sparse MoE] → final norm → logits.
 * Dimension legend: T tokens, D hidden, H heads, Hkv kv heads, Hd head dim, E experts, K top-k, V vocab.
 */
import type { Backend, KVCache, Routing, Tensor } from '../core/backend.js';
import { InputError, NumericError } from '../core/errors.js';
import type { OlmoeConfig } from './config.js';
import type { LayerWeights, OlmoeWeights } from './weights.js';

/** What the router decided in one layer for the T tokens at positions [start, start+T). */
export interface RoutingEvent extends Routing {
  readonly layer: number;
  readonly start: number;
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

interface Positioned extends BatchInput {
  start: number;
}

/** Called with the hidden state after each stage of the stack (used to find where NaN/inf first appear). */
type StageProbe = (stage: string, hidden: Tensor) => void;

function firstNonFinite(values: Float32Array): number {
  for (let i = 0; i < values.length; i++) if (!Number.isFinite(values[i]!)) return i;
  return -1;
}

/** Rows [start, start+count) of a routing decision, as views. */
function routingRows(routing: Routing, start: number, count: number): Routing {
  const { numExperts: e, topK: k } = routing;
  return {
    tokens: count,
    numExperts: e,
    topK: k,
    logits: routing.logits.subarray(start * e, (start + count) * e),
    probs: routing.probs.subarray(start * e, (start + count) * e),
    expertIds: routing.expertIds.subarray(start * k, (start + count) * k),
    weights: routing.weights.subarray(start * k, (start + count) * k),
  };
}

/** Stack activations [n_i, W] into [Σn_i, W]. */
function concatRows(backend: Backend, parts: readonly Tensor[]): Tensor {
  const arrays = parts.map((part) => backend.toFloat32(part));
  const width = parts[0]!.shape[parts[0]!.shape.length - 1]!;
  const out = new Float32Array(arrays.reduce((sum, a) => sum + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return backend.fromFloat32(out, [out.length / width, width]);
}

export class OlmoeModel {
  constructor(
    readonly config: OlmoeConfig,
    readonly weights: OlmoeWeights,
    readonly backend: Backend,
  ) {}

  createCache(capacity = this.config.maxPositionEmbeddings): KVCache {
    const { numLayers, numKVHeads, headDim } = this.config;
    return this.backend.createKVCache({ layers: numLayers, capacity, kvHeads: numKVHeads, headDim });
  }

  /** Logits [T or 1, V] for `ids` following the cache's contents; advances the cache by T. */
  forward(ids: Int32Array, opts: ForwardOptions = {}): Tensor {
    const cache = opts.cache ?? this.createCache(Math.min(ids.length, this.config.maxPositionEmbeddings));
    const input = { ids, cache, observer: opts.observer };
    const hidden = this.layers([input]);
    const last = opts.logits === 'last' ? this.backend.rows(hidden, ids.length - 1, 1) : hidden;
    return this.checkFinite(this.logits(last), [input]); // [T, V]
  }

  /**
   * Several sequences in one pass, each with its own cache (and observer): every weight is read once for all of
   * their tokens — the matrix products and experts run over the concatenated rows, attention per sequence.
   * Returns the logits of each sequence's last token, [B, V] in input order. Each sequence's result equals its
   * own `forward` up to float summation order.
   */
  forwardBatch(inputs: readonly BatchInput[]): Tensor {
    if (inputs.length === 0) throw new InputError('forwardBatch: no sequences');
    const hidden = this.layers(inputs);
    const { backend } = this;
    const lasts: Tensor[] = [];
    let offset = 0;
    for (const input of inputs) {
      offset += input.ids.length;
      lasts.push(backend.rows(hidden, offset - 1, 1));
    }
    return this.checkFinite(this.logits(lasts.length === 1 ? lasts[0]! : concatRows(backend, lasts)), inputs);
  }

  /**
   * NaN or infinite logits are an error, never a sampled token: it names the first stage (embedding, a layer's
   * attention or experts, the head) whose output is not finite, found by running the new tokens again from an
   * empty cache with a check after every stage (exact when the pass started at position 0, as a prompt does).
   */
  private checkFinite(logits: Tensor, inputs: readonly BatchInput[]): Tensor {
    const bad = firstNonFinite(this.backend.toFloat32(logits));
    if (bad < 0) return logits;
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
    probe('the final norm and head', this.logits(hidden));
    const found = first === undefined ? 'not reproduced from an empty cache' : `first at ${first}`;
    const context = cached > 0 ? ` (the pass followed ${cached} cached positions, which the check cannot replay)` : '';
    return `${found}${context}. The weights may hold NaN/inf (load with --check-tensors) or the activations overflowed.`;
  }

  /** The decoder stack over the inputs' concatenated tokens → final hidden states [N, D]; advances each cache. */
  private layers(inputs: readonly BatchInput[], probe?: StageProbe): Tensor {
    const batch = inputs.map((input) => {
      this.checkInput(input.ids, input.cache);
      return { ...input, start: input.cache.length };
    });
    const { backend, config, weights } = this;
    const ids = batch.length === 1 ? batch[0]!.ids : Int32Array.from(batch.flatMap((input) => Array.from(input.ids)));
    let hidden = backend.embedding(weights.embed, ids); // [N, D]; no scaling, no positional embedding (§3.2)
    probe?.('the embedding', hidden);
    weights.layers.forEach((layer, index) => {
      const attended = this.attention(backend.rmsnorm(hidden, layer.inputNorm, config.rmsNormEps), layer, index, batch);
      hidden = backend.add(hidden, attended);
      probe?.(`layer ${index} (attention)`, hidden);
      const mixed = this.moe(backend.rmsnorm(hidden, layer.postNorm, config.rmsNormEps), layer, index, batch);
      hidden = backend.add(hidden, mixed);
      probe?.(`layer ${index} (experts)`, hidden);
    });
    for (const input of batch) input.cache.length = input.start + input.ids.length;
    return hidden;
  }

  private logits(hidden: Tensor): Tensor {
    const { backend, config, weights } = this;
    return backend.matmul(backend.rmsnorm(hidden, weights.finalNorm, config.rmsNormEps), weights.lmHead); // [T, V]
  }

  /** §3.4: QK-norm over the full projections (before the head split), RoPE, causal attention, output projection. */
  private attention(x: Tensor, layer: LayerWeights, index: number, batch: readonly Positioned[]): Tensor {
    const { backend, config } = this;
    const eps = config.rmsNormEps;
    let q = backend.rmsnorm(backend.matmul(x, layer.q), layer.qNorm, eps); // [N, H·Hd]
    let k = backend.rmsnorm(backend.matmul(x, layer.k), layer.kNorm, eps); // [N, Hkv·Hd]
    let v = backend.matmul(x, layer.v); // [N, Hkv·Hd]
    const clip = config.clipQkv;
    if (clip !== null) [q, k, v] = [backend.clamp(q, clip), backend.clamp(k, clip), backend.clamp(v, clip)];
    const positions = Int32Array.from(batch.flatMap((input) => Array.from(input.ids, (_, t) => input.start + t)));
    q = backend.rope(q, positions, { heads: config.numHeads, headDim: config.headDim, theta: config.ropeTheta });
    k = backend.rope(k, positions, { heads: config.numKVHeads, headDim: config.headDim, theta: config.ropeTheta });
    const heads = { heads: config.numHeads, kvHeads: config.numKVHeads, headDim: config.headDim };
    let attended: Tensor; // [N, H·Hd]
    if (batch.length === 1) attended = backend.attention({ q, k, v, cache: batch[0]!.cache, layer: index, start: batch[0]!.start, ...heads });
    else {
      let offset = 0;
      const parts = batch.map(({ ids, cache, start }) => {
        const rows = (t: Tensor) => backend.rows(t, offset, ids.length);
        const part = backend.attention({ q: rows(q), k: rows(k), v: rows(v), cache, layer: index, start, ...heads });
        offset += ids.length;
        return part;
      });
      attended = concatRows(backend, parts);
    }
    return backend.matmul(attended, layer.o); // [N, D]
  }

  /** §3.6, paper eq. 1: y = Σ_{i ∈ top-K} softmax(router(x))_i · E_i(x), no renormalization unless configured. */
  private moe(x: Tensor, layer: LayerWeights, index: number, batch: readonly Positioned[]): Tensor {
    const routing = this.backend.router(x, layer.router, { topK: this.config.numExpertsPerTok, normTopKProb: this.config.normTopKProb });
    let offset = 0;
    for (const { ids, start, observer } of batch) {
      observer?.({ ...routingRows(routing, offset, ids.length), layer: index, start });
      offset += ids.length;
    }
    const routed = this.backend.experts(x, layer.experts, routing); // [N, D]
    return layer.sharedExpert ? this.backend.add(routed, this.sharedExpert(x, layer.sharedExpert)) : routed;
  }

  /** The always-active shared expert (paper §4.1.3): a SwiGLU MLP with weight 1, run as a one-expert MoE. */
  private sharedExpert(x: Tensor, weights: NonNullable<LayerWeights['sharedExpert']>): Tensor {
    const tokens = x.shape[0]!;
    const everyToken: Routing = {
      tokens, numExperts: 1, topK: 1, logits: new Float32Array(tokens), probs: new Float32Array(tokens).fill(1),
      expertIds: new Int32Array(tokens), weights: new Float32Array(tokens).fill(1),
    };
    return this.backend.experts(x, { gate: [weights.gate], up: [weights.up], down: [weights.down] }, everyToken);
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
