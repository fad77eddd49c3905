/** The reference backend: pure TypeScript, float32 activations, weights kept in their stored dtype. */
import type { Backend, HostTensor, KVCacheOptions, Tensor } from '../../core/backend.js';
import { DTYPE_BYTES } from '../../core/dtype.js';
import { OlmoeError } from '../../core/errors.js';
import { attention, RefKVCache } from './attention.js';
import { experts, router } from './moe.js';
import { add, clamp, embedding, matmul, rmsnorm, rope, rows } from './ops.js';
import { activation, f32, RefTensor, storageFor } from './tensor.js';

export class ReferenceBackend implements Backend {
  readonly name = 'reference';

  weight(host: HostTensor): Tensor {
    const elements = host.shape.reduce((a, b) => a * b, 1);
    if (elements * DTYPE_BYTES[host.dtype] !== host.bytes.byteLength) {
      throw new OlmoeError('input', `weight of shape [${host.shape}] ${host.dtype} needs ${elements * DTYPE_BYTES[host.dtype]} bytes, got ${host.bytes.byteLength}`);
    }
    return new RefTensor(host.dtype, host.shape, storageFor(host.dtype, host.bytes));
  }

  fromFloat32(data: Float32Array, shape: readonly number[]): Tensor {
    return activation(data, shape);
  }

  toFloat32(x: Tensor): Float32Array {
    return f32(x);
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
