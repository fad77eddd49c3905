/**
 * The reference backend: pure TypeScript, the executable spec every other backend is tested against, forward and
 * backward. Activations are float32, or float64 with `precision: 'f64'` (the gradient checks against finite
 * differences); weights are kept in their stored dtype.
 */
import type { Backend, KVCacheOptions, Tensor, WeightSource } from '../../core/backend.js';
import type { MatmulPrecision, TrainingBackend } from '../../core/training.js';
import { byteSize, widenInto } from '../../core/dtype.js';
import { OlmoeError } from '../../core/errors.js';
import { attention, attentionBackward, attentionForward, RefKVCache } from './attention.js';
import { adamw, crossEntropy, crossEntropyBackward, crossEntropyForward, loadBalancingBackward, loadBalancingLoss, routerZBackward, routerZLoss, sumOfSquares, weightedCrossEntropy, weightedCrossEntropyBackward, weightedCrossEntropyForward } from './losses.js';
import { productOps } from './bf16.js';
import { router, routerBackward } from './moe.js';
import {
  accumulate, accumulateRows, add, clamp, concatRows, embedding, embeddingBackward, rmsnorm, rmsnormBackward, rope, ropeBackward, rows, scale, dropout,
} from './ops.js';
import { activation, asRef, checkShapes, floats, RefTensor, showShape, sizeOf, storageFor } from './tensor.js';

export interface ReferenceOptions {
  /** 'f64': activations, gradients and parameters in float64 (gradient checks). Default 'f32'. */
  precision?: 'f32' | 'f64';
}

export class ReferenceBackend implements Backend, TrainingBackend {
  readonly name: string = 'reference';
  readonly precision: 'f32' | 'f64';
  private products = productOps('fp32');
  private productPrecision: MatmulPrecision = 'fp32';

  constructor(opts: ReferenceOptions = {}) {
    this.precision = opts.precision ?? 'f32';
  }

  async weight(source: WeightSource): Promise<Tensor> {
    const bytes = await source.read();
    const needed = byteSize(source.dtype, source.shape);
    if (needed !== bytes.byteLength) {
      throw new OlmoeError('input', `weight ${source.name} of shape [${source.shape}] ${source.dtype} needs ${needed} bytes, got ${bytes.byteLength}`);
    }
    return new RefTensor(source.dtype, source.shape, storageFor(source.dtype, bytes));
  }

  fromFloat32(data: Float32Array, shape: readonly number[]): Tensor {
    return activation(this.precision === 'f64' ? Float64Array.from(data) : data, shape);
  }

  /** Activations rounded to float32 (a copy for float64); weights widened from their stored dtype. */
  toFloat32(x: Tensor): Float32Array {
    const tensor = asRef(x);
    if (tensor.dtype === 'f32') return tensor.data as Float32Array;
    if (tensor.dtype === 'f64') return Float32Array.from(tensor.data as Float64Array);
    const out = new Float32Array(sizeOf(tensor));
    widenInto(tensor.dtype, tensor.data, 0, out.length, out);
    return out;
  }

  zeros(shape: readonly number[]): Tensor {
    const size = shape.reduce((a, b) => a * b, 1);
    return activation(this.precision === 'f64' ? new Float64Array(size) : new Float32Array(size), shape);
  }

  empty(shape: readonly number[]): Tensor {
    return this.zeros(shape);
  }

  write(x: Tensor, values: Float32Array | Float64Array): void {
    const data = floats(x);
    checkShapes('write', data.length === values.length, () => `${values.length} values into ${showShape(x)}`);
    data.set(values);
  }

  fill(x: Tensor, value: number): void {
    floats(x).fill(value);
  }

  get matmulPrecision(): MatmulPrecision {
    return this.productPrecision;
  }

  /** bf16: every matrix product on bf16-rounded operands (bf16.ts). */
  setMatmulPrecision(precision: MatmulPrecision): void {
    this.productPrecision = precision;
    this.products = productOps(precision);
  }

  matmul: Backend['matmul'] = (x, w) => this.products.matmul(x, w);
  experts: Backend['experts'] = (x, weights, routing) => this.products.experts(x, weights, routing);
  expertsForward: TrainingBackend['expertsForward'] = (x, weights, routing) => this.products.expertsForward(x, weights, routing);
  matmulBackward: TrainingBackend['matmulBackward'] = (args) => this.products.matmulBackward(args);
  expertsBackward: TrainingBackend['expertsBackward'] = (args) => this.products.expertsBackward(args);

  createKVCache(opts: KVCacheOptions): RefKVCache {
    return new RefKVCache(opts);
  }

  embedding = embedding;
  rmsnorm = rmsnorm;
  rope = rope;
  clamp = clamp;
  attention = attention;
  router = router;
  add = add;
  rows = rows;
  concatRows = concatRows;

  crossEntropy = crossEntropy;
  weightedCrossEntropy = weightedCrossEntropy;
  loadBalancingLoss = loadBalancingLoss;
  routerZLoss = routerZLoss;
  scale = scale;
  dropout = dropout;

  attentionForward = attentionForward;
  crossEntropyForward = crossEntropyForward;
  weightedCrossEntropyForward = weightedCrossEntropyForward;
  accumulate = accumulate;
  accumulateRows = accumulateRows;
  embeddingBackward = embeddingBackward;
  rmsnormBackward = rmsnormBackward;
  ropeBackward = ropeBackward;
  attentionBackward = attentionBackward;
  routerBackward = routerBackward;
  crossEntropyBackward = crossEntropyBackward;
  weightedCrossEntropyBackward = weightedCrossEntropyBackward;
  loadBalancingBackward = loadBalancingBackward;
  routerZBackward = routerZBackward;
  sumOfSquares = sumOfSquares;
  adamw = adamw;
}
