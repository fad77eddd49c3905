/** Indices of `values` ordered by value, largest first; equal values keep ascending index order (spec §3.6 ties). */
export function indicesByValueDescending(values: ArrayLike<number>, keep: (value: number) => boolean = () => true): number[] {
  const indices: number[] = [];
  for (let i = 0; i < values.length; i++) if (keep(values[i]!)) indices.push(i);
  return indices.sort((a, b) => values[b]! - values[a]! || a - b);
}

/**
 * The first `count` indices of indicesByValueDescending(values, keep), in that order, in O(n log count): a heap of the
 * best so far, its worst at the root, so most values are refused by one comparison. Sampling's top-k and top-p over a
 * 50,304-token vocabulary took ~25 ms a token by the full sort (more than the model's forward pass).
 */
export function topIndicesDescending(values: ArrayLike<number>, count: number, keep: (value: number) => boolean = () => true): number[] {
  const heap = new Int32Array(Math.max(0, Math.min(count, values.length)));
  // a ranks below b: a smaller value, or an equal one at a larger index
  const below = (a: number, b: number) => values[a]! < values[b]! || (values[a] === values[b] && a > b);
  let size = 0;
  const siftDown = (at: number) => {
    for (;;) {
      const left = 2 * at + 1;
      if (left >= size) return;
      const child = left + 1 < size && below(heap[left + 1]!, heap[left]!) ? left + 1 : left;
      if (!below(heap[child]!, heap[at]!)) return;
      [heap[at], heap[child]] = [heap[child]!, heap[at]!];
      at = child;
    }
  };
  let worst = -Infinity; // the root's value once the heap is full: a value at or below it ranks below (its index is larger)
  for (let i = 0; i < values.length && heap.length > 0; i++) {
    const value = values[i]!;
    if (size === heap.length && !(value > worst)) continue; // most of a vocabulary: one comparison each (NaN too)
    if (!keep(value)) continue;
    if (size < heap.length) {
      let at = size++;
      heap[at] = i;
      while (at > 0 && below(heap[at]!, heap[(at - 1) >> 1]!)) {
        const parent = (at - 1) >> 1;
        [heap[at], heap[parent]] = [heap[parent]!, heap[at]!];
        at = parent;
      }
      if (size === heap.length) worst = values[heap[0]!]!;
    } else if (below(heap[0]!, i)) {
      heap[0] = i;
      siftDown(0);
      worst = values[heap[0]!]!;
    }
  }
  return Array.from(heap.subarray(0, size)).sort((a, b) => values[b]! - values[a]! || a - b);
}
