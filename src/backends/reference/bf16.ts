/**
 * bf16 mixed precision of training's matrix products, the reference twin of native/src/train-gemm.cc's bf16 mode:
 * both operands of every product rounded to bfloat16 (round to nearest, ties to even), products summed at the
 * backend's precision (double here, float32 natively). Everything else (norms, softmax, losses, optimizer, master
 * weights, gradients) stays in float32 (mixed precision as in Micikevicius et al. 2018, "Mixed Precision Training").
 */
import type { ExpertWeights, Routing, Tensor } from '../../core/backend.js';
import type { MatmulPrecision, SavedState } from '../../core/training.js';
import { float32ToBf16Bits, isQuantized } from '../../core/dtype.js';
import { experts, expertsBackward, expertsForward } from './moe.js';
import { FULL_PRODUCTS, matmul, matmulBackward, type Products } from './ops.js';
import { activation, asRef, valuesOf, type RefTensor } from './tensor.js';

const bitsScratch = new Uint32Array(1);
const floatScratch = new Float32Array(bitsScratch.buffer);

/**
 * x rounded to the nearest bfloat16 (ties to even; ±inf and NaN stay, values past the largest finite bf16 become ±inf).
 * A float64 input is first rounded to float32, the type the native kernels multiply.
 */
export function roundBf16(x: number): number {
  bitsScratch[0] = float32ToBf16Bits(x) << 16;
  return floatScratch[0]!;
}

/** A copy of x (an activation, or a weight widened) with every value rounded to bf16, in the precision of x. */
export function bf16Copy(x: Tensor): RefTensor {
  const t = asRef(x);
  if (t.dtype !== 'f64' && isQuantized(t.dtype)) return t; // quantized weights are for inference, never bf16 products
  const values = valuesOf(x);
  const out = t.dtype === 'f64' ? new Float64Array(values.length) : new Float32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = roundBf16(values[i]!);
  return activation(out, t.shape);
}

/** Every operand rounded to bf16 before the product; gradients accumulate into the float accumulators given. */
export const BF16_PRODUCTS: Products = {
  matmul: (x, w) => matmul(bf16Copy(x), bf16Copy(w)),
  matmulBackward: (a) => matmulBackward({ ...a, x: bf16Copy(a.x), w: bf16Copy(a.w), dOut: bf16Copy(a.dOut) }),
};

export const productsFor = (precision: MatmulPrecision): Products => (precision === 'bf16' ? BF16_PRODUCTS : FULL_PRODUCTS);

/** The reference's matrix-product ops at one precision: what ReferenceBackend runs after setMatmulPrecision. */
export function productOps(precision: MatmulPrecision) {
  const products = productsFor(precision);
  return {
    matmul: products.matmul,
    matmulBackward: products.matmulBackward,
    experts: (x: Tensor, weights: ExpertWeights, routing: Routing) => experts(x, weights, routing, products),
    expertsForward: (x: Tensor, weights: ExpertWeights, routing: Routing) => expertsForward(x, weights, routing, products),
    expertsBackward: (args: Parameters<typeof expertsBackward>[0] & { saved?: SavedState }) => expertsBackward(args, products),
  };
}
