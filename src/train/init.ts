/**
 * Weight initialization for training from scratch: a truncated normal as in OLMo (N(0, σ²) cut at ±3σ), drawn
 * from a seeded generator whose state can be saved with a checkpoint so that a resumed run draws the same numbers.
 */
import { InputError } from '../core/errors.js';

/**
 * Fill `out` with N(0, std²) samples cut at ±cut·std: a sample outside is drawn again (rejection), so the result
 * follows the truncated normal exactly. `next` gives uniforms in [0, 1); normals come from Box–Muller pairs.
 */
export function truncatedNormal(out: Float32Array, std: number, next: () => number, cut = 3): void {
  if (!(std >= 0) || !Number.isFinite(std)) throw new InputError(`init std ${std}: expected a finite number ≥ 0`);
  if (!(cut > 0)) throw new InputError(`truncation ${cut}: expected a number > 0 (in standard deviations)`);
  if (std === 0) {
    out.fill(0);
    return;
  }
  const limit = cut * std;
  let filled = 0;
  while (filled < out.length) {
    const radius = Math.sqrt(-2 * Math.log(1 - next())); // 1 − u ∈ (0, 1]: the log is finite
    const angle = 2 * Math.PI * next();
    for (const normal of [radius * Math.cos(angle), radius * Math.sin(angle)]) {
      const value = Math.fround(normal * std); // test the stored fp32 value, so rounding cannot step past the cut
      if (filled < out.length && Math.abs(value) <= limit) out[filled++] = value;
    }
  }
}

/**
 * xoshiro128** (Blackman & Vigna): a small seeded PRNG whose whole state is 128 bits, written as 32 hex digits
 * by state() and read back by TrainRng.from() for an exact resume.
 */
export class TrainRng {
  private readonly s = new Uint32Array(4);

  /** `seed`: an integer in [0, 2⁵³); splitmix32 spreads it over the 128-bit state. */
  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new InputError(`seed ${seed}: expected an integer in [0, 2^53)`);
    let x = (seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32), 0x9e3779b9);
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) | 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      this.s[i] = z ^ (z >>> 16);
    }
    if (this.s.every((word) => word === 0)) this.s[0] = 1; // the all-zero state is a fixed point
  }

  /** A uniform float in [0, 1) with 32 random bits. */
  next(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1]!, 5), 7), 9) >>> 0;
    const t = s[1]! << 9;
    s[2] ^= s[0]!;
    s[3] ^= s[1]!;
    s[1] ^= s[2]!;
    s[0] ^= s[3]!;
    s[2] ^= t;
    s[3] = rotl(s[3]!, 11);
    return result / 2 ** 32;
  }

  state(): string {
    return [...this.s].map((word) => word.toString(16).padStart(8, '0')).join('');
  }

  static from(state: string): TrainRng {
    if (!/^[0-9a-f]{32}$/.test(state) || /^0+$/.test(state)) throw new InputError(`rng state "${state}": expected 32 hex digits, not all zero`);
    const rng = new TrainRng(0);
    for (let i = 0; i < 4; i++) rng.s[i] = Number.parseInt(state.slice(8 * i, 8 * i + 8), 16);
    return rng;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
