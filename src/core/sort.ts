/** Indices of `values` ordered by value, largest first; equal values keep ascending index order (spec §3.6 ties). */
export function indicesByValueDescending(values: ArrayLike<number>, keep: (value: number) => boolean = () => true): number[] {
  const indices: number[] = [];
  for (let i = 0; i < values.length; i++) if (keep(values[i]!)) indices.push(i);
  return indices.sort((a, b) => values[b]! - values[a]! || a - b);
}
