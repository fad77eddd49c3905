/**
 * Tape-based reverse mode as a Backend: every op runs on the wrapped backend and, when an input needs a
 * gradient, records a step that calls that backend's backward for the op. The model runs on a Tape exactly as it
 * runs on a backend, so training and inference share one definition (ARCHITECTURE.md: autograd/ implements the
 * Backend interface by recording a tape around another backend). `backward` replays the steps last to first;
 * each adds into the gradients of the op's inputs (allocated on first use; a backend may have the first op write them).
 */
import type { AttentionArgs, Backend, ExpertWeights, KVCache, KVCacheOptions, RopeOptions, Routing, RouterOptions, Tensor, WeightSource } from '../core/backend.js';
import { InputError, UnsupportedError } from '../core/errors.js';
import type { LossOps, TokenWeights, TrainingBackend } from '../core/training.js';

/** A value on the tape: the wrapped backend's tensor, and its gradient once backward reaches it. */
export class TapeTensor implements Tensor {
  grad: Tensor | null;
  constructor(
    readonly value: Tensor,
    readonly requiresGrad: boolean,
    grad: Tensor | null = null,
    /** A parameter: its gradient is the optimizer's accumulator and outlives the tape. */
    readonly leaf = false,
  ) {
    this.grad = grad;
  }

  get shape(): readonly number[] {
    return this.value.shape;
  }

  get dtype(): Tensor['dtype'] {
    return this.value.dtype;
  }
}

export interface TapeOptions {
  /** false (evaluation): parameters are constants and nothing is recorded. */
  readonly grad?: boolean;
}

export class Tape implements Backend, LossOps {
  readonly name: string;
  private steps: Array<() => void> = [];
  /** Every value that needs a gradient (their accumulators are handed back to the backend after backward). */
  private tracked: TapeTensor[] = [];
  /** Values of the last backward, kept until `release` hands their storage back. */
  private done: TapeTensor[] = [];

  constructor(
    readonly inner: TrainingBackend,
    private readonly opts: TapeOptions = {},
  ) {
    this.name = `tape(${inner.name})`;
  }

  /** Whether this tape records for a backward (false: an evaluation tape; training-only behaviour such as dropout is off). */
  get recording(): boolean {
    return this.opts.grad !== false;
  }

  /** A trainable leaf whose gradient accumulates into `grad` (owned by the optimizer, kept across micro-batches). */
  param(value: Tensor, grad: Tensor): TapeTensor {
    return this.opts.grad === false ? new TapeTensor(value, false) : new TapeTensor(value, true, grad, true);
  }

  constant(value: Tensor): TapeTensor {
    return new TapeTensor(value, false);
  }

  /** d(scale · loss)/d(every leaf), added into the leaves' gradients; `loss` must be a scalar. */
  backward(loss: Tensor, scale = 1): void {
    if (loss.shape.reduce((a, b) => a * b, 1) !== 1) throw new InputError(`backward needs a scalar loss, got shape [${loss.shape.join(', ')}]`);
    this.backwardWith(loss, this.inner.fromFloat32(Float32Array.of(scale), [1]));
  }

  /**
   * The vector-Jacobian product: d(Σ dOutput ⊙ output)/d(every leaf), for any output (dOutput of the inner backend;
   * the tape may use it as a gradient buffer, so its values are not kept).
   */
  backwardWith(output: Tensor, dOutput: Tensor): void {
    const root = tapeTensor(output);
    if (dOutput.shape.join() !== root.shape.join()) throw new InputError(`a gradient of shape [${dOutput.shape}] for an output of shape [${root.shape}]`);
    root.grad = dOutput;
    for (let i = this.steps.length - 1; i >= 0; i--) this.steps[i]!();
    this.steps = [];
    this.releaseGradients(root);
  }

  /** After backward only the leaves' gradients are kept: the intermediate accumulators go back to the backend. */
  private releaseGradients(root: TapeTensor): void {
    const released = new Set<Tensor>([root.grad!]);
    for (const t of this.tracked) {
      if (t.leaf || !t.grad || released.has(t.grad)) continue;
      released.add(t.grad);
      this.inner.release?.(t.grad);
      t.grad = null;
    }
    this.done = this.tracked;
    this.tracked = [];
  }

  /**
   * Hand the storage of every value the last backward went through back to the backend for reuse (a training step
   * allocates the same sizes each time). Afterwards no tensor that op of this tape returned may be used.
   */
  release(): void {
    const released = new Set<Tensor>();
    for (const t of this.done) {
      if (released.has(t.value)) continue;
      released.add(t.value);
      this.inner.release?.(t.value);
    }
    this.done = [];
  }

  // ---------------------------------------------------------------- plumbing
  private output(value: Tensor, inputs: readonly Tensor[]): TapeTensor {
    const out = new TapeTensor(value, inputs.some((x) => tapeTensor(x).requiresGrad));
    if (out.requiresGrad) this.tracked.push(out);
    return out;
  }

  /** Record `step` for the outputs (run when any of them received a gradient). */
  private record(outputs: readonly TapeTensor[], step: () => void): void {
    if (!outputs.some((o) => o.requiresGrad)) return;
    this.steps.push(() => {
      if (outputs.some((o) => o.grad)) step();
    });
  }

  /** The gradient accumulator of x (null when x needs none), allocated on first use (counts as zeros). */
  private gradOf(x: Tensor): Tensor | null {
    const t = tapeTensor(x);
    if (!t.requiresGrad) return null;
    t.grad ??= this.inner.empty(t.shape);
    return t.grad;
  }

  private grad(x: Tensor): Tensor {
    return this.gradOf(x)!;
  }

  // ---------------------------------------------------------------- Backend
  async weight(source: WeightSource): Promise<Tensor> {
    return this.constant(await this.inner.weight(source));
  }

  fromFloat32(data: Float32Array, shape: readonly number[]): Tensor {
    return this.constant(this.inner.fromFloat32(data, shape));
  }

  toFloat32(x: Tensor): Float32Array {
    return this.inner.toFloat32(value(x));
  }

  createKVCache(opts: KVCacheOptions): KVCache {
    return this.inner.createKVCache(opts);
  }

  embedding(table: Tensor, ids: Int32Array): Tensor {
    const out = this.output(this.inner.embedding(value(table), ids), [table]);
    this.record([out], () => this.inner.embeddingBackward(ids, out.grad!, this.grad(table)));
    return out;
  }

  matmul(x: Tensor, w: Tensor): Tensor {
    const out = this.output(this.inner.matmul(value(x), value(w)), [x, w]);
    this.record([out], () => this.inner.matmulBackward({ x: value(x), w: value(w), dOut: out.grad!, dx: this.gradOf(x), dw: this.gradOf(w) }));
    return out;
  }

  rmsnorm(x: Tensor, weight: Tensor, eps: number): Tensor {
    const out = this.output(this.inner.rmsnorm(value(x), value(weight), eps), [x, weight]);
    this.record([out], () => this.inner.rmsnormBackward({ x: value(x), weight: value(weight), eps, dOut: out.grad!, dx: this.gradOf(x), dWeight: this.gradOf(weight) }));
    return out;
  }

  rope(x: Tensor, positions: Int32Array, opts: RopeOptions): Tensor {
    const out = this.output(this.inner.rope(value(x), positions, opts), [x]);
    this.record([out], () => this.inner.ropeBackward(out.grad!, positions, opts, this.grad(x)));
    return out;
  }

  clamp(x: Tensor, limit: number): Tensor {
    if (tapeTensor(x).requiresGrad) throw new UnsupportedError('training does not support clip_qkv (OLMoE trains without it)');
    return this.constant(this.inner.clamp(value(x), limit));
  }

  attention(args: AttentionArgs): Tensor {
    const inner = { ...args, q: value(args.q), k: value(args.k), v: value(args.v) };
    if (![args.q, args.k, args.v].some((x) => tapeTensor(x).requiresGrad)) return this.constant(this.inner.attention(inner));
    if (args.sequences.some((s) => s.cache)) throw new UnsupportedError('attention over a KV cache is not differentiable here (training attends within the batch)');
    const { out: result, saved } = this.inner.attentionForward(inner);
    const out = this.output(result, [args.q, args.k, args.v]);
    this.record([out], () => {
      // The kernels write all three gradients: a constant input (k of a frozen layer below a LoRA on q) gets a scratch one.
      const scratch: Tensor[] = [];
      const accumulator = (x: Tensor) => this.gradOf(x) ?? scratch[scratch.push(this.inner.empty(x.shape)) - 1]!;
      this.inner.attentionBackward({ args: inner, saved, out: result, dOut: out.grad!, dq: accumulator(args.q), dk: accumulator(args.k), dv: accumulator(args.v) });
      for (const t of scratch) this.inner.release?.(t);
    });
    return out;
  }

  router(logits: Tensor, opts: RouterOptions): Routing {
    const inner = this.inner.router(value(logits), opts);
    const probs = this.output(inner.probs, [logits]);
    const weights = this.output(inner.weights, [logits]);
    this.record([probs, weights], () => this.inner.routerBackward({ routing: inner, opts, dProbs: probs.grad, dWeights: weights.grad, dLogits: this.grad(logits) }));
    return { ...inner, probs, weights };
  }

  experts(x: Tensor, weights: ExpertWeights, routing: Routing): Tensor {
    // The experts read the routing's assignments and weights; its probabilities may be any tensor.
    const inner = { ...routing, probs: routing.probs instanceof TapeTensor ? routing.probs.value : routing.probs, weights: value(routing.weights) };
    const params = [...weights.gate, ...weights.up, ...weights.down];
    const innerWeights = mapExperts(weights, value);
    const inputs = [x, routing.weights, ...params];
    if (!inputs.some((t) => tapeTensor(t).requiresGrad)) return this.constant(this.inner.experts(value(x), innerWeights, inner));
    const { out: result, saved } = this.inner.expertsForward(value(x), innerWeights, inner);
    const out = this.output(result, inputs);
    this.record([out], () => {
      // The kernels take every expert's accumulator or none: a frozen expert next to trained ones (a LoRA on some
      // experts) gets a scratch accumulator, handed back at once.
      const scratch: Tensor[] = [];
      const accumulator = (p: Tensor) => this.gradOf(p) ?? scratch[scratch.push(this.inner.empty(p.shape)) - 1]!;
      const dWeights = params.some((p) => tapeTensor(p).requiresGrad) ? mapExperts(weights, accumulator) : null;
      this.inner.expertsBackward({ x: value(x), weights: innerWeights, routing: inner, saved, dOut: out.grad!, dx: this.gradOf(x), dRoutingWeights: this.gradOf(routing.weights), dWeights });
      for (const t of scratch) this.inner.release?.(t);
    });
    return out;
  }

  /**
   * The gradient passes through unchanged: an input with no gradient yet takes the output's gradient tensor itself
   * (final once this step runs, and read by no other step), the other adds into its own. The residual stream's
   * adds then cost no copy.
   */
  add(a: Tensor, b: Tensor): Tensor {
    const out = this.output(this.inner.add(value(a), value(b)), [a, b]);
    this.record([out], () => {
      let handedOver = false;
      for (const input of [a, b].map(tapeTensor)) {
        if (!input.requiresGrad) continue;
        if (!input.grad && !handedOver) {
          input.grad = out.grad;
          handedOver = true;
        } else this.inner.accumulate(this.grad(input), out.grad!);
      }
    });
    return out;
  }

  rows(x: Tensor, start: number, count: number): Tensor {
    const out = this.output(this.inner.rows(value(x), start, count), [x]);
    this.record([out], () => this.inner.accumulateRows(this.grad(x), start, out.grad!));
    return out;
  }

  concatRows(parts: readonly Tensor[]): Tensor {
    const out = this.output(this.inner.concatRows(parts.map(value)), parts);
    this.record([out], () => {
      let at = 0;
      for (const part of parts) {
        const grad = this.gradOf(part);
        if (grad) this.inner.accumulate(grad, this.inner.rows(out.grad!, at, part.shape[0]!));
        at += part.shape[0]!;
      }
    });
    return out;
  }

  // ---------------------------------------------------------------- losses
  crossEntropy(logits: Tensor, targets: Int32Array): Tensor {
    if (!tapeTensor(logits).requiresGrad) return this.constant(this.inner.crossEntropy(value(logits), targets));
    const { out: result, saved } = this.inner.crossEntropyForward(value(logits), targets);
    const out = this.output(result, [logits]);
    this.record([out], () => this.inner.crossEntropyBackward({ logits: value(logits), targets, saved, dLoss: out.grad!, dLogits: this.grad(logits) }));
    return out;
  }

  weightedCrossEntropy(logits: Tensor, targets: Int32Array, weightsOf: TokenWeights): Tensor {
    if (!tapeTensor(logits).requiresGrad) return this.constant(this.inner.weightedCrossEntropy(value(logits), targets, weightsOf));
    const { out: result, saved } = this.inner.weightedCrossEntropyForward(value(logits), targets, weightsOf);
    const out = this.output(result, [logits]);
    this.record([out], () => this.inner.weightedCrossEntropyBackward({ logits: value(logits), targets, saved, dLoss: out.grad!, dLogits: this.grad(logits) }));
    return out;
  }

  loadBalancingLoss(probs: Tensor, counts: Float64Array, scale: number): Tensor {
    const out = this.output(this.inner.loadBalancingLoss(value(probs), counts, scale), [probs]);
    this.record([out], () => this.inner.loadBalancingBackward({ probs: value(probs), counts, scale, dLoss: out.grad!, dProbs: this.grad(probs) }));
    return out;
  }

  routerZLoss(logits: Tensor, scale: number): Tensor {
    const out = this.output(this.inner.routerZLoss(value(logits), scale), [logits]);
    this.record([out], () => this.inner.routerZBackward({ logits: value(logits), scale, dLoss: out.grad!, dLogits: this.grad(logits) }));
    return out;
  }

  /** Inverted dropout with the given mask (LoRA's adapter input); the gradient takes the same mask. */
  dropout(x: Tensor, keep: Uint8Array, p: number): Tensor {
    const out = this.output(this.inner.dropout(value(x), keep, p), [x]);
    this.record([out], () => {
      const masked = this.inner.dropout(out.grad!, keep, p);
      this.inner.accumulate(this.grad(x), masked);
      this.inner.release?.(masked);
    });
    return out;
  }

  scale(x: Tensor, factor: number): Tensor {
    const out = this.output(this.inner.scale(value(x), factor), [x]);
    this.record([out], () => this.inner.accumulate(this.grad(x), out.grad!, factor));
    return out;
  }
}

function tapeTensor(x: Tensor): TapeTensor {
  if (!(x instanceof TapeTensor)) throw new InputError('tensor is not on this tape (make weights with tape.param or tape.constant)');
  return x;
}

/** The wrapped backend's tensor. */
function value(x: Tensor): Tensor {
  return tapeTensor(x).value;
}

function mapExperts(weights: ExpertWeights, f: (t: Tensor) => Tensor): ExpertWeights {
  return { gate: weights.gate.map(f), up: weights.up.map(f), down: weights.down.map(f) };
}
