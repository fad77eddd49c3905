// Activations rounded to 8-bit blocks, once per matmul, for the integer dot products of quantized weights (qdot.h).
// This is llama.cpp's scheme (its vec_dot_type: Q8_0 blocks of 32 for q4_0 / q8_0 weights, Q8_K blocks of 256 for the
// K-quants), so results differ from "dequantize, then float" by the rounding of the activations. The rounding here is
// ours, defined once and computed bit-identically by every SIMD level and by the reference backend's twin
// (src/backends/reference/quant-matmul.ts):
//   amax = max |x| over the block; a block with amax < 2^-100 is all zeros (d = 0);
//   d = fl(amax / 127), id = fl(127 / amax), q = round-half-even(fl(x · id)) (|q| ≤ 127);
//   a block holding an infinity or NaN gets d = NaN, so the dot product is NaN as the float one would be.
// d stays float32 (llama.cpp stores Q8_0's as f16: one rounding less here).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels.h"

namespace olmoe {

// 32 activations for one q4_0 or q8_0 weight block.
struct Q8Block32 {
  int8_t q[32];
  // Start values of the eight int32 lanes of the VNNI / maddubs accumulators (lane i sums bytes 4i..4i+3): −c · Σ of
  // those four q, where c = 8 for q4_0 (codes n − 8 are dotted as n, unsigned) and c = 128 for q8_0 (codes w as w ^ 0x80).
  int32_t bias[8];
  float d;
  int32_t sum;  // Σ q
};

// 256 activations for one K-quant weight block (q4_k, q5_k, q6_k).
struct Q8Block256 {
  int8_t q[256];
  int16_t sums16[16];  // Σ q over each 16 (q6_k's scale groups)
  int16_t sums32[8];   // Σ q over each 32 (q4_k / q5_k's sub-blocks)
  // sums32 as 128·high + low, low = sums32 & 127 (0..127) in bytes 0..7, high (−32..31) in bytes 8..15: int8
  // operands for vpdpbusd against the packed q4_k's unsigned 6-bit mins (qgemm-r16.cc)
  int8_t sums32_split[16];
  float d;
};

// Whether inputs to weights of `weights` are quantized to q8 blocks of 256 (Q8Block256): the k-quants, file or packed.
bool k_quant(DType weights);
// Bytes of one activation row of n values quantized for weights of `weights` (0 for a dtype without q8 blocks).
size_t q8_row_bytes(DType weights, size_t n);
// One row of n values (whole blocks) into out (q8_row_bytes bytes).
void quantize_q8(DType weights, const float* x, size_t n, uint8_t* out);
// n values at x[0], x[step], … replaced by their q8 rounding d·q (float): the tile path multiplies dequantized
// weights by these, which gives the integer path's products up to float rounding (prefill).
void round_to_q8(DType weights, float* x, size_t n, size_t step);
// The same for `tokens` rows stored transposed: value i of token t at x[t + i · feature_step] (the tile path's
// blocked layout), vectorized across tokens.
void round_to_q8_tokens(DType weights, float* x, size_t tokens, size_t n, size_t feature_step);

}  // namespace olmoe
