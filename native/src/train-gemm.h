// Training's float32 GEMM (native/src/train-gemm.cc): C[M, N] = op(A)[M, K] · op(B)[K, N], or C += that.
#pragma once
#include <cstddef>

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
  size_t a_stride() const { return lda ? lda : (trans_a ? m : k); }
  size_t b_stride() const { return ldb ? ldb : (trans_b ? k : n); }
  size_t c_stride() const { return ldc ? ldc : n; }
};

// Deterministic: every element of C is summed over k in the same order whatever the thread count.
void train_gemm(const TrainGemmArgs& args);
// Several products at once (a grouped GEMM: the experts, a backward's two products), in two pool barriers. They must
// write disjoint C; each is computed exactly as train_gemm computes it alone.
void train_gemm_batch(const TrainGemmArgs* products, size_t count);

}  // namespace olmoe
