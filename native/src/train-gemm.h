// Training's GEMM (native/src/train-gemm.cc): C[M, N] = op(A)[M, K] · op(B)[K, N], or C += that, in float32 or in
// bf16 mixed precision (both operands rounded to bfloat16, products summed in float32).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace olmoe {

struct TrainGemmArgs {
  bool trans_a = false;  // A is stored [K, M] instead of [M, K]
  bool trans_b = false;  // B is stored [N, K] instead of [K, N]
  size_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  const float* b = nullptr;
  float* c = nullptr;  // [M, N] row-major
  bool accumulate = false;
  bool serial = false;  // on the calling thread only (a caller already running on the pool: per-expert products)
  // Row strides in floats when operands are views into wider rows (attention's heads); 0: dense (K, N or M).
  size_t lda = 0, ldb = 0, ldc = 0;
  // Mixed precision: every element of A and B rounded to bfloat16 (to nearest, ties to even) before it is
  // multiplied; products and sums stay float32 (the product of two bf16 values is exact in float32).
  bool bf16 = false;
  size_t a_stride() const { return lda ? lda : (trans_a ? m : k); }
  size_t b_stride() const { return ldb ? ldb : (trans_b ? k : n); }
  size_t c_stride() const { return ldc ? ldc : n; }
};

// The one builder of a dense product's arguments (the experts' and attention's products, the bindings'):
// C (+)= op(A) · op(B) with C [m, n].
inline TrainGemmArgs gemm_args(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, const float* a, const float* b, float* c, bool accumulate,
                               bool bf16 = false) {
  TrainGemmArgs g;
  g.trans_a = trans_a;
  g.trans_b = trans_b;
  g.m = m;
  g.n = n;
  g.k = k;
  g.a = a;
  g.b = b;
  g.c = c;
  g.accumulate = accumulate;
  g.bf16 = bf16;
  return g;
}

// The bfloat16 bits of x: its upper 16 bits after rounding to nearest, ties to even (NaN stays a quiet NaN of the
// same sign; ±inf and values that round past the largest finite bf16 become ±inf, as IEEE rounding does).
inline uint16_t bf16_bits(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x40u);  // NaN: keep it a NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return static_cast<uint16_t>(bits >> 16);
}

// x rounded to the nearest bfloat16, as a float.
inline float round_bf16(float x) {
  const uint32_t bits = static_cast<uint32_t>(bf16_bits(x)) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}

// Deterministic: every element of C is summed over k in the same order whatever the thread count.
void train_gemm(const TrainGemmArgs& args);
// Several products at once (a grouped GEMM: the experts, a backward's two products), in two pool barriers. They must
// write disjoint C; each is computed exactly as train_gemm computes it alone.
void train_gemm_batch(const TrainGemmArgs* products, size_t count);
// How bf16 products are computed here: "amx-bf16" (AMX tiles), "avx512-bf16" (vdpbf16ps on bf16-packed operands) or
// "fp32-fma" (operands rounded to bf16 in float32, then the float32 kernel).
const char* train_gemm_bf16_kernel();
// FLOP/s of the bf16 kernel's instruction on the pool's threads, operands in registers (vdpbf16ps: 64 FLOP; AMX
// tdpbf16ps: 16,384 FLOP), best of `repeats`; 0 where bf16 products run as float32 FMAs.
double bf16_peak(int repeats);

}  // namespace olmoe
