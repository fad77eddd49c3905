/**
 * RoPE's inverse frequencies (shared by every backend and by training), as PyTorch computes them in float32:
 * 1 / theta^(arange(0, Hd, 2) / Hd), rounding after each step (spec §3.5).
 */
export function ropeInverseFrequencies(headDim: number, theta: number): Float32Array {
  const half = headDim / 2;
  const inv = new Float32Array(half);
  for (let j = 0; j < half; j++) {
    const exponent = Math.fround((2 * j) / headDim);
    inv[j] = Math.fround(1 / Math.fround(Math.pow(theta, exponent)));
  }
  return inv;
}
