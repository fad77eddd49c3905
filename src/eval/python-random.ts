/**
 * Python's `random.Random(seed).sample(range(n), k)`, bit for bit: OLMES picks the instances of a large split
 * with it (1000 of N, seed 1234, in sample order), so the same instances need the same generator. MT19937 seeded by
 * init_by_array with the seed's 32-bit words, getrandbits/_randbelow by rejection, and random.sample's two
 * strategies (a shrinking pool for small populations, a seen-set otherwise), as CPython 3 implements them.
 */
import { InputError } from '../core/errors.js';

class Mt19937 {
  private readonly state = new Uint32Array(624);
  private index = 625;

  constructor(key: readonly number[]) {
    this.initByArray(key);
  }

  private initGenrand(seed: number): void {
    const mt = this.state;
    mt[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
    this.index = 624;
  }

  private initByArray(key: readonly number[]): void {
    const mt = this.state;
    this.initGenrand(19650218);
    let i = 1;
    let j = 0;
    for (let k = Math.max(624, key.length); k > 0; k--) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      mt[i] = ((mt[i]! ^ Math.imul(prev, 1664525)) + key[j]! + j) >>> 0;
      i++;
      j++;
      if (i >= 624) {
        mt[0] = mt[623]!;
        i = 1;
      }
      if (j >= key.length) j = 0;
    }
    for (let k = 623; k > 0; k--) {
      const prev = mt[i - 1]! ^ (mt[i - 1]! >>> 30);
      mt[i] = ((mt[i]! ^ Math.imul(prev, 1566083941)) - i) >>> 0;
      i++;
      if (i >= 624) {
        mt[0] = mt[623]!;
        i = 1;
      }
    }
    mt[0] = 0x80000000;
  }

  next(): number {
    const mt = this.state;
    if (this.index >= 624) {
      for (let k = 0; k < 624; k++) {
        const y = (mt[k]! & 0x80000000) | (mt[(k + 1) % 624]! & 0x7fffffff);
        mt[k] = mt[(k + 397) % 624]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.index = 0;
    }
    let y = mt[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
}

/** A uniform integer in [0, n) as Python's Random._randbelow (n < 2³²). */
function randBelow(mt: Mt19937, n: number): number {
  const bits = 32 - Math.clz32(n);
  for (;;) {
    const r = mt.next() >>> (32 - bits);
    if (r < n) return r;
  }
}

/** `random.Random(seed).sample(range(n), k)` for a non-negative integer seed below 2³² and n < 2³². */
export function pythonSample(n: number, k: number, seed: number): number[] {
  if (!Number.isSafeInteger(seed) || seed < 0 || seed >= 2 ** 32) throw new InputError(`sample seed ${seed}: a non-negative integer below 2^32`);
  if (!Number.isSafeInteger(n) || n < 0 || n >= 2 ** 32 || !Number.isSafeInteger(k) || k < 0 || k > n) throw new InputError(`cannot sample ${k} of ${n}`);
  const mt = new Mt19937([seed]);
  let setSize = 21;
  if (k > 5) setSize += 4 ** Math.ceil(Math.log(3 * k) / Math.log(4));
  const result: number[] = [];
  if (n <= setSize) {
    const pool = Array.from({ length: n }, (_, i) => i);
    for (let i = 0; i < k; i++) {
      const j = randBelow(mt, n - i);
      result.push(pool[j]!);
      pool[j] = pool[n - i - 1]!;
    }
  } else {
    const selected = new Set<number>();
    for (let i = 0; i < k; i++) {
      let j = randBelow(mt, n);
      while (selected.has(j)) j = randBelow(mt, n);
      selected.add(j);
      result.push(j);
    }
  }
  return result;
}
