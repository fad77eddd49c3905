/**
 * Op values against laws computed here in float64, on every backend (the reference included: conformance only
 * compares backends with each other, so a bug shared by both, or in the reference, would pass it).
 *   RoPE (NeoX, spec §5): pairs (d, d + Hd/2) rotate by pos · θ^(−2d/Hd), at every pair and several positions.
 *   clamp (clip_qkv): min(max(x, −L), L) on both signs.
 *   RMSNorm: x / sqrt(mean(x²) + eps) · w, with inputs so small that eps dominates, and with two eps values.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { weightFromBytes, type Backend } from '../src/core/backend.js';
import { encodeFloats } from '../src/core/dtype.js';
import { createRng } from '../src/core/rng.js';
import { announceSkip, backendCases } from './backends.js';

function randoms(seed: number, n: number, scale = 1): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: n }, () => (rng() * 2 - 1) * scale);
}

/** NeoX RoPE in float64: for each head, x[d] and x[d + half] rotate together by pos · theta^(−2d/headDim). */
function ropeFloat64(x: Float32Array, positions: Int32Array, heads: number, headDim: number, theta: number): Float64Array {
  const out = new Float64Array(x.length);
  const half = headDim / 2;
  positions.forEach((pos, t) => {
    for (let h = 0; h < heads; h++) {
      const base = t * heads * headDim + h * headDim;
      for (let d = 0; d < half; d++) {
        const angle = pos * theta ** ((-2 * d) / headDim);
        const [a, b] = [x[base + d]!, x[base + d + half]!];
        out[base + d] = a * Math.cos(angle) - b * Math.sin(angle);
        out[base + d + half] = b * Math.cos(angle) + a * Math.sin(angle);
      }
    }
  });
  return out;
}

for (const target of backendCases) {
  describe(`op values: ${target.name}`, { skip: announceSkip(target.skip) }, () => {
    const backend = (): Backend => target.create();

    it('RoPE matches float64 NeoX rotation at every dimension pair (head dims 16, 64, 128; positions 0..4095)', () => {
      const positions = Int32Array.of(0, 1, 2, 17, 255, 1000, 4095);
      for (const [heads, headDim] of [[3, 16], [2, 64], [2, 128]] as const) {
        const x = randoms(headDim, positions.length * heads * headDim);
        const b = backend();
        const actual = b.toFloat32(b.rope(b.fromFloat32(x, [positions.length, heads * headDim]), positions, { heads, headDim, theta: 10000 }));
        const expected = ropeFloat64(x, positions, heads, headDim, 10000);
        for (let i = 0; i < x.length; i++) {
          const t = Math.floor(i / (heads * headDim));
          const d = i % headDim;
          // float32 frequencies and angles (as PyTorch computes them) differ from float64 by ~1e-7 · pos radians.
          const tolerance = 2e-6 + 3e-7 * positions[t]!;
          const error = Math.abs(actual[i]! - expected[i]!);
          if (!(error <= tolerance)) assert.fail(`headDim ${headDim}, position ${positions[t]}, dimension ${d}: ${actual[i]} vs ${expected[i]} (error ${error})`);
        }
      }
    });

    it('clamp (clip_qkv) limits both signs to [−L, L] and leaves values inside unchanged', () => {
      const x = Float32Array.from([-5, -0.31, -0.3, -0.1, 0, 0.1, 0.3, 0.31, 5, -1e30, 1e30]);
      const b = backend();
      const actual = b.toFloat32(b.clamp(b.fromFloat32(x, [1, x.length]), 0.3));
      const limit = Math.fround(0.3);
      assert.deepEqual(Array.from(actual), Array.from(x, (v) => Math.min(Math.max(v, -limit), limit)));
    });

    it('RMSNorm uses eps: tiny inputs where eps dominates, and two eps values, against the float64 formula', async () => {
      const width = 64;
      const b = backend();
      const gain = Float32Array.from({ length: width }, (_, i) => 0.5 + i / width);
      const weight = await b.weight(weightFromBytes('norm', 'f32', [width], encodeFloats('f32', gain)));
      for (const scale of [1e-4, 1e-3, 1]) {
        for (const eps of [1e-5, 1e-2]) {
          const x = randoms(11, 3 * width, scale);
          const actual = b.toFloat32(b.rmsnorm(b.fromFloat32(x, [3, width]), weight, eps));
          for (let row = 0; row < 3; row++) {
            const values = x.subarray(row * width, row * width + width);
            const rms = Math.sqrt(values.reduce((s, v) => s + v * v, 0) / width + eps);
            values.forEach((v, i) => {
              const expected = (v / rms) * gain[i]!;
              const error = Math.abs(actual[row * width + i]! - expected);
              if (!(error <= 1e-5 * (1 + Math.abs(expected)))) assert.fail(`scale ${scale}, eps ${eps}, element ${i}: ${actual[row * width + i]} vs ${expected}`);
            });
          }
        }
      }
    });
  });
}
