// Read bandwidth and FP32 peak (measure.h), in the style of STREAM's read test and a register-only FMA loop.
#include "measure.h"

#include <sys/mman.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "pool.h"
#include "simd.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define OLMOE_X86 1
#endif

namespace olmoe {

namespace {

double seconds() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Sum of n floats with four independent accumulators (the loads, not the adds, are the limit).
float sum_scalar(const float* x, size_t n) {
  float s[4] = {0, 0, 0, 0};
  for (size_t i = 0; i + 4 <= n; i += 4)
    for (int k = 0; k < 4; k++) s[k] += x[i + k];
  return s[0] + s[1] + s[2] + s[3];
}

#ifdef OLMOE_X86
// The same with every line prefetched kReadAhead bytes on (into L1), or not (the hardware's stream prefetchers
// alone). On the shared virtual machine measured, either pass was the faster one depending on the moment: in its
// slow phases (36–42 GB/s plain, 2 threads) the prefetching pass read 10–20 % more, in its fast ones (68–78) the
// plain pass was as fast or faster. read_bandwidth takes the best of both, so the bound decode is set against is what
// the machine delivered, whichever way it streamed best then.
constexpr size_t kReadAhead = 4096;
template <bool Prefetch>
__attribute__((target("avx2,fma"))) float sum_avx2(const float* x, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
  for (size_t i = 0; i + 32 <= n; i += 32) {
    if (Prefetch) {
      const char* ahead = reinterpret_cast<const char*>(x + i) + kReadAhead;
      _mm_prefetch(ahead, _MM_HINT_T0);
      _mm_prefetch(ahead + 64, _MM_HINT_T0);
    }
    s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + i));
    s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + i + 8));
    s2 = _mm256_add_ps(s2, _mm256_loadu_ps(x + i + 16));
    s3 = _mm256_add_ps(s3, _mm256_loadu_ps(x + i + 24));
  }
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}

// 12 chains of 8 FMAs: enough independent work to cover the FMA latency on two ports (ymm: no 512-bit frequency
// license question, and the same width the AVX2 machines have). Returns a value that depends on every chain.
__attribute__((target("avx2,fma"))) float fma_avx2(size_t iterations) {
  __m256 x[12];
  for (auto& v : x) v = _mm256_set1_ps(1.0f);
  const __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
  for (size_t i = 0; i < iterations; i++)
    for (auto& v : x) v = _mm256_fmadd_ps(v, m, a);
  __m256 s = x[0];
  for (int k = 1; k < 12; k++) s = _mm256_add_ps(s, x[k]);
  return _mm256_cvtss_f32(s);
}

__attribute__((target("avx512f"))) float fma_avx512(size_t iterations) {
  __m512 x[12];
  for (auto& v : x) v = _mm512_set1_ps(1.0f);
  const __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
  for (size_t i = 0; i < iterations; i++)
    for (auto& v : x) v = _mm512_fmadd_ps(v, m, a);
  __m512 s = x[0];
  for (int k = 1; k < 12; k++) s = _mm512_add_ps(s, x[k]);
  return _mm512_reduce_add_ps(s);
}
#endif

float fma_scalar(size_t iterations) {
  float x[12];
  std::fill(x, x + 12, 1.0f);
  for (size_t i = 0; i < iterations; i++)
    for (auto& v : x) v = v * 0.999999f + 1e-7f;
  float s = 0;
  for (float v : x) s += v;
  return s;
}

std::atomic<float> sink{0};

// The buffer a measurement kept for the next (read_bandwidth's `keep`): mapping and first-touching 2 GiB costs more
// than reading it, and `olmoe bench` samples the bandwidth beside every decode run.
struct KeptBuffer {
  std::mutex lock;
  void* memory = nullptr;
  size_t bytes = 0;
};
KeptBuffer& kept() {
  static KeptBuffer buffer;
  return buffer;
}

}  // namespace

double read_bandwidth(size_t bytes, int repeats, bool keep) {
  std::lock_guard<std::mutex> guard(kept().lock);
  void* memory = kept().bytes == bytes ? kept().memory : nullptr;
  if (!memory && kept().memory) munmap(kept().memory, kept().bytes);
  kept().memory = nullptr;
  kept().bytes = 0;
  auto* x = static_cast<float*>(memory);
  const size_t n = bytes / sizeof(float), chunks = 256;
  if (!memory) {
    memory = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (memory == MAP_FAILED) return 0;
#ifdef MADV_HUGEPAGE
    madvise(memory, bytes, MADV_HUGEPAGE);  // as the model's mapped weights (mapping.cc)
#endif
    x = static_cast<float*>(memory);
    pool().parallel_for(chunks, [&](size_t c0, size_t c1) {
      std::fill(x + n * c0 / chunks, x + n * c1 / chunks, 1.0f);  // first touch by the threads that read
    });
  }
  const bool vector = cpu().level != Simd::Scalar;
  double best = 0;
  // Each repeat is a plain pass and, with SIMD, a prefetching one (sum_avx2's note): the best of all of them.
  for (int pass = 0; pass < (vector ? 2 : 1) * repeats; pass++) {
    const bool prefetch = pass % 2 == 1;
    const double started = seconds();
    pool().parallel_for(chunks, [&](size_t c0, size_t c1) {
      const float* begin = x + n * c0 / chunks;
      const size_t count = n * c1 / chunks - n * c0 / chunks;
#ifdef OLMOE_X86
      const float s = !vector ? sum_scalar(begin, count) : prefetch ? sum_avx2<true>(begin, count) : sum_avx2<false>(begin, count);
#else
      const float s = sum_scalar(begin, count);
#endif
      sink.store(s, std::memory_order_relaxed);
    });
    best = std::max(best, bytes / (seconds() - started));
  }
  if (keep) {
    kept().memory = memory;
    kept().bytes = bytes;
  } else {
    munmap(memory, bytes);
  }
  return best;
}

double fp32_peak(int repeats) {
  const size_t parts = 2 * static_cast<size_t>(pool().threads()), iterations = 2000000;
  const Simd level = cpu().level;
  const double lanes = level == Simd::Avx512 ? 16 : level == Simd::Avx2 ? 8 : 1;
  double best = 0;
  for (int r = 0; r < repeats; r++) {
    const double started = seconds();
    pool().parallel_for(parts, [&](size_t p0, size_t p1) {
      for (size_t p = p0; p < p1; p++) {
#ifdef OLMOE_X86
        const float s = level == Simd::Avx512 ? fma_avx512(iterations) : level == Simd::Avx2 ? fma_avx2(iterations) : fma_scalar(iterations);
#else
        const float s = fma_scalar(iterations);
#endif
        sink.store(s, std::memory_order_relaxed);
      }
    });
    best = std::max(best, 2 * 12 * lanes * iterations * parts / (seconds() - started));
  }
  return best;
}

}  // namespace olmoe
