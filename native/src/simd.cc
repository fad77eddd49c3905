#include "simd.h"

#include <cstdlib>
#include <string>

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

}  // namespace

const CpuFeatures& cpu() {
  static const CpuFeatures features = detect();
  return features;
}

}  // namespace olmoe
