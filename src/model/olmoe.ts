/**
 * The OLMoE forward pass (spec §3), top to bottom in the order of the equations:
 * embedding → L × [attention with QK-norm and RoPE, sparse MoE] → final norm → logits.
 * Dimension legend: T tokens, D hidden, H heads, Hkv kv heads, Hd head dim, E experts, K top-k, V vocab.
 */
import type { Backend, KVCache, Routing, Tensor } from '../core/backend.js';
import { InputError } from '../core/errors.js';
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
    this.checkInput(ids, cache);
    const start = cache.length;
    const { backend, config, weights } = this;
    let hidden = backend.embedding(weights.embed, ids); // [T, D]; no scaling, no positional embedding (§3.2)
    weights.layers.forEach((layer, index) => {
      const attended = this.attention(backend.rmsnorm(hidden, layer.inputNorm, config.rmsNormEps), layer, { index, start, cache });
      hidden = backend.add(hidden, attended);
      const mixed = this.moe(backend.rmsnorm(hidden, layer.postNorm, config.rmsNormEps), layer, { index, start, observer: opts.observer });
      hidden = backend.add(hidden, mixed);
    });
    cache.length = start + ids.length;
    if (opts.logits === 'last') hidden = backend.rows(hidden, ids.length - 1, 1);
    return backend.matmul(backend.rmsnorm(hidden, weights.finalNorm, config.rmsNormEps), weights.lmHead); // [T, V]
  }

  /** §3.4: QK-norm over the full projections (before the head split), RoPE, causal attention, output projection. */
  private attention(x: Tensor, layer: LayerWeights, at: { index: number; start: number; cache: KVCache }): Tensor {
    const { backend, config } = this;
    const eps = config.rmsNormEps;
    let q = backend.rmsnorm(backend.matmul(x, layer.q), layer.qNorm, eps); // [T, H·Hd]
    let k = backend.rmsnorm(backend.matmul(x, layer.k), layer.kNorm, eps); // [T, Hkv·Hd]
    let v = backend.matmul(x, layer.v); // [T, Hkv·Hd]
    const clip = config.clipQkv;
    if (clip !== null) [q, k, v] = [backend.clamp(q, clip), backend.clamp(k, clip), backend.clamp(v, clip)];
    const positions = Int32Array.from({ length: x.shape[0]! }, (_, t) => at.start + t);
    q = backend.rope(q, positions, { heads: config.numHeads, headDim: config.headDim, theta: config.ropeTheta });
    k = backend.rope(k, positions, { heads: config.numKVHeads, headDim: config.headDim, theta: config.ropeTheta });
    const heads = { heads: config.numHeads, kvHeads: config.numKVHeads, headDim: config.headDim };
    const attended = backend.attention({ q, k, v, cache: at.cache, layer: at.index, start: at.start, ...heads }); // [T, H·Hd]
    return backend.matmul(attended, layer.o); // [T, D]
  }

  /** §3.6, paper eq. 1: y = Σ_{i ∈ top-K} softmax(router(x))_i · E_i(x), no renormalization unless configured. */
  private moe(x: Tensor, layer: LayerWeights, at: { index: number; start: number; observer: RoutingObserver | undefined }): Tensor {
    const routing = this.backend.router(x, layer.router, { topK: this.config.numExpertsPerTok, normTopKProb: this.config.normTopKProb });
    at.observer?.({ ...routing, layer: at.index, start: at.start });
    return this.backend.experts(x, layer.experts, routing); // [T, D]
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
