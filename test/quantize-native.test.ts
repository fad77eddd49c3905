/**
 * The native k-quant writer (native/src/quantize-k.cc) gives the TypeScript writer's bytes (src/core/quant.ts
 * quantizeReference), bitwise, for q4_k, q5_k and q6_k: on random blocks of several scales, on blocks with ties,
 * constants, zeros, one large outlier and tiny values (f16 subnormal scales), split over the thread pool.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createRng } from '../src/core/rng.js';
import { quantize, quantizeReference, setQuantizeAccelerator, type QuantDType } from '../src/core/quant.js';
import { useNativeQuantizer } from '../src/backends/index.js';
import { announceSkip, nativeSkip } from './backends.js';

function blocks(): Float32Array {
  const rng = createRng(11);
  const parts: number[][] = [];
  for (const scale of [1, 0.02, 1e-3, 3e-6, 40]) {
    for (let b = 0; b < 40; b++) parts.push(Array.from({ length: 256 }, () => scale * (rng() * 2 - 1)));
  }
  parts.push(new Array(256).fill(0));
  parts.push(new Array(256).fill(0.25));
  parts.push(new Array(256).fill(-1.5));
  parts.push(Array.from({ length: 256 }, (_, i) => (i === 17 ? 100 : 0.01 * ((i % 7) - 3))));
  parts.push(Array.from({ length: 256 }, (_, i) => (i % 4) * 0.5 - 0.75)); // few distinct values: ties in the codes
  parts.push(Array.from({ length: 256 }, (_, i) => (i % 32 < 16 ? 1 : -1) * (i / 256)));
  return Float32Array.from(parts.flat());
}

describe('native k-quant writer', () => {
  it('q4_k, q5_k and q6_k bytes equal the TypeScript writer\'s, bitwise', { skip: announceSkip(nativeSkip) }, () => {
    const values = blocks();
    assert.equal(useNativeQuantizer(), true);
    try {
      for (const dtype of ['q4_k', 'q5_k', 'q6_k'] as QuantDType[]) {
        const native = quantize(dtype, values);
        const reference = quantizeReference(dtype, values);
        assert.equal(native.length, reference.length);
        const first = native.findIndex((v, i) => v !== reference[i]);
        assert.equal(first, -1, `${dtype}: first differing byte ${first} (block ${Math.floor(first / (reference.length / (values.length / 256)))})`);
      }
      // q8_0 and q4_0 stay with TypeScript (the accelerator declines them) and still quantize.
      assert.deepEqual(quantize('q8_0', values.subarray(0, 64)), quantizeReference('q8_0', values.subarray(0, 64)));
    } finally {
      setQuantizeAccelerator(undefined);
    }
  });
});
