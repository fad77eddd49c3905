/** Central differences for the gradient checks (float64 backends): ∂loss/∂values[j] ≈ (L(v + h) − L(v − h)) / 2h. */
export function centralDifference(values: Float64Array | Float32Array, j: number, lossAt: () => number, h = 1e-5): number {
  const saved = values[j]!;
  values[j] = saved + h;
  const plus = lossAt();
  values[j] = saved - h;
  const minus = lossAt();
  values[j] = saved;
  return (plus - minus) / (2 * h);
}
