#include "simd.h"

#include <atomic>
#include <cstdlib>
#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace olmoe {

namespace {

CpuFeatures detect() {
  const char* forced = std::getenv("OLMOE_SIMD");
  const std::string want = forced ? forced : "";
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (avx512 && (want.empty() || want == "avx512")) {
    const bool vnni = __builtin_cpu_supports("avx512vnni") != 0;
    const char* wide = std::getenv("OLMOE_WIDE_ROWS");
    const bool wide_rows = vnni && (wide ? std::string(wide) != "0" : __builtin_cpu_is("amd") != 0);
    return {Simd::Avx512, "avx512", vnni, __builtin_cpu_supports("avx512bf16") != 0, wide_rows};
  }
  if (avx2 && want != "scalar") return {Simd::Avx2, "avx2", false, false, false};
#endif
  return {Simd::Scalar, "scalar", false, false, false};
}

// AMD family 19h (Zen 3 and Zen 4; Zen 4 the one with AVX-512): CPUID leaf 1, base family 0xF plus extended family.
bool amd_family_19h() {
#if defined(__x86_64__)
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__builtin_cpu_is("amd") || !__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  const unsigned base = (eax >> 8) & 0xF, extended = (eax >> 20) & 0xFF;
  return base == 0xF && base + extended == 0x19;
#else
  return false;
#endif
}

int initial_prefetch() {
  const char* forced = std::getenv("OLMOE_PREFETCH");
  if (forced) return std::string(forced) != "0";
  return !amd_family_19h();
}

std::atomic<int>& prefetch_state() {
  static std::atomic<int> state{initial_prefetch()};
  return state;
}

}  // namespace

const CpuFeatures& cpu() {
  static const CpuFeatures features = detect();
  return features;
}

bool stream_prefetch() { return prefetch_state().load(std::memory_order_relaxed) != 0; }

void set_stream_prefetch(bool on) { prefetch_state().store(on ? 1 : 0, std::memory_order_relaxed); }

}  // namespace olmoe
