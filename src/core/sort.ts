/** Indices of `values` ordered by value, largest first; equal values keep ascending index order (spec §3.6 ties). */
export function indicesByValueDescending(values: ArrayLike<number>, keep: (value: number) => boolean = () => true): number[] {
  const indices: number[] = [];
  for (let i = 0; i < values.length; i++) if (keep(values[i]!)) indices.push(i);
  return indices.sort((a, b) => values[b]! - values[a]! || a - b);
}

/** Keeps every value: the default filter (one function for every call, as the optimizer prefers). */
const always = (): boolean => true;

/** Whether index a ranks below index b: a smaller value, or an equal one at a larger index. */
function ranksBelow(values: ArrayLike<number>, a: number, b: number): boolean {
  return values[a]! < values[b]! || (values[a] === values[b] && a > b);
}

/** Restore the heap (the lowest-ranked index at the root) below `at`. */
function siftDown(heap: Int32Array, size: number, values: ArrayLike<number>, at: number): void {
  for (;;) {
    const left = 2 * at + 1;
    if (left >= size) return;
    const child = left + 1 < size && ranksBelow(values, heap[left + 1]!, heap[left]!) ? left + 1 : left;
    if (!ranksBelow(values, heap[child]!, heap[at]!)) return;
    [heap[at], heap[child]] = [heap[child]!, heap[at]!];
    at = child;
  }
}

/**
 * The first `count` indices of indicesByValueDescending(values, keep), in that order, in O(n log count): a heap of the
 * best so far, its worst at the root, so most values are refused by one comparison. Sampling's top-k and top-p over a
 * 50,304-token vocabulary took ~25 ms a token by the full sort (more than the model's forward pass). The helpers are
 * module functions, not closures made per call: closures new at every call sent the optimized loop back to the
 * interpreter ("wrong call target") for the first ~17 calls, 2.3–5.6 ms each, where it then takes ~0.1 ms. Pass
 * `keep` as one long-lived function for the same reason.
 */
export function topIndicesDescending(values: ArrayLike<number>, count: number, keep: (value: number) => boolean = always): number[] {
  const heap = new Int32Array(Math.max(0, Math.min(count, values.length)));
  const size = fillHeap(values, heap, keep);
  return Array.from(heap.subarray(0, size)).sort((a, b) => values[b]! - values[a]! || a - b);
}

/** topIndicesDescending's scan (a function of its own: the optimizer compiles the loop without the code after it). */
function fillHeap(values: ArrayLike<number>, heap: Int32Array, keep: (value: number) => boolean): number {
  let size = 0;
  let worst = -Infinity; // the root's value once the heap is full: a value at or below it ranks below (its index is larger)
  for (let i = 0; i < values.length && heap.length > 0; i++) {
    const value = values[i]!;
    if (size === heap.length && !(value > worst)) continue; // most of a vocabulary: one comparison each (NaN too)
    if (!keep(value)) continue;
    if (size < heap.length) {
      let at = size++;
      heap[at] = i;
      while (at > 0 && ranksBelow(values, heap[at]!, heap[(at - 1) >> 1]!)) {
        const parent = (at - 1) >> 1;
        [heap[at], heap[parent]] = [heap[parent]!, heap[at]!];
        at = parent;
      }
      if (size === heap.length) worst = values[heap[0]!]!;
    } else if (ranksBelow(values, heap[0]!, i)) {
      heap[0] = i;
      siftDown(heap, size, values, 0);
      worst = values[heap[0]!]!;
    }
  }
  return size;
}
