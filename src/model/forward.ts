/**
 * THE OLMoE forward pass (spec §3), written once over the Backend ops, top to bottom in the order of the
 * equations: embedding → L × [attention with QK-norm and RoPE, sparse MoE] → final norm → logits.
 * Inference runs it on a backend with KV caches (model/olmoe.ts); training runs the same code on an autograd tape
 * (train/model.ts). Variants are options: routing (token or expert choice), a shared expert (config), dense (one
 * expert, top-1), norm_topk_prob (config); an upcycled model is this model with copied weights; LoRA adapters are
 * optional parts of a layer's weights (model/weights.ts: LoraLinear on attention and the router, LoraDelta on experts).
 * Dimension legend: N tokens of all sequences, D hidden, H heads, Hkv kv heads, Hd head dim, E experts, K top-k, V vocab.
 */
import type { Backend, KVCache, Routing, RoutingMode, Tensor } from '../core/backend.js';
import type { OlmoeConfig } from './config.js';
import type { LayerWeights, LoraDelta, LoraLinear, OlmoeWeights } from './weights.js';

/** How tokens meet experts (paper §4.1.5): dropless token choice, or expert choice with a capacity factor. */
export interface ModelVariant {
  readonly routing: RoutingMode;
  /** Expert choice: each expert takes capacityFactor · N · K / E tokens. */
  readonly capacityFactor: number;
}

export const TOKEN_CHOICE: ModelVariant = { routing: 'token_choice', capacityFactor: 1 };

export interface OlmoeParts {
  readonly config: OlmoeConfig;
  readonly weights: OlmoeWeights;
  readonly variant: ModelVariant;
}

/** One sequence's new tokens in a pass: its positions start at `start` (its cache's length; 0 without a cache). */
export interface SequenceSlice {
  readonly ids: Int32Array;
  readonly start: number;
  readonly cache?: KVCache;
}

/** What one layer's router decided for all N tokens, as tensors on the backend (losses and observers read it). */
export interface LayerRouting {
  readonly layer: number;
  readonly logits: Tensor; // [N, E]
  readonly routing: Routing;
}

export interface StackHooks {
  readonly onRouting?: (record: LayerRouting) => void;
  /** The hidden state after each stage (used to find where NaN/inf first appear). */
  readonly probe?: (stage: string, hidden: Tensor) => void;
}

/** The decoder stack over the sequences' concatenated tokens → hidden states [N, D] before the final norm. */
export function decoderStack(backend: Backend, model: OlmoeParts, sequences: readonly SequenceSlice[], hooks: StackHooks = {}): Tensor {
  const { config, weights } = model;
  const ids = sequences.length === 1 ? sequences[0]!.ids : Int32Array.from(sequences.flatMap((s) => Array.from(s.ids)));
  const positions = Int32Array.from(sequences.flatMap((s) => Array.from(s.ids, (_, t) => s.start + t)));
  let hidden = backend.embedding(weights.embed, ids); // [N, D]; no scaling, no positional embedding (§3.2)
  hooks.probe?.('the embedding', hidden);
  // Each intermediate is retired after its last use (Backend.retire: its storage goes to the pass's next ops). Not
  // under a probe, which may hold the hidden states it is shown; a training tape has no retire.
  const retire: Retire = hooks.probe ? () => {} : (...tensors) => backend.retire?.(...tensors);
  weights.layers.forEach((layer, index) => {
    // §3.3: pre-norm, two residuals
    const normed = backend.rmsnorm(hidden, layer.inputNorm, config.rmsNormEps);
    const attended = attention(backend, model, normed, { layer, index, sequences, positions }, retire);
    retire(normed);
    const afterAttention = backend.add(hidden, attended);
    retire(hidden, attended);
    hidden = afterAttention;
    hooks.probe?.(`layer ${index} (attention)`, hidden);
    const normedAgain = backend.rmsnorm(hidden, layer.postNorm, config.rmsNormEps);
    const mixed = moe(backend, model, normedAgain, layer, index, hooks, retire);
    retire(normedAgain);
    const afterExperts = backend.add(hidden, mixed);
    retire(hidden, mixed);
    hidden = afterExperts;
    hooks.probe?.(`layer ${index} (experts)`, hidden);
  });
  return hidden;
}

/** Backend.retire where the pass may retire, else nothing. */
type Retire = (...tensors: Tensor[]) => void;

/** §3.7: final RMSNorm, then the LM head → [N, V]. */
export function logits(backend: Backend, model: OlmoeParts, hidden: Tensor): Tensor {
  return backend.matmul(backend.rmsnorm(hidden, model.weights.finalNorm, model.config.rmsNormEps), model.weights.lmHead);
}

interface AttentionInput {
  layer: LayerWeights;
  index: number;
  sequences: readonly SequenceSlice[];
  positions: Int32Array;
}

/** §3.4: QK-norm over the full projections (before the head split), RoPE, causal attention, output projection. */
function attention(backend: Backend, model: OlmoeParts, x: Tensor, input: AttentionInput, retire: Retire): Tensor {
  const { config } = model;
  const { layer, positions } = input;
  const eps = config.rmsNormEps;
  const lora = layer.lora;
  const projected = projections(backend, x, layer, lora);
  let q = backend.rmsnorm(projected[0], layer.qNorm, eps); // [N, H·Hd]
  let k = backend.rmsnorm(projected[1], layer.kNorm, eps); // [N, Hkv·Hd]
  let v = projected[2]; // [N, Hkv·Hd]
  retire(projected[0], projected[1]);
  const clip = config.clipQkv;
  // (the unclamped ones are left to the collector: a backend's clamp may return its input, retired below)
  if (clip !== null) [q, k, v] = [backend.clamp(q, clip), backend.clamp(k, clip), backend.clamp(v, clip)];
  const rotatedQ = backend.rope(q, positions, { heads: config.numHeads, headDim: config.headDim, theta: config.ropeTheta });
  const rotatedK = backend.rope(k, positions, { heads: config.numKVHeads, headDim: config.headDim, theta: config.ropeTheta });
  retire(q, k);
  const sequences = input.sequences.map(({ ids, start, cache }) => ({ tokens: ids.length, start, cache }));
  const heads = { heads: config.numHeads, kvHeads: config.numKVHeads, headDim: config.headDim };
  const attended = backend.attention({ q: rotatedQ, k: rotatedK, v, sequences, layer: input.index, ...heads }); // [N, H·Hd]
  retire(rotatedQ, rotatedK, v);
  const out = linear(backend, attended, layer.o, lora?.o); // [N, D]
  retire(attended);
  return out;
}

/** The q, k and v projections of x: one product of the three where the backend has one and no adapter is on them. */
function projections(backend: Backend, x: Tensor, layer: LayerWeights, lora: LayerWeights['lora']): Tensor[] {
  if (backend.matmuls && !lora?.q && !lora?.k && !lora?.v) return backend.matmuls(x, [layer.q, layer.k, layer.v]);
  return [linear(backend, x, layer.q, lora?.q), linear(backend, x, layer.k, lora?.k), linear(backend, x, layer.v, lora?.v)];
}

/** x·Wᵀ, plus a LoRA's s·(dropout(x)·Aᵀ)·Bᵀ when the layer has one (PEFT's lora.Linear.forward). */
function linear(backend: Backend, x: Tensor, weight: Tensor, lora: LoraLinear | undefined): Tensor {
  const base = backend.matmul(x, weight); // [N, Out]
  if (!lora) return base;
  const input = lora.dropout ? lora.dropout(x) : x;
  const down = backend.scale(backend.matmul(input, lora.a), lora.scaling); // [N, r]: scaled here, r ≪ Out
  return backend.add(base, backend.matmul(down, lora.b)); // + [N, Out]
}

/** W + s·B·A [Out, In] for an adapted expert projection (model/weights.ts: LoraDelta), else W. */
function adapted(backend: Backend, weight: Tensor, delta: LoraDelta | undefined): Tensor {
  return delta ? backend.add(weight, backend.scale(backend.matmul(delta.b, delta.aT), delta.scaling)) : weight;
}

/** §3.6, paper eq. (1): y = Σ_{i ∈ top-K} softmax(router(x))_i · E_i(x), no renormalization unless configured. */
function moe(backend: Backend, model: OlmoeParts, x: Tensor, layer: LayerWeights, index: number, hooks: StackHooks, retire: Retire): Tensor {
  const { config, variant } = model;
  const tokens = x.shape[0]!;
  const routerLogits = linear(backend, x, layer.router, layer.lora?.router); // [N, E]
  const capacity = Math.max(1, Math.round((variant.capacityFactor * tokens * config.numExpertsPerTok) / config.numExperts));
  const routing = backend.router(routerLogits, { topK: config.numExpertsPerTok, normTopKProb: config.normTopKProb, mode: variant.routing, capacity });
  hooks.onRouting?.({ layer: index, logits: routerLogits, routing });
  const routed = backend.experts(x, adaptedExperts(backend, layer), routing); // [N, D]
  if (!layer.sharedExpert) return routed;
  const shared = sharedExpert(backend, x, layer.sharedExpert, layer.lora?.sharedExpert);
  const sum = backend.add(routed, shared);
  retire(routed, shared);
  return sum;
}

function adaptedExperts(backend: Backend, layer: LayerWeights): LayerWeights['experts'] {
  const deltas = layer.lora?.experts;
  if (!deltas) return layer.experts;
  const each = (weights: readonly Tensor[], lora: readonly (LoraDelta | undefined)[]) => weights.map((w, e) => adapted(backend, w, lora[e]));
  return { gate: each(layer.experts.gate, deltas.gate), up: each(layer.experts.up, deltas.up), down: each(layer.experts.down, deltas.down) };
}

/** The always-active shared expert (paper §4.1.3): a SwiGLU MLP with weight 1, run as a one-expert MoE. */
function sharedExpert(backend: Backend, x: Tensor, weights: NonNullable<LayerWeights['sharedExpert']>, lora: NonNullable<LayerWeights['lora']>['sharedExpert']): Tensor {
  const tokens = x.shape[0]!;
  const ones = backend.fromFloat32(new Float32Array(tokens).fill(1), [tokens]);
  const everyToken: Routing = {
    tokens, numExperts: 1, mode: 'token_choice', perGroup: 1, probs: ones, weights: ones,
    expertIds: new Int32Array(tokens), tokenIds: Int32Array.from({ length: tokens }, (_, t) => t),
  };
  const [gate, up, down] = [adapted(backend, weights.gate, lora?.gate), adapted(backend, weights.up, lora?.up), adapted(backend, weights.down, lora?.down)];
  return backend.experts(x, { gate: [gate], up: [up], down: [down] }, everyToken);
}
