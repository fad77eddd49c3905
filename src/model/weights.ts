/**
 * The one weight-name table: every tensor an OLMoE checkpoint holds, its HF name, its GGUF name and its
 * shape derived from the config (spec §2.1, §5). Loading is strict against it.
 * Dimension legend: V vocab, D hidden, H heads, Hkv kv heads, Hd head dim, E experts, F expert width.
 */
import type { Tensor } from '../core/backend.js';
import type { OlmoeConfig } from './config.js';

export interface WeightSpec {
  /** Hugging Face safetensors name. */
  readonly hf: string;
  /** GGUF name; expert tensors are stacked per layer in GGUF (`blk.N.ffn_gate_exps.weight` [E, F, D]). */
  readonly gguf: string;
  /** PyTorch-order shape ([Out, In] for projections). */
  readonly shape: readonly number[];
}

export interface LayerWeights {
  readonly inputNorm: Tensor; // [D]
  readonly q: Tensor; // [H·Hd, D]
  readonly k: Tensor; // [Hkv·Hd, D]
  readonly v: Tensor; // [Hkv·Hd, D]
  readonly o: Tensor; // [D, H·Hd]
  readonly qNorm: Tensor; // [H·Hd]: over the full projection, not per head
  readonly kNorm: Tensor; // [Hkv·Hd]
  readonly postNorm: Tensor; // [D]
  readonly router: Tensor; // [E, D]
  readonly experts: { readonly gate: Tensor[]; readonly up: Tensor[]; readonly down: Tensor[] };
  /** The always-active shared expert, when the config has one (gate, up [Fs, D]; down [D, Fs]). */
  readonly sharedExpert?: { readonly gate: Tensor; readonly up: Tensor; readonly down: Tensor };
  /** LoRA adapters on this layer's projections (training with LoRA; see LoraLinear, LoraDelta). */
  readonly lora?: LayerLora;
}

/**
 * A LoRA adapter on one linear layer, applied to its input (Hu et al. 2021; PEFT's Linear):
 * y = x·Wᵀ + s·(dropout(x)·Aᵀ)·Bᵀ. Only the training model sets these (inference merges adapters into W at load).
 */
export interface LoraLinear {
  readonly a: Tensor; // [r, In]
  readonly b: Tensor; // [Out, r]
  readonly scaling: number;
  /** Training only: the adapter's input dropout (absent: none). */
  readonly dropout?: (x: Tensor) => Tensor;
}

/**
 * A LoRA adapter on an expert's projection, applied to the weight: W' = W + s·B·A, formed on the executor for every
 * pass, so the grouped expert op (which sees only the tokens routed to each expert) runs unchanged. Exact LoRA without
 * dropout; A is held transposed so that B·A is one matmul (B [Out, r] · (Aᵀ [In, r])ᵀ).
 */
export interface LoraDelta {
  readonly aT: Tensor; // [In, r]
  readonly b: Tensor; // [Out, r]
  readonly scaling: number;
}

/** The LoRA parts of one layer (any subset). */
export interface LayerLora {
  readonly q?: LoraLinear;
  readonly k?: LoraLinear;
  readonly v?: LoraLinear;
  readonly o?: LoraLinear;
  readonly router?: LoraLinear;
  /** Per expert index (absent: that expert's projection is not adapted). */
  readonly experts?: { readonly gate: readonly (LoraDelta | undefined)[]; readonly up: readonly (LoraDelta | undefined)[]; readonly down: readonly (LoraDelta | undefined)[] };
  readonly sharedExpert?: { readonly gate?: LoraDelta; readonly up?: LoraDelta; readonly down?: LoraDelta };
}

export interface OlmoeWeights {
  readonly embed: Tensor; // [V, D]
  readonly layers: readonly LayerWeights[];
  readonly finalNorm: Tensor; // [D]
  readonly lmHead: Tensor; // [V, D], the embedding when tied
}

/**
 * How many tensors the table has (GGUF stacks each layer's experts into 3 tensors), computed without building
 * it: a config's counts are checked against the tensors a file holds before anything is allocated for them.
 */
export function weightCount(c: OlmoeConfig, format: 'hf' | 'gguf'): number {
  const experts = format === 'gguf' ? 3 : 3 * c.numExperts;
  const perLayer = 9 + experts + (c.sharedExpertSize ? 3 : 0);
  return 2 + c.numLayers * perLayer + (c.tieWordEmbeddings ? 0 : 1);
}

/** The table, in checkpoint order; `lm_head` is absent when the config ties it to the embedding. */
export function weightTable(c: OlmoeConfig): WeightSpec[] {
  const q = c.numHeads * c.headDim;
  const kv = c.numKVHeads * c.headDim;
  const specs: WeightSpec[] = [{ hf: 'model.embed_tokens.weight', gguf: 'token_embd.weight', shape: [c.vocabSize, c.hiddenSize] }];
  for (let layer = 0; layer < c.numLayers; layer++) specs.push(...layerTable(c, layer, q, kv));
  specs.push({ hf: 'model.norm.weight', gguf: 'output_norm.weight', shape: [c.hiddenSize] });
  if (!c.tieWordEmbeddings) specs.push({ hf: 'lm_head.weight', gguf: 'output.weight', shape: [c.vocabSize, c.hiddenSize] });
  return specs;
}

function layerTable(c: OlmoeConfig, layer: number, q: number, kv: number): WeightSpec[] {
  const hf = `model.layers.${layer}.`;
  const gguf = `blk.${layer}.`;
  const D = c.hiddenSize;
  const specs: WeightSpec[] = [
    { hf: `${hf}input_layernorm.weight`, gguf: `${gguf}attn_norm.weight`, shape: [D] },
    { hf: `${hf}self_attn.q_proj.weight`, gguf: `${gguf}attn_q.weight`, shape: [q, D] },
    { hf: `${hf}self_attn.k_proj.weight`, gguf: `${gguf}attn_k.weight`, shape: [kv, D] },
    { hf: `${hf}self_attn.v_proj.weight`, gguf: `${gguf}attn_v.weight`, shape: [kv, D] },
    { hf: `${hf}self_attn.o_proj.weight`, gguf: `${gguf}attn_output.weight`, shape: [D, q] },
    { hf: `${hf}self_attn.q_norm.weight`, gguf: `${gguf}attn_q_norm.weight`, shape: [q] },
    { hf: `${hf}self_attn.k_norm.weight`, gguf: `${gguf}attn_k_norm.weight`, shape: [kv] },
    { hf: `${hf}post_attention_layernorm.weight`, gguf: `${gguf}ffn_norm.weight`, shape: [D] },
    { hf: `${hf}mlp.gate.weight`, gguf: `${gguf}ffn_gate_inp.weight`, shape: [c.numExperts, D] },
  ];
  for (let e = 0; e < c.numExperts; e++) {
    const expert = `${hf}mlp.experts.${e}.`;
    specs.push(
      { hf: `${expert}gate_proj.weight`, gguf: `${gguf}ffn_gate_exps.weight`, shape: [c.intermediateSize, D] },
      { hf: `${expert}up_proj.weight`, gguf: `${gguf}ffn_up_exps.weight`, shape: [c.intermediateSize, D] },
      { hf: `${expert}down_proj.weight`, gguf: `${gguf}ffn_down_exps.weight`, shape: [D, c.intermediateSize] },
    );
  }
  if (c.sharedExpertSize) {
    const shared = `${hf}mlp.shared_expert.`;
    const fs = c.sharedExpertSize;
    specs.push(
      { hf: `${shared}gate_proj.weight`, gguf: `${gguf}ffn_gate_shexp.weight`, shape: [fs, D] },
      { hf: `${shared}up_proj.weight`, gguf: `${gguf}ffn_up_shexp.weight`, shape: [fs, D] },
      { hf: `${shared}down_proj.weight`, gguf: `${gguf}ffn_down_shexp.weight`, shape: [D, fs] },
    );
  }
  return specs;
}

/** Arrange loaded tensors (by HF name) into the model's structure. */
export function assembleWeights(c: OlmoeConfig, byName: ReadonlyMap<string, Tensor>): OlmoeWeights {
  const get = (name: string): Tensor => byName.get(name)!;
  const layers = Array.from({ length: c.numLayers }, (_, layer): LayerWeights => {
    const p = `model.layers.${layer}.`;
    const expert = (kind: string) => Array.from({ length: c.numExperts }, (_, e) => get(`${p}mlp.experts.${e}.${kind}.weight`));
    return {
      inputNorm: get(`${p}input_layernorm.weight`),
      q: get(`${p}self_attn.q_proj.weight`),
      k: get(`${p}self_attn.k_proj.weight`),
      v: get(`${p}self_attn.v_proj.weight`),
      o: get(`${p}self_attn.o_proj.weight`),
      qNorm: get(`${p}self_attn.q_norm.weight`),
      kNorm: get(`${p}self_attn.k_norm.weight`),
      postNorm: get(`${p}post_attention_layernorm.weight`),
      router: get(`${p}mlp.gate.weight`),
      experts: { gate: expert('gate_proj'), up: expert('up_proj'), down: expert('down_proj') },
      ...(c.sharedExpertSize ? { sharedExpert: { gate: get(`${p}mlp.shared_expert.gate_proj.weight`), up: get(`${p}mlp.shared_expert.up_proj.weight`), down: get(`${p}mlp.shared_expert.down_proj.weight`) } } : {}),
    };
  });
  const embed = get('model.embed_tokens.weight');
  return { embed, layers, finalNorm: get('model.norm.weight'), lmHead: c.tieWordEmbeddings ? embed : get('lm_head.weight') };
}
