/** Seeded choices for the fuzzer (mulberry32 from src/core/rng.ts): one case seed reproduces one case. */
import { createRng } from '../../src/core/rng.js';

export class Random {
  private readonly next: () => number;
  constructor(seed: number) {
    this.next = createRng(seed);
  }
  float(): number {
    return this.next();
  }
  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[this.int(items.length)]!;
  }
  shuffle<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      [out[i], out[j]] = [out[j]!, out[i]!];
    }
    return out;
  }
  bytes(n: number): Buffer {
    return Buffer.from(Array.from({ length: n }, () => this.int(256)));
  }
}

/** A 32-bit seed for case `index` of run `seed` (splitmix-style mixing, so neighbouring cases differ). */
export function caseSeed(seed: number, index: number, salt = 0): number {
  let h = (Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35) ^ Math.imul(salt + 7, 0x27d4eb2f)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x846ca68b) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** Integers at the edges of the widths readers use. */
export const EDGE_INTEGERS: readonly bigint[] = [
  0n, 1n, 2n, 3n, 7n, 8n, 63n, 64n, 255n, 256n, 65535n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 40n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 53n + 1n,
  2n ** 62n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n,
];

/** A JSON value, with `Raw` for literal text JSON.stringify cannot produce (1e999, -0, duplicate keys). */
export class Raw {
  constructor(readonly text: string) {}
}
/** An object whose entries are kept in order, duplicates allowed. */
export class Entries {
  constructor(readonly entries: [string, JsonLike][]) {}
}
export type JsonLike = null | boolean | number | string | Raw | Entries | JsonLike[] | { [key: string]: JsonLike };

export function toEntries(value: unknown): JsonLike {
  if (Array.isArray(value)) return value.map(toEntries);
  if (value !== null && typeof value === 'object') return new Entries(Object.entries(value).map(([k, v]) => [k, toEntries(v)]));
  return value as JsonLike;
}

/** JSON text; iterative so that a 100 000-deep value does not overflow the fuzzer's own stack. */
export function jsonText(value: JsonLike): string {
  const out: string[] = [];
  const stack: (JsonLike | Raw)[] = [value];
  while (stack.length) {
    const item = stack.pop()!;
    if (item instanceof Raw) out.push(item.text);
    else if (Array.isArray(item)) {
      out.push('[');
      stack.push(new Raw(']'));
      for (let i = item.length - 1; i >= 0; i--) stack.push(item[i]!, ...(i ? [new Raw(',')] : []));
    } else if (item !== null && typeof item === 'object') {
      const entries = item instanceof Entries ? item.entries : Object.entries(item);
      out.push('{');
      stack.push(new Raw('}'));
      for (let i = entries.length - 1; i >= 0; i--) stack.push(entries[i]![1], new Raw(`${i ? ',' : ''}${JSON.stringify(entries[i]![0])}:`));
    } else out.push(JSON.stringify(item));
  }
  return out.join('');
}

/** [[[...x...]]] `depth` levels deep, built without recursion. */
export function nested(depth: number, inner: JsonLike = 1, object = false): JsonLike {
  // Built as raw text: a linked structure this deep would be walked recursively by anything generic.
  const open = object ? '{"a":' : '[';
  const close = object ? '}' : ']';
  return new Raw(open.repeat(depth) + jsonText(inner) + close.repeat(depth));
}

/** Values that JSON readers mishandle: wrong types, edges of integer ranges, non-finite literals. */
export const EDGE_JSON: readonly JsonLike[] = [
  0, -1, 1, 2, 1.5, -0.5, new Raw('-0'), 1e308, -1e308, new Raw('1e999'), new Raw('-1e999'), new Raw('1e-400'), 2 ** 31, 2 ** 31 - 1, 2 ** 32, 2 ** 53, 2 ** 53 + 2, 2 ** 63, 2 ** 64,
  new Raw('123456789012345678901234567890'), '16', '', 'NaN', 'Infinity', null, true, false, [], [1], [16, 16], {}, { a: 1 }, '__proto__', 'x'.repeat(70000),
];
