// The inner loops of the training kernels (one row, one chunk: no threading), written once in train-vector.inc as
// plain loops the compiler vectorizes, and compiled three times: AVX-512, AVX2+FMA and the baseline instruction set
// (train-vector-*.cc). vector_kernels() returns the set matching simd_level(), so OLMOE_SIMD=avx2|scalar selects a
// lower one exactly as it does for the inference kernels. Sums use a fixed number of partial sums (16 lanes) added
// in a fixed order: the same bits whichever set runs.
#pragma once
#include <cstddef>

namespace olmoe {

struct AdamWConstants {
  double beta1, beta2, eps, keep, step_size, sqrt_correction2, grad_scale;
};

struct VectorKernels {
  float (*max)(const float* x, size_t n);
  // x[i] ← exp(scale·x[i] − shift); returns Σ of the new values.
  float (*exp_in_place)(float* x, size_t n, float scale, float shift);
  // Σ exp(x[i] − shift)
  float (*sum_exp)(const float* x, size_t n, float shift);
  // out[i] += factor · exp(x[i] − shift)
  void (*add_exp)(const float* x, size_t n, float shift, float factor, float* out);
  // h = silu(g) ⊙ u
  void (*swiglu)(const float* g, const float* u, float* h, size_t n);
  // dh → dh ⊙ u ⊙ silu'(g) (in place); h → dh ⊙ silu(g), where h holds nothing needed afterwards.
  void (*swiglu_backward)(const float* g, const float* u, float* dh, float* du, size_t n);
  // Σ x², Σ dy·w·x over one row
  void (*rmsnorm_sums)(const float* x, const float* dy, const float* w, size_t n, double* squares, double* gx);
  // dx += s·dy⊙w − x·c
  void (*rmsnorm_dx)(const float* x, const float* dy, const float* w, size_t n, float s, float c, float* dx);
  // out += s · a ⊙ b
  void (*add_product)(const float* a, const float* b, float s, float* out, size_t n);
  // y += a · x
  void (*axpy)(float a, const float* x, float* y, size_t n);
  // x ← s · x
  void (*scale)(float* x, size_t n, float s);
  // Σ a·b in float lanes (attention's row dots)
  float (*dot)(const float* a, const float* b, size_t n);
  // dp[j] ← p[j] · (dp[j] − delta) · scale
  void (*softmax_backward)(const float* p, float* dp, size_t n, float delta, float scale);
  // Σ x² in double
  double (*sum_squares)(const float* x, size_t n);
  // out = w ⊙ (x · s), rounding x·s first as HF's RMSNorm casts before the gain (spec §3.1)
  void (*rmsnorm_apply)(const float* x, const float* w, float s, float* out, size_t n);
  void (*adamw)(float* value, const float* grad, float* m, float* v, size_t n, const AdamWConstants& c);
};

const VectorKernels& vector_kernels();

}  // namespace olmoe
