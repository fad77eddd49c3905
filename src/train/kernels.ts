/**
 * The matrix product training needs in all three orientations (forward x·Wᵀ, input gradient dY·W, weight
 * gradient dYᵀ·X), behind one interface: a reference kernel in plain loops (any precision; the gradient checks
 * run it in float64) and a backend's float32 GEMM (`Backend.gemmF32`, native).
 * Dimension legend: M rows of the result, N columns, K the summed dimension.
 */
import { InputError } from '../core/errors.js';
import type { Backend } from '../core/backend.js';
import type { Floats } from './autograd.js';

export interface GemmArgs {
  readonly m: number;
  readonly n: number;
  readonly k: number;
  /** [M, K], or [K, M] when transA. */
  readonly a: Floats;
  /** [K, N], or [N, K] when transB. */
  readonly b: Floats;
  /** [M, N]: overwritten, or added to when accumulate. */
  readonly c: Floats;
  readonly transA?: boolean;
  readonly transB?: boolean;
  readonly accumulate?: boolean;
}

export interface GemmKernels {
  readonly name: string;
  gemm(args: GemmArgs): void;
}

export function checkGemm({ m, n, k, a, b, c }: GemmArgs): void {
  if (a.length < m * k || b.length < k * n || c.length < m * n) {
    throw new InputError(`gemm ${m}×${k} · ${k}×${n}: operands hold ${a.length}, ${b.length}, ${c.length} values`);
  }
}

export const referenceGemm: GemmKernels = {
  name: 'reference',
  gemm(args) {
    checkGemm(args);
    const { m, n, k, a, b, c, transA = false, transB = false, accumulate = false } = args;
    if (!accumulate) c.fill(0, 0, m * n);
    // Row i of C gathers a[i, p] · b[p, :] over p, so the inner loop runs along contiguous rows of b and c.
    const bRow = new Float64Array(n);
    for (let p = 0; p < k; p++) {
      for (let j = 0; j < n; j++) bRow[j] = transB ? b[j * k + p]! : b[p * n + j]!;
      for (let i = 0; i < m; i++) {
        const aip = transA ? a[p * m + i]! : a[i * k + p]!;
        if (aip === 0) continue;
        const row = i * n;
        for (let j = 0; j < n; j++) c[row + j]! += aip * bRow[j]!;
      }
    }
  },
};

/**
 * The kernels for a backend: its float32 GEMM when it has one (the native backend), else the reference loops.
 * Float64 operands (gradient checks) always go to the reference kernel.
 */
export function gemmKernels(backend: Pick<Backend, 'name' | 'gemmF32'>): GemmKernels {
  const gemmF32 = backend.gemmF32?.bind(backend);
  if (!gemmF32) return referenceGemm;
  return {
    name: backend.name,
    gemm(args) {
      const { a, b, c } = args;
      if (!(a instanceof Float32Array && b instanceof Float32Array && c instanceof Float32Array)) return referenceGemm.gemm(args);
      checkGemm(args);
      gemmF32({ ...args, a, b, c });
    },
  };
}
