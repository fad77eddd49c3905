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
};

// Deterministic: every element of C is summed over k in the same order whatever the thread count.
void train_gemm(const TrainGemmArgs& args);

}  // namespace olmoe
