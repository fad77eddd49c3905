/**
 * Matmul with quantized weights (q8_0, q4_0, q4_k, q5_k, q6_k), as llama.cpp and the native backend compute it: each
 * activation row is first rounded to 8-bit blocks (32 values for q8_0/q4_0 weights, 256 for the K-quants), then
 * every weight block is dotted with its activation block in integers and scaled by both block scales. The result
 * differs from "dequantize, then multiply in float" by the activations' rounding (relative ≈ 1/254 per value, mostly
 * averaging out over a row). This is the twin of native/src/q8.h and qdot.h: the same rounding, bit for bit, and the
 * same integer sums, so the two backends agree to float32 accumulation error.
 *   activation block: amax = max|x|; amax < 2^-100 → all zero; d = fl(amax/127), q = roundHalfEven(fl(x·fl(127/amax)));
 *                     a block holding ±∞ or NaN gets d = NaN
 *   q4_0: d_w·d_x·Σ (n − 8)·q      q8_0: d_w·d_x·Σ w·q
 *   q4_k, q5_k: d·d_x·Σ_j scale_j·Σ n·q − dmin·d_x·Σ_j min_j·Σ q     (sub-blocks j of 32)
 *   q6_k: d·d_x·Σ_j scale_j·Σ (v − 32)·q                                (groups j of 16)
 * Dimension legend: T tokens, In/Out matmul sides.
 */
import { f16Value, type QuantDType } from '../../core/dtype.js';
import { QUANT_BLOCKS, scaleMinK4 } from '../../core/quant.js';
import { activation, type RefTensor } from './tensor.js';

const fround = Math.fround;
const SMALLEST = 2 ** -100;

/** Activation rows rounded to q8 blocks: codes q and one scale d per block. */
export interface Q8Rows {
  block: number;
  q: Int8Array; // [T, In]
  d: Float32Array; // [T, In / block]
}

function roundHalfEven(value: number): number {
  const rounded = Math.round(value);
  return rounded - value === 0.5 && rounded % 2 !== 0 ? rounded - 1 : rounded;
}

/** Rows of x [T, In] rounded to blocks of `block` values (the rounding of native/src/q8.h). */
export function quantizeActivations(x: Float32Array, inDim: number, block: number): Q8Rows {
  if (inDim % block !== 0) throw new RangeError(`rows of ${inDim} values do not hold whole blocks of ${block}`);
  const q = new Int8Array(x.length);
  const d = new Float32Array(x.length / block);
  for (let b = 0; b < d.length; b++) {
    const at = b * block;
    let amax = 0;
    let finite = true;
    for (let i = at; i < at + block; i++) {
      const magnitude = Math.abs(x[i]!);
      if (!(magnitude <= 3.4028234663852886e38)) finite = false;
      else if (magnitude > amax) amax = magnitude;
    }
    if (!finite) d[b] = NaN;
    if (!finite || amax < SMALLEST) continue;
    d[b] = amax / 127;
    const inverse = fround(127 / amax);
    for (let i = at; i < at + block; i++) q[i] = Math.max(-127, Math.min(127, roundHalfEven(fround(x[i]! * inverse))));
  }
  return { block, q, d };
}

/**
 * One weight row as integers: codes c (Int8, one per value), an integer scale per group, a min per group (K-quants
 * q4_k/q5_k), and per block the float scale D and min scale M, so that
 *   row · x = Σ_blocks d_x·(D·Σ_groups scale·Σ c·q − M·Σ_groups min·Σ q).
 */
interface IntegerRow {
  codes: Int8Array;
  group: number;
  scales: Int16Array;
  mins: Int16Array;
  blockScale: Float64Array;
  blockMin: Float64Array;
}

const f16At = (b: Uint8Array, at: number) => f16Value(b[at]! | (b[at + 1]! << 8));

function decodeRow(dtype: QuantDType, bytes: Uint8Array, at: number, n: number): IntegerRow {
  const { elements, bytes: blockBytes } = QUANT_BLOCKS[dtype];
  const blocks = n / elements;
  const group = dtype === 'q6_k' ? 16 : 32;
  const row: IntegerRow = {
    codes: new Int8Array(n), group, scales: new Int16Array(n / group).fill(1), mins: new Int16Array(n / group),
    blockScale: new Float64Array(blocks), blockMin: new Float64Array(blocks),
  };
  for (let block = 0; block < blocks; block++) DECODERS[dtype](bytes, at + block * blockBytes, block, row);
  return row;
}

type BlockDecoder = (b: Uint8Array, at: number, block: number, row: IntegerRow) => void;

const DECODERS: Record<QuantDType, BlockDecoder> = {
  q8_0(b, at, block, row) {
    row.blockScale[block] = f16At(b, at);
    for (let j = 0; j < 32; j++) row.codes[32 * block + j] = (b[at + 2 + j]! << 24) >> 24;
  },
  q4_0(b, at, block, row) {
    row.blockScale[block] = f16At(b, at);
    for (let j = 0; j < 16; j++) {
      row.codes[32 * block + j] = (b[at + 2 + j]! & 15) - 8;
      row.codes[32 * block + j + 16] = (b[at + 2 + j]! >> 4) - 8;
    }
  },
  q4_k: (b, at, block, row) => decodeQ45K(b, at, block, row, false),
  q5_k: (b, at, block, row) => decodeQ45K(b, at, block, row, true),
  q6_k(b, at, block, row) {
    row.blockScale[block] = f16At(b, at + 208);
    for (let g = 0; g < 16; g++) row.scales[16 * block + g] = (b[at + 192 + g]! << 24) >> 24;
    for (let half = 0; half < 2; half++) {
      const [ql, qh, base] = [at + 64 * half, at + 128 + 32 * half, 256 * block + 128 * half];
      for (let l = 0; l < 32; l++) {
        const high = b[qh + l]!;
        row.codes[base + l] = ((b[ql + l]! & 15) | ((high & 3) << 4)) - 32;
        row.codes[base + l + 32] = ((b[ql + l + 32]! & 15) | (((high >> 2) & 3) << 4)) - 32;
        row.codes[base + l + 64] = ((b[ql + l]! >> 4) | (((high >> 4) & 3) << 4)) - 32;
        row.codes[base + l + 96] = ((b[ql + l + 32]! >> 4) | (((high >> 6) & 3) << 4)) - 32;
      }
    }
  },
};

function decodeQ45K(b: Uint8Array, at: number, block: number, row: IntegerRow, fiveBits: boolean): void {
  row.blockScale[block] = f16At(b, at);
  row.blockMin[block] = f16At(b, at + 2);
  const qs = at + (fiveBits ? 48 : 16);
  for (let j = 0; j < 8; j++) {
    [row.scales[8 * block + j], row.mins[8 * block + j]] = scaleMinK4(b, at + 4, j);
    const shift = j % 2 ? 4 : 0; // sub-block j: nibbles of qs[32·⌊j/2⌋ + l], low for even j, high for odd
    for (let l = 0; l < 32; l++) {
      const high = fiveBits && (b[at + 16 + l]! >> j) & 1 ? 16 : 0;
      row.codes[256 * block + 32 * j + l] = ((b[qs + 32 * (j >> 1) + l]! >> shift) & 15) + high;
    }
  }
}

/** One weight row · token t's quantized activations, in double (integer sums exact). */
function dotRow(row: IntegerRow, x: Q8Rows, token: number, n: number): number {
  const groupsPerBlock = x.block / row.group;
  let total = 0;
  for (let block = 0; block < n / x.block; block++) {
    let dots = 0;
    let mins = 0;
    for (let g = block * groupsPerBlock; g < (block + 1) * groupsPerBlock; g++) {
      let dot = 0;
      let sum = 0;
      for (let i = g * row.group; i < (g + 1) * row.group; i++) {
        const q = x.q[token * n + i]!;
        dot += row.codes[i]! * q;
        sum += q;
      }
      dots += row.scales[g]! * dot;
      mins += row.mins[g]! * sum;
    }
    const dx = x.d[(token * n) / x.block + block]!;
    total += dx * (row.blockScale[block]! * dots - row.blockMin[block]! * mins);
  }
  return total;
}

/** x [T, In] · w [Out, In]ᵀ for quantized w, with x rounded to q8 blocks once. */
export function quantizedMatmul(input: Float32Array, weight: RefTensor, dtype: QuantDType): RefTensor {
  const [outDim, inDim] = [weight.rows, weight.cols];
  const tokens = input.length / inDim;
  const { elements, bytes: blockBytes } = QUANT_BLOCKS[dtype];
  const x = quantizeActivations(input, inDim, elements);
  const bytes = weight.data as Uint8Array;
  const rowBytes = (inDim / elements) * blockBytes;
  const out = new Float32Array(tokens * outDim);
  for (let o = 0; o < outDim; o++) {
    const row = decodeRow(dtype, bytes, o * rowBytes, inDim);
    for (let t = 0; t < tokens; t++) out[t * outDim + o] = dotRow(row, x, t, inDim);
  }
  return activation(out, [tokens, outDim]);
}
