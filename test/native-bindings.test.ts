/**
 * The native addon's inference entry points check what JavaScript hands them before C++ reads or writes it: a
 * typed array shorter than the shapes imply, or an unknown KV-cache type, is a RangeError naming the op and the
 * argument — never an out-of-bounds read or write.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadAddon } from '../src/backends/native/addon.js';
import { announceSkip, nativeSkip } from './backends.js';

const F32 = 0;
const F16 = 2;

describe('native bindings refuse buffers too short for their shapes', () => {
  it('attention: q, keys, values and out sized by tokens, start, heads and the cache type; heads sharing KV heads evenly', { skip: announceSkip(nativeSkip) }, () => {
    const addon = loadAddon().addon!;
    const [tokens, start, heads, kvHeads, headDim] = [2, 3, 4, 2, 8];
    const q = new Float32Array(tokens * heads * headDim);
    const out = new Float32Array(q.length);
    const cache = (positions: number) => new Uint8Array(positions * kvHeads * headDim * 2); // f16 rows
    addon.attention(q, cache(start + tokens), cache(start + tokens), F16, tokens, start, heads, kvHeads, headDim, out); // exact sizes pass
    assert.throws(() => addon.attention(q, cache(start + tokens - 1), cache(start + tokens), F16, tokens, start, heads, kvHeads, headDim, out),
      /olmoe native attention: keys holds 128 bytes, the call needs 160/);
    assert.throws(() => addon.attention(q, cache(5), cache(4), F16, tokens, start, heads, kvHeads, headDim, out), /attention: values holds/);
    assert.throws(() => addon.attention(q.subarray(1), cache(5), cache(5), F16, tokens, start, heads, kvHeads, headDim, out), /attention: q holds 252 bytes, the call needs 256/);
    assert.throws(() => addon.attention(q, cache(5), cache(5), F16, tokens, start, heads, kvHeads, headDim, out.subarray(8)), /attention: out holds/);
    assert.throws(() => addon.attention(q, cache(5), cache(5), 4, tokens, start, heads, kvHeads, headDim, out), /KV cache type 4 is not f32, f16 or q8_0/);
    assert.throws(() => addon.attention(q, cache(5), cache(5), F16, tokens, start, heads, 3, headDim, out), /4 heads do not share 3 KV heads evenly/);
  });

  it('kvStore: rows and out sized by count, width and the cache type', { skip: announceSkip(nativeSkip) }, () => {
    const addon = loadAddon().addon!;
    const rows = Float32Array.from({ length: 3 * 16 }, (_, i) => i / 7);
    const out = new Uint8Array(3 * 16 * 4);
    addon.kvStore(rows, 3, 16, F32, out);
    assert.deepEqual(new Float32Array(out.buffer), rows, 'f32 rows are stored as they are');
    assert.throws(() => addon.kvStore(rows, 3, 16, F32, out.subarray(1)), /olmoe native kvStore: out holds 191 bytes, the call needs 192/);
    assert.throws(() => addon.kvStore(rows.subarray(16), 3, 16, F32, out), /kvStore: rows holds 128 bytes, the call needs 192/);
    assert.throws(() => addon.kvStore(rows, 3, 16, 1, out), /kvStore: KV cache type 1 is not f32, f16 or q8_0/);
  });
});
