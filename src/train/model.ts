/**
 * OLMoE for training: the inference model's equations (spec §3), top to bottom, on the autograd tape, with
 * the paper's auxiliary losses (spec §3.8). Parameters carry their HF names (model/weights.ts), so a
 * checkpoint is the parameter list written in table order.
 * Dimension legend: B sequences, S positions, T = B·S tokens, D hidden, E experts, K top-k, V vocab.
 */
import { InputError } from '../core/errors.js';
import type { OlmoeConfig } from '../model/config.js';
import { weightTable } from '../model/weights.js';
import { ropeInverseFrequencies } from '../core/rope.js';
import type { Floats, Precision, Tape, Var } from './autograd.js';
import { causalAttention } from './attention.js';
import { add, crossEntropy, embedding, linear, rmsnorm, rope, weightedSum } from './ops.js';
import { experts, gather, loadBalancingLoss, normalizeGroups, routerZLoss, softmaxRows } from './moe-ops.js';
import { expertChoice, tokenChoice, type Route } from './routing.js';

export type RoutingMode = 'token_choice' | 'expert_choice';

export interface TrainArchitecture {
  readonly config: OlmoeConfig;
  /** Dropless token choice (the paper's default) or expert choice with a capacity factor (paper §4.1.5). */
  readonly routing: RoutingMode;
  readonly capacityFactor: number;
}

export interface LossWeights {
  readonly loadBalancing: number; // 0.01 in the paper
  readonly routerZ: number; // 0.001
}

/** A trainable tensor: values and gradient (fp32 in training, fp64 in gradient checks); no decay on norm gains. */
export interface TrainParam<F extends Floats = Floats> {
  readonly name: string;
  readonly shape: readonly number[];
  readonly data: F;
  readonly grad: F;
  readonly decay: boolean;
}

export interface LayerRouting {
  /** Assignments per expert (token choice: T·K in all). */
  readonly counts: Float64Array;
  /** Mean over tokens of the router distribution's entropy, nats. */
  readonly entropy: number;
}

export interface StepResult {
  readonly loss: Var;
  /** [T, V] next-token logits. */
  readonly logits: Var;
  readonly crossEntropy: number;
  readonly loadBalancing: number;
  readonly routerZ: number;
  readonly layers: readonly LayerRouting[];
}

export class TrainModel {
  readonly params: readonly TrainParam[];
  private readonly byName: Map<string, TrainParam>;
  private readonly inverseFrequencies: Floats;

  constructor(
    readonly arch: TrainArchitecture,
    readonly precision: Precision = 'f32',
  ) {
    const config = arch.config;
    if (config.clipQkv !== null) throw new InputError('training does not support clip_qkv (OLMoE trains without it)');
    if (config.tieWordEmbeddings) throw new InputError('training does not support tie_word_embeddings (OLMoE unties them)');
    this.params = weightTable(config).map((spec) => {
      const size = spec.shape.reduce((a, b) => a * b, 1);
      const alloc = () => (precision === 'f64' ? new Float64Array(size) : new Float32Array(size));
      return { name: spec.hf, shape: spec.shape, data: alloc(), grad: alloc(), decay: spec.shape.length > 1 };
    });
    this.byName = new Map(this.params.map((p) => [p.name, p]));
    this.inverseFrequencies = precision === 'f64' ? ropeInverseFrequencies64(config.headDim, config.ropeTheta) : ropeInverseFrequencies(config.headDim, config.ropeTheta);
  }

  param(name: string): TrainParam {
    const found = this.byName.get(name);
    if (!found) throw new InputError(`no parameter named ${name}`);
    return found;
  }

  /** The parameters as float32 (what the optimizer updates); a float64 model is for gradient checks only. */
  float32Params(): readonly TrainParam<Float32Array>[] {
    if (this.precision !== 'f32') throw new InputError('only a float32 model is trained');
    return this.params as readonly TrainParam<Float32Array>[];
  }

  /** Fill every matrix with init(values) and every norm gain with ones. */
  initialize(init: (values: Floats) => void): void {
    for (const p of this.params) {
      if (p.decay) init(p.data);
      else p.data.fill(1);
    }
  }

  /**
   * Loss of one micro-batch: `tokens` holds B rows of S + 1 ids; position s predicts s + 1, unless `targets`
   * ([B·S], IGNORE_TARGET where a position predicts nothing) says otherwise.
   * Returns the total loss on the tape (CE + load balancing + z-loss) and its parts.
   */
  forward(tape: Tape, tokens: Int32Array, sequences: number, weights: LossWeights, targetsOverride?: Int32Array): StepResult {
    const c = this.arch.config;
    if (tape.precision !== this.precision) throw new InputError(`a ${this.precision} model on a ${tape.precision} tape`);
    const length = tokens.length / sequences - 1;
    if (!Number.isInteger(length) || length < 1) throw new InputError(`a batch of ${tokens.length} ids does not split into ${sequences} rows of S + 1`);
    if (length > c.maxPositionEmbeddings) throw new InputError(`sequence length ${length} exceeds max_position_embeddings ${c.maxPositionEmbeddings}`);
    const { inputs, targets: shifted, positions } = splitBatch(tokens, sequences, length);
    if (targetsOverride && targetsOverride.length !== shifted.length) throw new InputError(`${targetsOverride.length} targets for ${shifted.length} positions`);
    const targets = targetsOverride ?? shifted;
    const p = (name: string) => this.leaf(tape, name);
    let h = embedding(tape, p('model.embed_tokens.weight'), inputs); // [T, D]
    const balance: Var[] = []; // per layer, already weighted
    const zLoss: Var[] = [];
    const layers: LayerRouting[] = [];
    for (let layer = 0; layer < c.numLayers; layer++) {
      const pre = `model.layers.${layer}.`;
      h = add(tape, h, this.attention(tape, rmsnorm(tape, h, p(`${pre}input_layernorm.weight`), c.rmsNormEps), pre, positions, sequences));
      const moe = this.moe(tape, rmsnorm(tape, h, p(`${pre}post_attention_layernorm.weight`), c.rmsNormEps), pre, weights);
      h = add(tape, h, moe.out);
      balance.push(moe.loadBalancing);
      zLoss.push(moe.routerZ);
      layers.push(moe.routing);
    }
    const logits = linear(tape, rmsnorm(tape, h, p('model.norm.weight'), c.rmsNormEps), p('lm_head.weight')); // [T, V]
    const ce = crossEntropy(tape, logits, targets);
    const loss = weightedSum(tape, [ce, ...balance, ...zLoss]);
    const total = (terms: Var[]) => terms.reduce((sum, v) => sum + v.item(), 0);
    return { loss, logits, crossEntropy: ce.item(), loadBalancing: total(balance), routerZ: total(zLoss), layers };
  }

  /** Paper §4.1.3: an always-active expert with weight 1 beside the routed ones (a one-expert MoE over every token). */
  private sharedExpert(tape: Tape, x: Var, pre: string): Var {
    const tokens = x.shape[0]!;
    const p = (kind: string) => [this.leaf(tape, `${pre}mlp.shared_expert.${kind}.weight`)];
    const everyToken = Int32Array.from({ length: tokens }, (_, t) => t);
    const ones = tape.constant(tape.alloc(tokens).fill(1), [tokens]);
    return experts(tape, x, { gate: p('gate_proj'), up: p('up_proj'), down: p('down_proj') }, { tokens: [everyToken], weightIndex: [everyToken] }, ones);
  }

  private leaf(tape: Tape, name: string): Var {
    const param = this.param(name);
    return tape.leaf(param.data, param.shape, param.grad);
  }

  /** Spec §3.4: q, k, v projections → QK-norm over the full projection → RoPE → causal attention → o_proj. */
  private attention(tape: Tape, x: Var, pre: string, positions: Int32Array, sequences: number): Var {
    const c = this.arch.config;
    const p = (name: string) => this.leaf(tape, `${pre}self_attn.${name}.weight`);
    const ropeArgs = (heads: number) => ({ positions, heads, headDim: c.headDim, inverseFrequencies: this.inverseFrequencies });
    const q = rope(tape, rmsnorm(tape, linear(tape, x, p('q_proj')), p('q_norm'), c.rmsNormEps), ropeArgs(c.numHeads));
    const k = rope(tape, rmsnorm(tape, linear(tape, x, p('k_proj')), p('k_norm'), c.rmsNormEps), ropeArgs(c.numKVHeads));
    const v = linear(tape, x, p('v_proj'));
    const shape = { sequences, length: positions.length / sequences, heads: c.numHeads, kvHeads: c.numKVHeads, headDim: c.headDim };
    return linear(tape, causalAttention(tape, q, k, v, shape), p('o_proj'));
  }

  /** Spec §3.6 and paper eq. (1): softmax router over all experts, top-k, Σ_k p_k · SwiGLU_k(x). */
  private moe(tape: Tape, x: Var, pre: string, weights: LossWeights): { out: Var; loadBalancing: Var; routerZ: Var; routing: LayerRouting } {
    const c = this.arch.config;
    const tokens = x.shape[0]!;
    const routerLogits = linear(tape, x, this.leaf(tape, `${pre}mlp.gate.weight`)); // [T, E]
    const probs = softmaxRows(tape, routerLogits);
    const route: Route =
      this.arch.routing === 'expert_choice'
        ? expertChoice(probs.data, tokens, c.numExperts, Math.max(1, Math.round((this.arch.capacityFactor * tokens * c.numExpertsPerTok) / c.numExperts)))
        : tokenChoice(probs.data, tokens, c.numExperts, c.numExpertsPerTok);
    let topWeights = gather(tape, probs, route.gatherIndex);
    if (c.normTopKProb && this.arch.routing === 'token_choice') topWeights = normalizeGroups(tape, topWeights, c.numExpertsPerTok);
    const expertParams = (kind: string) => Array.from({ length: c.numExperts }, (_, e) => this.leaf(tape, `${pre}mlp.experts.${e}.${kind}.weight`));
    let out = experts(tape, x, { gate: expertParams('gate_proj'), up: expertParams('up_proj'), down: expertParams('down_proj') }, route.assignments, topWeights);
    if (c.sharedExpertSize) out = add(tape, out, this.sharedExpert(tape, x, pre));
    const counts = Float64Array.from(route.assignments.tokens, (list) => list.length);
    const auxScale = 1 / (c.numLayers * tokens * c.numExpertsPerTok); // MB-OLMOE divides both losses by L·T·K
    return {
      out,
      loadBalancing: loadBalancingLoss(tape, probs, counts, weights.loadBalancing * c.numExperts * auxScale),
      routerZ: routerZLoss(tape, routerLogits, weights.routerZ * auxScale),
      routing: { counts, entropy: meanEntropy(probs.data, c.numExperts) },
    };
  }
}

/** inv_freq[j] = 1 / θ^(2j / Hd) in float64: a float64 model computes RoPE in float64 throughout. */
function ropeInverseFrequencies64(headDim: number, theta: number): Float64Array {
  return Float64Array.from({ length: headDim / 2 }, (_, j) => 1 / theta ** ((2 * j) / headDim));
}

function splitBatch(tokens: Int32Array, sequences: number, length: number): { inputs: Int32Array; targets: Int32Array; positions: Int32Array } {
  const inputs = new Int32Array(sequences * length);
  const targets = new Int32Array(sequences * length);
  const positions = new Int32Array(sequences * length);
  for (let b = 0; b < sequences; b++) {
    const row = tokens.subarray(b * (length + 1), (b + 1) * (length + 1));
    inputs.set(row.subarray(0, length), b * length);
    targets.set(row.subarray(1), b * length);
    for (let s = 0; s < length; s++) positions[b * length + s] = s;
  }
  return { inputs, targets, positions };
}

function meanEntropy(probs: ArrayLike<number>, width: number): number {
  let total = 0;
  for (let i = 0; i < probs.length; i++) if (probs[i]! > 0) total -= probs[i]! * Math.log(probs[i]!);
  return total / (probs.length / width);
}
