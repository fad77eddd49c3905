/**
 * OLMoE for training: the one forward definition (model/forward.ts) run on an autograd tape, plus the next-token
 * cross-entropy and the paper's auxiliary losses (spec §3.8). Parameters are backend tensors carrying their HF names
 * (model/weights.ts), so a checkpoint is the parameter list written in table order.
 * Dimension legend: B sequences, S positions, T = B·S tokens, D hidden, E experts, K top-k, V vocab.
 */
import type { RoutingMode, Tensor } from '../core/backend.js';
import { InputError } from '../core/errors.js';
import { IGNORE_TARGET, type LossOps, type TokenWeights, type TrainingBackend } from '../core/training.js';
import { Tape } from '../autograd/tape.js';
import type { OlmoeConfig } from '../model/config.js';
import { decoderStack, logits as headLogits, type LayerRouting as RouterRecord, type SequenceSlice } from '../model/forward.js';
import { assembleWeights, weightTable, type LayerLora, type OlmoeWeights } from '../model/weights.js';

export type { RoutingMode } from '../core/backend.js';
export { IGNORE_TARGET } from '../core/training.js';

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

/** A trainable tensor on the backend and its gradient accumulator; no weight decay on norm gains. */
export interface TrainParam {
  readonly name: string;
  readonly shape: readonly number[];
  readonly value: Tensor;
  readonly grad: Tensor;
  readonly decay: boolean;
}

/**
 * Trainable parts added to the frozen model (LoRA: train/adapt/lora-train.ts): their parameters and, for each pass,
 * each layer's LoRA parts (model/weights.ts LayerLora) built from the tensors `tensor` gives on the pass's executor.
 */
export interface ModelAdapter {
  readonly params: readonly TrainParam[];
  layers(executor: Tape | TrainingBackend, tensor: (param: TrainParam) => Tensor): readonly (LayerLora | undefined)[];
}

/** One layer's routing in a step, for the metrics. */
export interface RoutingStats {
  /** Assignments per expert (token choice: T·K in all). */
  readonly counts: Float64Array;
  /** Mean over tokens of the router distribution's entropy, nats. */
  readonly entropy: number;
}

export interface StepResult {
  /** The total loss (CE + load balancing + z-loss), [1] on the executor it ran on. */
  readonly loss: Tensor;
  /** [T, V] next-token logits. */
  readonly logits: Tensor;
  /** The value of `loss`. */
  readonly total: number;
  readonly crossEntropy: number;
  readonly loadBalancing: number;
  readonly routerZ: number;
  readonly layers: readonly RoutingStats[];
  /** The loss terms as tensors of the executor (the numbers above are their values read back as float32). */
  readonly parts: { readonly crossEntropy: Tensor; readonly loadBalancing: readonly Tensor[]; readonly routerZ: readonly Tensor[] };
}

/** A micro-batch: B rows of S + 1 ids (position s predicts s + 1, unless `targets` [B·S] says otherwise). */
export interface TrainBatch {
  readonly tokens: Int32Array;
  readonly sequences: number;
  /** IGNORE_TARGET where a position predicts nothing. */
  readonly targets?: Int32Array;
  /**
   * Per-token loss weights in place of the mean cross-entropy (adaptation: SFT's per-token or per-sequence
   * reductions, the sequence-level DPO/KTO losses through their gradient w.r.t. each token's log-prob).
   */
  readonly tokenWeights?: TokenWeights;
  /**
   * [B·(S + 1)] document of each id (packed rows): each run of one document is its own sequence for attention
   * and positions restart at 0, so packed documents do not see each other.
   */
  readonly documents?: Int32Array;
}

export class TrainModel {
  private baseParams: readonly TrainParam[];
  private byName: Map<string, TrainParam>;
  private adapter: ModelAdapter | undefined;

  constructor(
    readonly arch: TrainArchitecture,
    readonly backend: TrainingBackend,
  ) {
    const config = arch.config;
    if (config.clipQkv !== null) throw new InputError('training does not support clip_qkv (OLMoE trains without it)');
    if (config.tieWordEmbeddings) throw new InputError('training does not support tie_word_embeddings (OLMoE unties them)');
    this.baseParams = weightTable(config).map((spec) => ({
      name: spec.hf, shape: spec.shape, value: backend.zeros(spec.shape), grad: backend.zeros(spec.shape), decay: spec.shape.length > 1,
    }));
    this.byName = new Map(this.baseParams.map((p) => [p.name, p]));
  }

  /**
   * The base model's parameters in weight-table order (a checkpoint). Once an adapter is attached they are frozen:
   * their `grad` is an empty [0] tensor (no gradient is computed or stored for them) and the optimizer takes the
   * adapter's parameters instead.
   */
  get params(): readonly TrainParam[] {
    return this.baseParams;
  }

  /** The attached adapter's parameters, or none. */
  get adapterParams(): readonly TrainParam[] {
    return this.adapter?.params ?? [];
  }

  /**
   * Freeze the base and train `adapter` instead: the base weights enter every pass as constants of the tape (no
   * backward through a frozen matrix's weight gradient, only through its input where an adapter lies below), and
   * their gradient storage is released.
   */
  attachAdapter(adapter: ModelAdapter): void {
    if (this.adapter) throw new InputError('an adapter is already attached to this model');
    this.adapter = adapter;
    const frozen = this.backend.zeros([0]);
    this.baseParams = this.baseParams.map((p) => ({ ...p, grad: frozen }));
    this.byName = new Map(this.baseParams.map((p) => [p.name, p]));
  }

  param(name: string): TrainParam {
    const found = this.byName.get(name);
    if (!found) throw new InputError(`no parameter named ${name}`);
    return found;
  }

  /** A parameter's values on the host (float32). */
  read(param: TrainParam): Float32Array {
    return this.backend.toFloat32(param.value);
  }

  /** Fill every matrix with init(values) and every norm gain with ones. */
  initialize(init: (values: Float32Array | Float64Array) => void): void {
    for (const p of this.params) {
      if (!p.decay) {
        this.backend.fill(p.value, 1);
        continue;
      }
      const size = p.shape.reduce((a, b) => a * b, 1);
      const values = this.backend.precision === 'f64' ? new Float64Array(size) : new Float32Array(size);
      init(values);
      this.backend.write(p.value, values);
    }
  }

  /** Zero the gradients of what trains: the base's parameters, or the adapter's once one is attached. */
  zeroGrads(): void {
    for (const p of this.adapter?.params ?? this.params) this.backend.fill(p.grad, 0);
  }

  /**
   * Loss of one micro-batch on `executor`: a Tape records it for backward (`tape.backward(result.loss)` adds into
   * the parameters' gradients); the backend itself evaluates without recording.
   */
  forward(executor: Tape | TrainingBackend, batch: TrainBatch, weights: LossWeights): StepResult {
    const c = this.arch.config;
    const { slices, targets } = splitBatch(batch, c.maxPositionEmbeddings);
    const records: RouterRecord[] = [];
    const model = { config: c, weights: this.weightsOn(executor), variant: { routing: this.arch.routing, capacityFactor: this.arch.capacityFactor } };
    const hidden = decoderStack(executor, model, slices, { onRouting: (record) => records.push(record) });
    const logits = headLogits(executor, model, hidden); // [T, V]
    const ce = batch.tokenWeights ? executor.weightedCrossEntropy(logits, targets, batch.tokenWeights) : executor.crossEntropy(logits, targets);
    const aux = auxiliaryLosses(executor, records, c, weights);
    const loss = [...aux.loadBalancing, ...aux.routerZ].reduce((sum, term) => executor.add(sum, term), ce);
    const scalar = (t: Tensor) => executor.toFloat32(t)[0]!;
    const total = (terms: Tensor[]) => terms.reduce((sum, t) => sum + scalar(t), 0);
    return {
      loss, logits, total: scalar(loss), crossEntropy: scalar(ce), loadBalancing: total(aux.loadBalancing), routerZ: total(aux.routerZ),
      layers: records.map((r) => ({ counts: expertCounts(r), entropy: meanEntropy(executor.toFloat32(r.routing.probs), c.numExperts) })),
      parts: { crossEntropy: ce, ...aux },
    };
  }

  /** The weights as tensors of `executor`: tape leaves for what trains, constants for the frozen base; the adapter's parts. */
  private weightsOn(executor: Tape | TrainingBackend): OlmoeWeights {
    const trainable = (p: TrainParam): Tensor => (executor instanceof Tape ? executor.param(p.value, p.grad) : p.value);
    const frozen = (p: TrainParam): Tensor => (executor instanceof Tape ? executor.constant(p.value) : p.value);
    const adapter = this.adapter;
    const weights = assembleWeights(this.arch.config, new Map(this.params.map((p) => [p.name, adapter ? frozen(p) : trainable(p)])));
    if (!adapter) return weights;
    const lora = adapter.layers(executor, trainable);
    return { ...weights, layers: weights.layers.map((layer, i) => (lora[i] ? { ...layer, lora: lora[i] } : layer)) };
  }
}

/** MB-OLMOE divides both auxiliary losses by L·T·K; the load balancing also multiplies by E (spec §3.8). */
function auxiliaryLosses(ops: LossOps, records: readonly RouterRecord[], c: OlmoeConfig, weights: LossWeights) {
  const loadBalancing: Tensor[] = [];
  const routerZ: Tensor[] = [];
  for (const { logits, routing } of records) {
    const auxScale = 1 / (c.numLayers * routing.tokens * c.numExpertsPerTok);
    if (weights.loadBalancing) loadBalancing.push(ops.loadBalancingLoss(routing.probs, expertCounts({ logits, routing, layer: 0 }), weights.loadBalancing * c.numExperts * auxScale));
    if (weights.routerZ) routerZ.push(ops.routerZLoss(logits, weights.routerZ * auxScale));
  }
  return { loadBalancing, routerZ };
}

function expertCounts({ routing }: RouterRecord): Float64Array {
  const counts = new Float64Array(routing.numExperts);
  for (const e of routing.expertIds) counts[e]!++;
  return counts;
}

function splitBatch(batch: TrainBatch, context: number): { slices: SequenceSlice[]; targets: Int32Array } {
  const { tokens, sequences } = batch;
  const length = tokens.length / sequences - 1;
  if (!Number.isInteger(length) || length < 1) throw new InputError(`a batch of ${tokens.length} ids does not split into ${sequences} rows of S + 1`);
  if (length > context) throw new InputError(`sequence length ${length} exceeds max_position_embeddings ${context}`);
  const targets = new Int32Array(sequences * length);
  if (batch.documents && batch.documents.length !== tokens.length) throw new InputError(`${batch.documents.length} document ids for ${tokens.length} tokens`);
  const slices = Array.from({ length: sequences }, (_, b) => {
    const row = tokens.subarray(b * (length + 1), (b + 1) * (length + 1));
    targets.set(row.subarray(1), b * length);
    return batch.documents ? documentSlices(row.subarray(0, length), batch.documents.subarray(b * (length + 1), b * (length + 1) + length)) : [{ ids: row.subarray(0, length), start: 0 }];
  }).flat();
  if (batch.targets) {
    if (batch.targets.length !== targets.length) throw new InputError(`${batch.targets.length} targets for ${targets.length} positions`);
    const bad = batch.targets.findIndex((id) => id < 0 && id !== IGNORE_TARGET);
    if (bad >= 0) throw new InputError(`target ${batch.targets[bad]} at position ${bad}: expected a token id or ${IGNORE_TARGET} (ignored)`);
    return { slices, targets: batch.targets };
  }
  return { slices, targets };
}

/** A row's inputs cut at document changes, each run a sequence from position 0 (token order is kept). */
function documentSlices(ids: Int32Array, documents: Int32Array): SequenceSlice[] {
  const slices: SequenceSlice[] = [];
  let start = 0;
  for (let t = 1; t <= ids.length; t++) {
    if (t < ids.length && documents[t] === documents[start]) continue;
    slices.push({ ids: ids.subarray(start, t), start: 0 });
    start = t;
  }
  return slices;
}

function meanEntropy(probs: ArrayLike<number>, width: number): number {
  let total = 0;
  for (let i = 0; i < probs.length; i++) if (probs[i]! > 0) total -= probs[i]! * Math.log(probs[i]!);
  return total / (probs.length / width);
}
