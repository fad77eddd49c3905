/**
 * Causal self-attention (spec §3.4): over a KV cache (inference), or over a sequence's own tokens (training), with
 * its backward. The forward runs in blocks of KEY_BLOCK positions with an online softmax (FlashAttention, Dao et al.
 * 2022, §3.1): each query keeps its running maximum m, denominator ℓ and weighted sum o, rescaled by exp(m_old − m_new)
 * when a block raises the maximum, so no row of scores longer than one block exists (the native kernel's twin).
 * The backward recomputes one query's probabilities at a time.
 * Dimension legend: T new tokens, S positions attended, H query heads, Hkv key/value heads, Hd head dim.
 */
import type { AttentionArgs, AttentionSequence, Tensor } from '../../core/backend.js';
import type { SavedState } from '../../core/training.js';
import { RefKVCache } from './kv-cache.js';
import { activation, allocFor, checkShapes, floats, showShape, sizeOf, type Floats, type RefTensor } from './tensor.js';

export { RefKVCache } from './kv-cache.js';

/** Positions per block of the online softmax (native/src/attention.cc uses the same). */
export const KEY_BLOCK = 64;

/** Where one sequence's keys and values are read: its cache's layer storage, or its own rows of k and v. */
interface KeyValues {
  keys: Floats;
  values: Floats;
  /** Row of position 0 in keys/values. */
  base: number;
  width: number;
}

export function attention(args: AttentionArgs, keyBlock = KEY_BLOCK): RefTensor {
  const tokens = checkArgs(args);
  const out = allocFor(tokens * args.heads * args.headDim, args.q, args.k, args.v);
  forEachSequence(args, (sequence, row, kv) => {
    for (let t = 0; t < sequence.tokens; t++) for (let h = 0; h < args.heads; h++) attendOneBlocked(args, kv, row + t, sequence.start + t, h, out, keyBlock);
  });
  return activation(out, [tokens, args.heads * args.headDim]);
}

/** The same attention with one softmax over each query's whole row of scores (what the blocked form must equal). */
export function attentionUnblocked(args: AttentionArgs): RefTensor {
  const tokens = checkArgs(args);
  const out = allocFor(tokens * args.heads * args.headDim, args.q, args.k, args.v);
  forEachSequence(args, (sequence, row, kv) => {
    for (let t = 0; t < sequence.tokens; t++) for (let h = 0; h < args.heads; h++) attendOne(args, kv, row + t, sequence.start + t, h, out);
  });
  return activation(out, [tokens, args.heads * args.headDim]);
}

/** Training's forward: no cache, nothing kept (the reference backward recomputes the probabilities). */
export function attentionForward(args: AttentionArgs): { out: RefTensor; saved: SavedState } {
  checkShapes('attention', args.sequences.every((s) => !s.cache && s.start === 0), () => 'training attends within each sequence (no KV cache, start 0)');
  return { out: attention(args), saved: { op: 'attention' } };
}

function checkArgs(args: AttentionArgs): number {
  const width = args.heads * args.headDim;
  const kvWidth = args.kvHeads * args.headDim;
  const tokens = sizeOf(args.q) / width;
  const fits = Number.isInteger(tokens) && sizeOf(args.k) === tokens * kvWidth && sizeOf(args.v) === tokens * kvWidth;
  checkShapes('attention', fits && args.heads % args.kvHeads === 0, () => `q ${showShape(args.q)}, k ${showShape(args.k)}, v ${showShape(args.v)} do not fit ${args.heads} heads, ${args.kvHeads} kv heads × ${args.headDim}`);
  checkShapes('attention', args.sequences.reduce((n, s) => n + s.tokens, 0) === tokens, () => `sequences of ${args.sequences.map((s) => s.tokens).join(' + ')} tokens for ${tokens} rows`);
  for (const s of args.sequences) checkShapes('attention', s.cache instanceof RefKVCache || (!s.cache && s.start === 0), () => 'the KV cache was not made by this backend');
  return tokens;
}

/** Visit each sequence with its first row in q and where its keys and values are (stored into its cache first). */
export function forEachSequence(args: AttentionArgs, visit: (sequence: AttentionSequence, row: number, kv: KeyValues) => void): void {
  const kvWidth = args.kvHeads * args.headDim;
  const [k, v] = [floats(args.k), floats(args.v)];
  let row = 0;
  for (const sequence of args.sequences) {
    const own = { keys: k.subarray(row * kvWidth, (row + sequence.tokens) * kvWidth), values: v.subarray(row * kvWidth, (row + sequence.tokens) * kvWidth) };
    const cache = sequence.cache as RefKVCache | undefined;
    cache?.store(args.layer, sequence.start, own);
    const stored = sequence.start + sequence.tokens;
    const kv = cache ? { keys: cache.read('keys', args.layer, stored), values: cache.read('values', args.layer, stored), base: 0, width: kvWidth } : { ...own, base: 0, width: kvWidth };
    visit(sequence, row, kv);
    row += sequence.tokens;
  }
}

/** Softmax of one query row's scores over positions 0..position (scaled by 1/√Hd, max-subtracted). */
function probabilities(args: AttentionArgs, kv: KeyValues, row: number, position: number, head: number): Float64Array {
  const { headDim, heads, kvHeads } = args;
  const query = floats(args.q);
  const kvHead = Math.floor(head / (heads / kvHeads)); // grouped-query: consecutive heads share a kv head
  const queryBase = (row * heads + head) * headDim;
  const scale = 1 / Math.sqrt(headDim);
  const p = new Float64Array(position + 1);
  let max = -Infinity;
  for (let s = 0; s <= position; s++) {
    const keyBase = (kv.base + s) * kv.width + kvHead * headDim;
    let score = 0;
    for (let d = 0; d < headDim; d++) score += query[queryBase + d]! * kv.keys[keyBase + d]!;
    p[s] = score * scale;
    if (p[s]! > max) max = p[s]!;
  }
  let total = 0;
  for (let s = 0; s <= position; s++) total += p[s] = Math.exp(p[s]! - max);
  for (let s = 0; s <= position; s++) p[s]! /= total;
  return p;
}

/**
 * One query row of one head over positions 0..position in blocks of `keyBlock` (online softmax, float64): after
 * each block, m = max(m, block max), o ← o·exp(m_old − m) + Σ exp(s − m)·v, ℓ ← ℓ·exp(m_old − m) + Σ exp(s − m).
 */
function attendOneBlocked(args: AttentionArgs, kv: KeyValues, row: number, position: number, head: number, out: Floats, keyBlock: number): void {
  const { headDim, heads, kvHeads } = args;
  const query = floats(args.q);
  const kvHead = Math.floor(head / (heads / kvHeads)); // grouped-query: consecutive heads share a kv head
  const queryBase = (row * heads + head) * headDim;
  const scale = 1 / Math.sqrt(headDim);
  const sum = new Float64Array(headDim);
  const scores = new Float64Array(keyBlock);
  let [max, total] = [-Infinity, 0];
  for (let first = 0; first <= position; first += keyBlock) {
    const count = Math.min(keyBlock, position + 1 - first);
    let blockMax = -Infinity;
    for (let j = 0; j < count; j++) {
      const keyBase = (kv.base + first + j) * kv.width + kvHead * headDim;
      let score = 0;
      for (let d = 0; d < headDim; d++) score += query[queryBase + d]! * kv.keys[keyBase + d]!;
      scores[j] = score * scale;
      blockMax = Math.max(blockMax, scores[j]!);
    }
    const newMax = Math.max(max, blockMax);
    const rescale = max === -Infinity ? 0 : Math.exp(max - newMax);
    total *= rescale;
    for (let d = 0; d < headDim; d++) sum[d]! *= rescale;
    for (let j = 0; j < count; j++) {
      const p = Math.exp(scores[j]! - newMax);
      total += p;
      const valueBase = (kv.base + first + j) * kv.width + kvHead * headDim;
      for (let d = 0; d < headDim; d++) sum[d]! += p * kv.values[valueBase + d]!;
    }
    max = newMax;
  }
  for (let d = 0; d < headDim; d++) out[queryBase + d] = sum[d]! / total;
}

/** One query row of one head without blocks: every score of the row, then one softmax. */
function attendOne(args: AttentionArgs, kv: KeyValues, row: number, position: number, head: number, out: Floats): void {
  const { headDim, heads, kvHeads } = args;
  const p = probabilities(args, kv, row, position, head);
  const kvHead = Math.floor(head / (heads / kvHeads));
  for (let d = 0; d < headDim; d++) {
    let sum = 0;
    for (let s = 0; s <= position; s++) sum += p[s]! * kv.values[(kv.base + s) * kv.width + kvHead * headDim + d]!;
    out[(row * heads + head) * headDim + d] = sum;
  }
}

/**
 * With P the probabilities of a query row: dV += Pᵀ·dO; dP = dO·Vᵀ; dScore = P ⊙ (dP − Σ P·dP) / √Hd;
 * dQ += dScore·K; dK += dScoreᵀ·Q. Keys and values of a head are shared by its query-head group (GQA).
 */
export function attentionBackward(a: { args: AttentionArgs; dOut: Tensor; dq: Tensor; dk: Tensor; dv: Tensor }): void {
  const { args } = a;
  const { heads, kvHeads, headDim } = args;
  const [q, dO, dq, dk, dv] = [floats(args.q), floats(a.dOut), floats(a.dq), floats(a.dk), floats(a.dv)];
  const kvWidth = kvHeads * headDim;
  const scale = 1 / Math.sqrt(headDim);
  forEachSequence(args, (sequence, row, kv) => {
    for (let t = 0; t < sequence.tokens; t++) {
      for (let h = 0; h < heads; h++) {
        const p = probabilities(args, kv, row + t, t, h);
        const g = Math.floor(h / (heads / kvHeads));
        const qBase = ((row + t) * heads + h) * headDim;
        const dp = new Float64Array(t + 1);
        let dot = 0;
        for (let s = 0; s <= t; s++) {
          const vBase = (row + s) * kvWidth + g * headDim;
          for (let d = 0; d < headDim; d++) {
            dp[s]! += dO[qBase + d]! * kv.values[s * kvWidth + g * headDim + d]!;
            dv[vBase + d]! += p[s]! * dO[qBase + d]!;
          }
          dot += p[s]! * dp[s]!;
        }
        for (let s = 0; s <= t; s++) {
          const dScore = p[s]! * (dp[s]! - dot) * scale;
          const kBase = (row + s) * kvWidth + g * headDim;
          for (let d = 0; d < headDim; d++) {
            dq[qBase + d]! += dScore * kv.keys[s * kvWidth + g * headDim + d]!;
            dk[kBase + d]! += dScore * q[qBase + d]!;
          }
        }
      }
    }
  });
}

