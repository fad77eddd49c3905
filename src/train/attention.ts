/**
 * Causal self-attention over a batch of packed sequences, differentiable (spec §3.4: softmax(q·kᵀ/√Hd)·v,
 * causal, no soft-capping). Each head of each sequence is copied to contiguous [S, Hd] blocks so the four
 * products of forward and backward run on the GEMM kernels. The softmax P is kept for the backward.
 * Dimension legend: B sequences, S positions, H query heads, Hkv key/value heads, Hd head dim.
 */
import { InputError } from '../core/errors.js';
import type { Floats, Tape, Var } from './autograd.js';

export interface AttentionShape {
  readonly sequences: number; // B
  readonly length: number; // S
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
}

/** q [B·S, H·Hd], k and v [B·S, Hkv·Hd] (after QK-norm and RoPE) → [B·S, H·Hd]. */
export function causalAttention(tape: Tape, q: Var, k: Var, v: Var, shape: AttentionShape): Var {
  const { sequences, length, heads, kvHeads, headDim } = shape;
  if (q.size !== sequences * length * heads * headDim || k.size !== sequences * length * kvHeads * headDim || v.size !== k.size) {
    throw new InputError(`attention: q [${q.shape}], k [${k.shape}], v [${v.shape}] do not fit ${sequences}×${length} tokens, ${heads}/${kvHeads} heads of ${headDim}`);
  }
  const scale = 1 / Math.sqrt(headDim);
  const probs: Floats[] = []; // P per (sequence, head), [S, S]
  const data = tape.alloc(q.size);
  const block = { q: tape.alloc(length * headDim), k: tape.alloc(length * headDim), v: tape.alloc(length * headDim), o: tape.alloc(length * headDim) };
  for (let b = 0; b < sequences; b++) {
    for (let h = 0; h < heads; h++) {
      const g = Math.floor(h / (heads / kvHeads)); // grouped-query: heads share key/value head g
      gatherHead(q.data, block.q, b, h, shape, heads);
      gatherHead(k.data, block.k, b, g, shape, kvHeads);
      gatherHead(v.data, block.v, b, g, shape, kvHeads);
      const p = tape.alloc(length * length);
      tape.kernels.gemm({ m: length, n: length, k: headDim, a: block.q, b: block.k, c: p, transB: true }); // [S, S]
      causalSoftmax(p, length, scale);
      tape.kernels.gemm({ m: length, n: headDim, k: length, a: p, b: block.v, c: block.o }); // [S, Hd]
      scatterHead(block.o, data, b, h, shape, heads, false);
      probs.push(p);
    }
  }
  const out = tape.output(data, q.shape, [q, k, v]);
  tape.record(out, (dy) => {
    const dq = tape.gradOf(q);
    const dk = tape.gradOf(k);
    const dv = tape.gradOf(v);
    const dBlock = { o: tape.alloc(length * headDim), p: tape.alloc(length * length), x: tape.alloc(length * headDim) };
    for (let b = 0; b < sequences; b++) {
      for (let h = 0; h < heads; h++) {
        const g = Math.floor(h / (heads / kvHeads));
        const p = probs[b * heads + h]!;
        gatherHead(dy, dBlock.o, b, h, shape, heads);
        gatherHead(q.data, block.q, b, h, shape, heads);
        gatherHead(k.data, block.k, b, g, shape, kvHeads);
        gatherHead(v.data, block.v, b, g, shape, kvHeads);
        // dV = Pᵀ·dO;  dP = dO·Vᵀ;  dS = P ⊙ (dP − rowsum(dP ⊙ P)) / √Hd;  dQ = dS·K;  dK = dSᵀ·Q
        tape.kernels.gemm({ m: length, n: headDim, k: length, a: p, b: dBlock.o, c: dBlock.x, transA: true });
        scatterHead(dBlock.x, dv, b, g, shape, kvHeads, true);
        tape.kernels.gemm({ m: length, n: length, k: headDim, a: dBlock.o, b: block.v, c: dBlock.p, transB: true });
        softmaxBackward(p, dBlock.p, length, scale);
        tape.kernels.gemm({ m: length, n: headDim, k: length, a: dBlock.p, b: block.k, c: dBlock.x });
        scatterHead(dBlock.x, dq, b, h, shape, heads, true);
        tape.kernels.gemm({ m: length, n: headDim, k: length, a: dBlock.p, b: block.q, c: dBlock.x, transA: true });
        scatterHead(dBlock.x, dk, b, g, shape, kvHeads, true);
      }
    }
  });
  return out;
}

function gatherHead(src: Floats, dst: Floats, sequence: number, head: number, shape: AttentionShape, headsInRow: number): void {
  const { length, headDim } = shape;
  const rowWidth = headsInRow * headDim;
  for (let s = 0; s < length; s++) {
    const at = (sequence * length + s) * rowWidth + head * headDim;
    dst.set(src.subarray(at, at + headDim), s * headDim);
  }
}

function scatterHead(src: Floats, dst: Floats, sequence: number, head: number, shape: AttentionShape, headsInRow: number, accumulate: boolean): void {
  const { length, headDim } = shape;
  const rowWidth = headsInRow * headDim;
  for (let s = 0; s < length; s++) {
    const at = (sequence * length + s) * rowWidth + head * headDim;
    if (!accumulate) dst.set(src.subarray(s * headDim, (s + 1) * headDim), at);
    else for (let i = 0; i < headDim; i++) dst[at + i]! += src[s * headDim + i]!;
  }
}

/** scores [S, S] → row softmax of scale·scores over keys j ≤ i; masked entries become exactly 0. */
function causalSoftmax(scores: Floats, length: number, scale: number): void {
  for (let i = 0; i < length; i++) {
    const row = i * length;
    let max = -Infinity;
    for (let j = 0; j <= i; j++) max = Math.max(max, scores[row + j]! * scale);
    let sum = 0;
    for (let j = 0; j <= i; j++) sum += scores[row + j] = Math.exp(scores[row + j]! * scale - max);
    for (let j = 0; j <= i; j++) scores[row + j]! /= sum;
    scores.fill(0, row + i + 1, row + length);
  }
}

/** dP → dScores in place: P ⊙ (dP − Σ_j dP·P) · scale; masked entries have P = 0 and stay 0. */
function softmaxBackward(p: Floats, dp: Floats, length: number, scale: number): void {
  for (let i = 0; i < length; i++) {
    const row = i * length;
    let dot = 0;
    for (let j = 0; j <= i; j++) dot += dp[row + j]! * p[row + j]!;
    for (let j = 0; j < length; j++) dp[row + j] = j <= i ? p[row + j]! * (dp[row + j]! - dot) * scale : 0;
  }
}
