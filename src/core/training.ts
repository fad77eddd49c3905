/**
 * The training half of the Backend interface: the losses, each op's backward and the optimizer step. The
 * autograd tape (src/autograd/) calls these; the model never does. Backward ops ADD their input gradients into
 * accumulator tensors the tape owns (null where a gradient is not needed), so gradients of a tensor used twice,
 * and of weights across micro-batches, sum without extra copies.
 * Dimension legend: as in core/backend.ts; A assignments (token choice: T·K).
 */
import type { AttentionArgs, Backend, ExpertWeights, RopeOptions, Routing, RouterOptions, Tensor } from './backend.js';

/** What a forward op kept for its backward (backend-private: attention's log-sum-exp, the experts' activations). */
export interface SavedState {
  readonly op: string;
}

/** Targets of a cross-entropy; this one predicts nothing (not counted in the mean). */
export const IGNORE_TARGET = -1;

/** Per-token loss weights from the per-token negative log-likelihoods (float64, one per target; 0 where ignored). */
export type TokenWeights = (nll: Float64Array) => ArrayLike<number>;

/** Scalar losses, [1] tensors: what a training step adds to the model's forward. */
export interface LossOps {
  /** Mean over counted targets of −log softmax(logits [T, V])[target]. */
  crossEntropy(logits: Tensor, targets: Int32Array): Tensor;
  /**
   * Σ_t w_t · nll_t with nll_t = −log softmax(logits [T, V])[target_t] (0 at IGNORE_TARGET) and w = weightsOf(nll)
   * computed on the host from the forward's own values: a loss on sequence log-probs (DPO, KTO: log p(seq) = −Σ nll_t)
   * backpropagates as this cross-entropy with per-token weights w_t = −∂L/∂log p(seq). The weights are constants
   * of the backward (no gradient flows through weightsOf). No [T, V] copy is kept, only a per-token log-sum-exp.
   */
  weightedCrossEntropy(logits: Tensor, targets: Int32Array, weightsOf: TokenWeights): Tensor;
  /**
   * Load-balancing loss of one layer (spec §3.8, MB-OLMOE): scale · Σ_e counts[e] · mean_t probs[t, e]. The counts
   * (assignments per expert) are constants; the gradient flows through the mean probabilities.
   */
  loadBalancingLoss(probs: Tensor, counts: Float64Array, scale: number): Tensor;
  /** Router z-loss of one layer (spec §3.8): scale · Σ_t logsumexp(logits_t)². */
  routerZLoss(logits: Tensor, scale: number): Tensor;
  /** factor · x (weights the loss terms). */
  scale(x: Tensor, factor: number): Tensor;
}

/** One parameter for the optimizer: its value, gradient and AdamW moments, all of one shape. */
export interface AdamWTensors {
  readonly value: Tensor;
  readonly grad: Tensor;
  readonly m: Tensor;
  readonly v: Tensor;
  /** false for norm gains (no weight decay). */
  readonly decay: boolean;
}

/** One AdamW update (PyTorch's `torch.optim.AdamW`): `step` counts from 1; grads are multiplied by gradScale first. */
export interface AdamWStep {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  readonly step: number;
  /** The clipping factor (1: none), applied as PyTorch's clip_grad_norm_ scales the gradients before the step. */
  readonly gradScale: number;
}

/**
 * Training's matrix products (projections, experts, LM head; forward and backward): 'fp32', or 'bf16' mixed precision:
 * both operands rounded to bfloat16 (to nearest, ties to even), products summed in float32, everything else float32.
 */
export type MatmulPrecision = 'fp32' | 'bf16';

export interface TrainingBackend extends Backend, LossOps {
  /** 'f64' only on the reference backend (gradient checks); training runs in 'f32'. */
  readonly precision: 'f32' | 'f64';
  /** The precision of matmul, matmulBackward and the experts' products; 'fp32' until set. */
  readonly matmulPrecision: MatmulPrecision;
  /** Set it for the ops that follow (a training run sets its config's `precision`). Attention's products stay float32. */
  setMatmulPrecision(precision: MatmulPrecision): void;
  /** A zero-filled tensor of the backend's precision (gradients, moments, parameters before init). */
  zeros(shape: readonly number[]): Tensor;
  /**
   * A gradient accumulator for the tape: it counts as zeros, but a backend may leave it unfilled and have the first
   * backward op that adds into it write instead (no zeroing pass, no read). Only backward ops may receive it.
   */
  empty(shape: readonly number[]): Tensor;
  /** Overwrite x (of the backend's precision) with `values` (a checkpoint's weights, an initialization). */
  write(x: Tensor, values: Float32Array | Float64Array): void;
  fill(x: Tensor, value: number): void;

  /**
   * Forward ops that keep state for their backward (a state serves one backward call). Attention here has no KV cache
   * (training attends within the batch).
   */
  attentionForward(args: AttentionArgs): { out: Tensor; saved: SavedState };
  expertsForward(x: Tensor, weights: ExpertWeights, routing: Routing): { out: Tensor; saved: SavedState };
  crossEntropyForward(logits: Tensor, targets: Int32Array): { out: Tensor; saved: SavedState };
  weightedCrossEntropyForward(logits: Tensor, targets: Int32Array, weightsOf: TokenWeights): { out: Tensor; saved: SavedState };

  /**
   * Inverted dropout with a given mask: x ⊙ keep / (1 − p), keep[i] ∈ {0, 1} (LoRA's dropout on the adapter's input).
   * Linear in x, so its backward is the same op on the output's gradient.
   */
  dropout(x: Tensor, keep: Uint8Array, p: number): Tensor;
  /** target += factor · source (same size). */
  accumulate(target: Tensor, source: Tensor, factor?: number): void;
  /** Rows [start, start + n) of target [T, N] += source [n, N]. */
  accumulateRows(target: Tensor, start: number, source: Tensor): void;
  embeddingBackward(ids: Int32Array, dOut: Tensor, dTable: Tensor): void;
  matmulBackward(args: { x: Tensor; w: Tensor; dOut: Tensor; dx: Tensor | null; dw: Tensor | null }): void;
  rmsnormBackward(args: { x: Tensor; weight: Tensor; eps: number; dOut: Tensor; dx: Tensor | null; dWeight: Tensor | null }): void;
  ropeBackward(dOut: Tensor, positions: Int32Array, opts: RopeOptions, dx: Tensor): void;
  attentionBackward(args: { args: AttentionArgs; saved: SavedState; out: Tensor; dOut: Tensor; dq: Tensor; dk: Tensor; dv: Tensor }): void;
  /** Through top-k's gather (and norm_topk_prob's renormalization) and the softmax: dLogits += ∂/∂logits. */
  routerBackward(args: { routing: Routing; opts: RouterOptions; dProbs: Tensor | null; dWeights: Tensor | null; dLogits: Tensor }): void;
  expertsBackward(args: {
    x: Tensor; weights: ExpertWeights; routing: Routing; saved: SavedState; dOut: Tensor;
    dx: Tensor | null; dRoutingWeights: Tensor | null; dWeights: ExpertWeights | null;
  }): void;
  crossEntropyBackward(args: { logits: Tensor; targets: Int32Array; saved: SavedState; dLoss: Tensor; dLogits: Tensor }): void;
  /** dLogits[t] += dLoss · w_t · (softmax(logits_t) − onehot(target_t)), w as the forward computed it (in `saved`). */
  weightedCrossEntropyBackward(args: { logits: Tensor; targets: Int32Array; saved: SavedState; dLoss: Tensor; dLogits: Tensor }): void;
  loadBalancingBackward(args: { probs: Tensor; counts: Float64Array; scale: number; dLoss: Tensor; dProbs: Tensor }): void;
  routerZBackward(args: { logits: Tensor; scale: number; dLoss: Tensor; dLogits: Tensor }): void;

  /** Σ over tensors of Σ x² (the gradient norm for clipping; a readback, async on a GPU backend). */
  sumOfSquares(xs: readonly Tensor[]): number;
  adamw(params: readonly AdamWTensors[], step: AdamWStep): void;
}

/** Each op of the interface and who computes it on a backend: 'native', or 'reference: why' for a listed exception. */
export type OpImplementations = ReadonlyMap<string, string>;
