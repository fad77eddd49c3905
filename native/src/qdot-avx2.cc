// qdot.h on AVX2 (no VNNI): vpmaddubsw (u8 × s8 → pairs of int16, saturating) then vpmaddwd into int32 lanes. No
// saturation is possible: q4_0 codes are ≤ 15, K-quant codes ≤ 63, and q8_0 goes through |w| · sign(q, w)
// (|w| ≤ 128, |q| ≤ 127: 2 · 128 · 127 < 2^15).
#include "qdot.h"

#if defined(__x86_64__)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace olmoe {
namespace {

struct Avx2Ops {
  static __m256i quads(__m256i pairs) { return _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)); }
  static __m256i q4(__m256i bias, __m256i n, __m256i q) { return _mm256_add_epi32(bias, quads(_mm256_maddubs_epi16(n, q))); }
  static __m256i q8(__m256i, __m256i w, __m256i q) { return quads(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(q, w))); }
  static __m256i madd(__m256i acc, __m256i a, __m256i b) { return _mm256_add_epi32(acc, _mm256_madd_epi16(a, b)); }
  template <int N, class... Args>
  static bool wide_k(Args&&...) { return false; }
};

}  // namespace
}  // namespace olmoe

#include "qdot-x86.h"

namespace olmoe {
void qdot_rows_avx2(const QDotArgs& args) { qdot_rows_x86<Avx2Ops>(args); }
}  // namespace olmoe

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else
namespace olmoe {
void qdot_rows_avx2(const QDotArgs& args) { qdot_rows_scalar(args); }
}  // namespace olmoe
#endif
