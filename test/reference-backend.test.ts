/** The reference backend's ops against direct definitions, and its refusal of mismatched shapes. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ReferenceBackend } from '../src/backends/reference/index.js';
import { weightFromBytes } from '../src/core/backend.js';
import { encodeFloats } from '../src/core/dtype.js';
import { createRng } from '../src/core/rng.js';

const backend = new ReferenceBackend();
const rng = createRng(1);
const randoms = (n: number) => Float32Array.from({ length: n }, () => rng() * 2 - 1);

describe('reference backend ops', () => {
  it('matmul with bf16 weights equals the float64 product of the widened weights', async () => {
    const [T, In, Out] = [3, 5, 4];
    const x = randoms(T * In);
    const weight = await backend.weight(weightFromBytes('w', 'bf16', [Out, In], encodeFloats('bf16', randoms(Out * In))));
    const widened = backend.toFloat32(weight);
    const y = backend.toFloat32(backend.matmul(backend.fromFloat32(x, [T, In]), weight));
    for (let t = 0; t < T; t++) {
      for (let o = 0; o < Out; o++) {
        let sum = 0;
        for (let i = 0; i < In; i++) sum += x[t * In + i]! * widened[o * In + i]!;
        assert.ok(Math.abs(y[t * Out + o]! - sum) < 1e-6);
      }
    }
  });

  it('rope rotates pairs (d, d + Hd/2) and preserves each pair\'s norm; position 0 is the identity', () => {
    const x = randoms(2 * 8);
    const rotated = backend.toFloat32(backend.rope(backend.fromFloat32(x, [2, 8]), Int32Array.of(0, 5), { heads: 1, headDim: 8, theta: 10000 }));
    for (let d = 0; d < 8; d++) assert.ok(Math.abs(rotated[d]! - x[d]!) < 1e-7, 'position 0');
    for (let d = 0; d < 4; d++) {
      const before = Math.hypot(x[8 + d]!, x[12 + d]!);
      assert.ok(Math.abs(Math.hypot(rotated[8 + d]!, rotated[12 + d]!) - before) < 1e-6);
    }
    // Dimension 0 rotates by angle 5·1 (inv_freq[0] = 1).
    assert.ok(Math.abs(rotated[8]! - (x[8]! * Math.cos(5) - x[12]! * Math.sin(5))) < 1e-6);
  });

  it('mismatched shapes are refused with both shapes named', async () => {
    const weight = await backend.weight(weightFromBytes('w', 'f32', [4, 5], encodeFloats('f32', randoms(20))));
    assert.throws(() => backend.matmul(backend.fromFloat32(randoms(6), [2, 3]), weight), /matmul: x \[2, 3\] does not match weight \[4, 5\]/);
    assert.throws(() => backend.add(backend.fromFloat32(randoms(6), [2, 3]), backend.fromFloat32(randoms(4), [2, 2])), /add/);
    assert.throws(() => backend.rows(backend.fromFloat32(randoms(6), [2, 3]), 1, 2), /rows \[1, 3\)/);
    assert.throws(() => backend.embedding(weight, Int32Array.of(4)), /embedding: id 4 outside table \[4, 5\]/);
    await assert.rejects(backend.weight(weightFromBytes('w', 'bf16', [4, 5], new Uint8Array(7))), /weight w of shape \[4,5\] bf16 needs 40 bytes, got 7/);
  });
});
