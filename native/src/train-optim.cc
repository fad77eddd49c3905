// The optimizer step (PyTorch's AdamW, clip_grad_norm_'s factor applied to the gradients first), the global sum of
// squares for clipping, and the machine's FP32 FMA peak for the training bench. Each element of AdamW is computed
// in double and rounded once when stored, as the reference backend does.
#include <chrono>
#include <cmath>
#include <string>
#include <vector>

#include "kernels.h"
#include "pool.h"
#include "train-ops.h"
#include "train-vector.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define OLMOE_X86 1
#endif

namespace olmoe {

namespace {
constexpr size_t kChunk = 1 << 14;  // elements per work item

struct Span {
  size_t param, begin, end;
};

std::vector<Span> spans(const size_t* sizes, size_t count) {
  std::vector<Span> out;
  for (size_t p = 0; p < count; p++)
    for (size_t b = 0; b < sizes[p]; b += kChunk) out.push_back({p, b, std::min(sizes[p], b + kChunk)});
  return out;
}
}  // namespace

void adamw_step(const AdamWTensor* params, size_t count, const AdamWHyper& h) {
  std::vector<size_t> sizes(count);
  for (size_t p = 0; p < count; p++) sizes[p] = params[p].size;
  const std::vector<Span> work = spans(sizes.data(), count);
  const double correction1 = 1 - std::pow(h.beta1, h.step), sqrt_correction2 = std::sqrt(1 - std::pow(h.beta2, h.step));
  const double step_size = h.lr / correction1;
  const VectorKernels& vk = vector_kernels();
  pool().parallel_for(work.size(), [&](size_t w0, size_t w1) {
    for (size_t w = w0; w < w1; w++) {
      const AdamWTensor& p = params[work[w].param];
      const AdamWConstants c{h.beta1, h.beta2, h.eps, p.decay ? 1 - h.lr * h.weight_decay : 1, step_size, sqrt_correction2, h.grad_scale};
      const size_t at = work[w].begin, n = work[w].end - at;
      vk.adamw(p.value + at, p.grad + at, p.m + at, p.v + at, n, c);
    }
  });
}

double sum_of_squares(const float* const* arrays, const size_t* sizes, size_t count) {
  const std::vector<Span> work = spans(sizes, count);
  std::vector<double> partial(work.size(), 0.0);
  pool().parallel_for(work.size(), [&](size_t w0, size_t w1) {
    for (size_t w = w0; w < w1; w++) partial[w] = vector_kernels().sum_squares(arrays[work[w].param] + work[w].begin, work[w].end - work[w].begin);
  });
  double total = 0;
  for (double p : partial) total += p;  // in a fixed order: the same bits for any thread count
  return total;
}

namespace {
#ifdef OLMOE_X86
// 12 independent FMA chains held in registers (two FMA pipes of 4-cycle latency need 8): returns FMAs × lanes.
#define OLMOE_FMA12(F) F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11)
__attribute__((target("avx512f"))) double fma_loop_avx512(double seconds) {
#define OLMOE_DECLARE(i) __m512 x##i = _mm512_set1_ps(1.0f + (i) * 1e-3f);
  OLMOE_FMA12(OLMOE_DECLARE)
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  double fmas = 0;
  while (std::chrono::steady_clock::now() < end) {
    for (int r = 0; r < 10000; r++) {
#define OLMOE_STEP(i) x##i = _mm512_fmadd_ps(x##i, a, b);
      OLMOE_FMA12(OLMOE_STEP)
    }
    fmas += 12.0 * 10000 * 16;
  }
#define OLMOE_SUM(i) x0 = _mm512_add_ps(x0, x##i);
  OLMOE_FMA12(OLMOE_SUM)
  return _mm512_reduce_add_ps(x0) == 12345.0f ? 0 : fmas;
}
#undef OLMOE_DECLARE
#undef OLMOE_STEP
#undef OLMOE_SUM
__attribute__((target("avx2,fma"))) double fma_loop_avx2(double seconds) {
#define OLMOE_DECLARE(i) __m256 x##i = _mm256_set1_ps(1.0f + (i) * 1e-3f);
  OLMOE_FMA12(OLMOE_DECLARE)
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  double fmas = 0;
  while (std::chrono::steady_clock::now() < end) {
    for (int r = 0; r < 10000; r++) {
#define OLMOE_STEP(i) x##i = _mm256_fmadd_ps(x##i, a, b);
      OLMOE_FMA12(OLMOE_STEP)
    }
    fmas += 12.0 * 10000 * 8;
  }
#define OLMOE_SUM(i) x0 = _mm256_add_ps(x0, x##i);
  OLMOE_FMA12(OLMOE_SUM)
  float lanes[8];
  _mm256_storeu_ps(lanes, x0);
  return lanes[0] == 12345.0f ? 0 : fmas;
}
#undef OLMOE_DECLARE
#undef OLMOE_STEP
#undef OLMOE_SUM
#endif
double fma_loop_scalar(double seconds) {
  float acc[8] = {1, 1, 1, 1, 1, 1, 1, 1};
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  double fmas = 0;
  while (std::chrono::steady_clock::now() < end) {
    for (int r = 0; r < 1000; r++)
      for (float& x : acc) x = x * 0.999999f + 1e-7f;
    fmas += 8000;
  }
  return acc[0] == 12345.0f ? 0 : fmas;
}
}  // namespace

double fma_peak_gflops(double seconds) {
  const std::string level = simd_level();
  const size_t threads = pool().threads();
  std::vector<double> fmas(threads, 0.0);
  const auto start = std::chrono::steady_clock::now();
  pool().parallel_for(threads, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; t++) {
#ifdef OLMOE_X86
      if (level == "avx512") { fmas[t] = fma_loop_avx512(seconds); continue; }
      if (level == "avx2") { fmas[t] = fma_loop_avx2(seconds); continue; }
#endif
      fmas[t] = fma_loop_scalar(seconds);
    }
  });
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  double total = 0;
  for (double f : fmas) total += f;
  return 2 * total / elapsed / 1e9;
}

}  // namespace olmoe
