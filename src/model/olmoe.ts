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
    const c = this.config;
    return this.backend.createKVCache({ layers: c.numLayers, capacity, kvHeads: c.numKVHeads, headDim: c.headDim });
  }

  /** Logits [T or 1, V] for `ids` following the cache's contents; advances the cache by T. */
  forward(ids: Int32Array, opts: ForwardOptions = {}): Tensor {
    const cache = opts.cache ?? this.createCache(Math.min(ids.length, this.config.maxPositionEmbeddings));
    this.checkInput(ids, cache);
    const start = cache.length;
    const b = this.backend;
    let h = b.embedding(this.weights.embed, ids); // [T, D]; no scaling, no positional embedding (§3.2)
    this.weights.layers.forEach((layer, index) => {
      h = b.add(h, this.attention(b.rmsnorm(h, layer.inputNorm, this.config.rmsNormEps), layer, { index, start, cache }));
      h = b.add(h, this.moe(b.rmsnorm(h, layer.postNorm, this.config.rmsNormEps), layer, { index, start, observer: opts.observer }));
    });
    cache.length = start + ids.length;
    if (opts.logits === 'last') h = b.rows(h, ids.length - 1, 1);
    return b.matmul(b.rmsnorm(h, this.weights.finalNorm, this.config.rmsNormEps), this.weights.lmHead); // [T, V]
  }

  /** §3.4: QK-norm over the full projections (before the head split), RoPE, causal attention, output projection. */
  private attention(x: Tensor, w: LayerWeights, at: { index: number; start: number; cache: KVCache }): Tensor {
    const b = this.backend;
    const c = this.config;
    let q = b.rmsnorm(b.matmul(x, w.q), w.qNorm, c.rmsNormEps); // [T, H·Hd]
    let k = b.rmsnorm(b.matmul(x, w.k), w.kNorm, c.rmsNormEps); // [T, Hkv·Hd]
    let v = b.matmul(x, w.v); // [T, Hkv·Hd]
    if (c.clipQkv !== null) [q, k, v] = [b.clamp(q, c.clipQkv), b.clamp(k, c.clipQkv), b.clamp(v, c.clipQkv)];
    const positions = Int32Array.from({ length: x.shape[0]! }, (_, t) => at.start + t);
    q = b.rope(q, positions, { heads: c.numHeads, headDim: c.headDim, theta: c.ropeTheta });
    k = b.rope(k, positions, { heads: c.numKVHeads, headDim: c.headDim, theta: c.ropeTheta });
    const heads = { heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim };
    const attended = b.attention({ q, k, v, cache: at.cache, layer: at.index, start: at.start, ...heads }); // [T, H·Hd]
    return b.matmul(attended, w.o); // [T, D]
  }

  /** §3.6, paper eq. 1: y = Σ_{i ∈ top-K} softmax(router(x))_i · E_i(x), no renormalization unless configured. */
  private moe(x: Tensor, w: LayerWeights, at: { index: number; start: number; observer: RoutingObserver | undefined }): Tensor {
    const routing = this.backend.router(x, w.router, { topK: this.config.numExpertsPerTok, normTopKProb: this.config.normTopKProb });
    at.observer?.({ ...routing, layer: at.index, start: at.start });
    return this.backend.experts(x, w.experts, routing); // [T, D]
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
