// qdot.h with AVX-512 VNNI on 256-bit vectors: vpdpbusd (u8 × s8, four products summed into each int32 lane, no
// saturation) and vpdpwssd (int16 pairs). q4_0 codes n enter as unsigned with the activation's bias −8·Σq as the
// accumulator's start; q8_0 codes w as w ^ 0x80 = w + 128 with bias −128·Σq (Q8Block32). 256-bit vectors keep the
// third vector port in use (512-bit operations fuse ports 0 and 1) and the per-block scale work narrow.
#include "qdot.h"

#if defined(__x86_64__)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#endif

namespace olmoe {
namespace {

struct VnniOps {
  static __m256i q4(__m256i bias, __m256i n, __m256i q) { return _mm256_dpbusd_epi32(bias, n, q); }
  static __m256i q8(__m256i bias, __m256i w, __m256i q) { return _mm256_dpbusd_epi32(bias, _mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80))), q); }
  static __m256i madd(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_epi32(acc, a, b); }
};

}  // namespace
}  // namespace olmoe

#include "qdot-x86.h"

namespace olmoe {
void qdot_rows_vnni(const QDotArgs& args) { qdot_rows_x86<VnniOps>(args); }
}  // namespace olmoe

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else
namespace olmoe {
void qdot_rows_vnni(const QDotArgs& args) { qdot_rows_scalar(args); }
}  // namespace olmoe
#endif
