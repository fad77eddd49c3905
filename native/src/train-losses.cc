// The training losses (spec §3.8): cross-entropy over the vocabulary with a vectorized exp (AVX-512, AVX2 or
// scalar), the load-balancing loss and the router z-loss, forward and backward. Sums over rows go through fixed
// chunks of rows added in order, so the result does not depend on the thread count.
// Dimension legend: T tokens, V vocab, E experts.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels.h"
#include "pool.h"
#include "train-ops.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define OLMOE_X86 1
#endif

namespace olmoe {

namespace {

constexpr size_t kRowChunk = 16;  // rows per partial sum

// Σ_j exp(row[j] − shift) (float lanes), and, when `out` is given, out[j] += factor · exp(row[j] − shift).
struct ExpKernels {
  float (*max)(const float*, size_t);
  float (*sum_exp)(const float*, size_t, float shift);
  void (*add_exp)(const float*, size_t, float shift, float factor, float* out);
};

float max_scalar(const float* x, size_t n) {
  float m = -INFINITY;
  for (size_t i = 0; i < n; i++) m = std::max(m, x[i]);
  return m;
}
float sum_exp_scalar(const float* x, size_t n, float shift) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += std::exp(static_cast<double>(x[i]) - shift);
  return static_cast<float>(s);
}
void add_exp_scalar(const float* x, size_t n, float shift, float factor, float* out) {
  for (size_t i = 0; i < n; i++) out[i] += factor * std::exp(x[i] - shift);
}

#ifdef OLMOE_X86
// exp(x) for x ≤ 0 (arguments are shifted by the row max): 2^n · p(r), r = x − n·ln2 in two parts, p of degree 6
// (Cephes expf's coefficients); relative error ~2e-7. Below −87 the result flushes to 0.
#define AVX512 __attribute__((target("avx512f,avx2,fma")))
AVX512 inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}
AVX512 float max_avx512(const float* x, size_t n) {
  __m512 m = _mm512_set1_ps(-INFINITY);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + i));
  float best = _mm512_reduce_max_ps(m);
  for (; i < n; i++) best = std::max(best, x[i]);
  return best;
}
AVX512 float sum_exp_avx512(const float* x, size_t n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  __m512 acc = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) acc = _mm512_add_ps(acc, exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), s)));
  if (i < n) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (n - i)) - 1);
    acc = _mm512_add_ps(acc, _mm512_maskz_mov_ps(mask, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, x + i), s))));
  }
  return _mm512_reduce_add_ps(acc);
}
AVX512 void add_exp_avx512(const float* x, size_t n, float shift, float factor, float* out) {
  const __m512 s = _mm512_set1_ps(shift), f = _mm512_set1_ps(factor);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(out + i, _mm512_fmadd_ps(f, exp512(_mm512_sub_ps(_mm512_loadu_ps(x + i), s)), _mm512_loadu_ps(out + i)));
  for (; i < n; i++) out[i] += factor * std::exp(x[i] - shift);
}

#define AVX2 __attribute__((target("avx2,fma")))
AVX2 inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  // 2^n: n (an integer in float) into the exponent field
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
AVX2 float max_avx2(const float* x, size_t n) {
  __m256 m = _mm256_set1_ps(-INFINITY);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
  float lanes[8];
  _mm256_storeu_ps(lanes, m);
  float best = *std::max_element(lanes, lanes + 8);
  for (; i < n; i++) best = std::max(best, x[i]);
  return best;
}
AVX2 float sum_exp_avx2(const float* x, size_t n, float shift) {
  const __m256 s = _mm256_set1_ps(shift);
  __m256 acc = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) acc = _mm256_add_ps(acc, exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), s)));
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  double total = 0;
  for (float lane : lanes) total += lane;
  for (; i < n; i++) total += std::exp(static_cast<double>(x[i]) - shift);
  return static_cast<float>(total);
}
AVX2 void add_exp_avx2(const float* x, size_t n, float shift, float factor, float* out) {
  const __m256 s = _mm256_set1_ps(shift), f = _mm256_set1_ps(factor);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_fmadd_ps(f, exp256(_mm256_sub_ps(_mm256_loadu_ps(x + i), s)), _mm256_loadu_ps(out + i)));
  for (; i < n; i++) out[i] += factor * std::exp(x[i] - shift);
}
#endif

const ExpKernels& exp_kernels() {
  static const ExpKernels chosen = [] {
    const std::string level = simd_level();
#ifdef OLMOE_X86
    if (level == "avx512") return ExpKernels{max_avx512, sum_exp_avx512, add_exp_avx512};
    if (level == "avx2") return ExpKernels{max_avx2, sum_exp_avx2, add_exp_avx2};
#endif
    return ExpKernels{max_scalar, sum_exp_scalar, add_exp_scalar};
  }();
  return chosen;
}

// Σ over rows of row_value(t) in double, by fixed chunks of rows (thread-count independent).
template <typename Fn>
double sum_rows(size_t rows, const Fn& row_value) {
  const size_t chunks = (rows + kRowChunk - 1) / kRowChunk;
  std::vector<double> partial(chunks, 0.0);
  pool().parallel_for(chunks, [&](size_t c0, size_t c1) {
    for (size_t c = c0; c < c1; c++)
      for (size_t t = c * kRowChunk; t < std::min(rows, (c + 1) * kRowChunk); t++) partial[c] += row_value(t);
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

float log_sum_exp(const float* row, size_t n) {
  const ExpKernels& k = exp_kernels();
  const float max = k.max(row, n);
  return max + std::log(k.sum_exp(row, n, max));
}

}  // namespace

double cross_entropy_forward(const float* logits, size_t tokens, size_t vocab, const int32_t* targets, float* lse) {
  return sum_rows(tokens, [&](size_t t) {
    const float* row = logits + t * vocab;
    lse[t] = log_sum_exp(row, vocab);
    return targets[t] < 0 ? 0.0 : static_cast<double>(lse[t]) - row[targets[t]];
  });
}

void cross_entropy_backward(const float* logits, size_t tokens, size_t vocab, const int32_t* targets, const float* lse, float scale, float* dlogits) {
  const ExpKernels& k = exp_kernels();
  pool().parallel_for(tokens, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; t++) {
      if (targets[t] < 0) continue;
      k.add_exp(logits + t * vocab, vocab, lse[t], scale, dlogits + t * vocab);
      dlogits[t * vocab + targets[t]] -= scale;
    }
  });
}

double load_balancing_forward(const float* probs, size_t tokens, size_t experts, const double* counts, double scale) {
  const double total = sum_rows(tokens, [&](size_t t) {
    double row = 0;
    for (size_t e = 0; e < experts; e++) row += counts[e] * probs[t * experts + e];
    return row;
  });
  return scale * total / static_cast<double>(tokens);
}

void load_balancing_backward(size_t tokens, size_t experts, const double* counts, double factor, float* dprobs) {
  pool().parallel_for(tokens, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; t++)
      for (size_t e = 0; e < experts; e++) dprobs[t * experts + e] += static_cast<float>(factor * counts[e]);
  });
}

namespace {
double row_log_sum_exp(const float* row, size_t n) {
  double max = -INFINITY, total = 0;
  for (size_t i = 0; i < n; i++) max = std::max(max, static_cast<double>(row[i]));
  for (size_t i = 0; i < n; i++) total += std::exp(row[i] - max);
  return max + std::log(total);
}
}  // namespace

double router_z_forward(const float* logits, size_t tokens, size_t experts, double scale) {
  return scale * sum_rows(tokens, [&](size_t t) {
    const double lse = row_log_sum_exp(logits + t * experts, experts);
    return lse * lse;
  });
}

void router_z_backward(const float* logits, size_t tokens, size_t experts, double factor, float* dlogits) {
  pool().parallel_for(tokens, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; t++) {
      const float* row = logits + t * experts;
      const double lse = row_log_sum_exp(row, experts);
      for (size_t e = 0; e < experts; e++) dlogits[t * experts + e] += static_cast<float>(factor * 2 * lse * std::exp(row[e] - lse));
    }
  });
}

}  // namespace olmoe
