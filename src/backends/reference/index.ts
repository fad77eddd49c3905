/** The reference backend: pure TypeScript, float32 activations, weights kept in their stored dtype. */
import type { Backend, KVCacheOptions, Tensor, WeightSource } from '../../core/backend.js';
import { byteSize, widenInto } from '../../core/dtype.js';
import { OlmoeError } from '../../core/errors.js';
import { attention, RefKVCache } from './attention.js';
import { experts, router } from './moe.js';
import { add, clamp, embedding, matmul, rmsnorm, rope, rows } from './ops.js';
import { activation, asRef, f32, RefTensor, storageFor } from './tensor.js';

export class ReferenceBackend implements Backend {
  readonly name: string = 'reference';

  async weight(source: WeightSource): Promise<Tensor> {
    const bytes = await source.read();
    const needed = byteSize(source.dtype, source.shape);
    if (needed !== bytes.byteLength) {
      throw new OlmoeError('input', `weight ${source.name} of shape [${source.shape}] ${source.dtype} needs ${needed} bytes, got ${bytes.byteLength}`);
    }
    return new RefTensor(source.dtype, source.shape, storageFor(source.dtype, bytes));
  }

  fromFloat32(data: Float32Array, shape: readonly number[]): Tensor {
    return activation(data, shape);
  }

  /** Activations as they are; weights widened from their stored dtype. */
  toFloat32(x: Tensor): Float32Array {
    const tensor = asRef(x);
    if (tensor.dtype === 'f32') return f32(x);
    const out = new Float32Array(tensor.shape.reduce((a, b) => a * b, 1));
    widenInto(tensor.dtype, tensor.data, 0, out.length, out);
    return out;
  }

  createKVCache(opts: KVCacheOptions): RefKVCache {
    return new RefKVCache(opts);
  }

  embedding = embedding;
  matmul = matmul;
  rmsnorm = rmsnorm;
  rope = rope;
  clamp = clamp;
  attention = attention;
  router = router;
  experts = experts;
  add = add;
  rows = rows;
}
