// Activation rounding to q8 blocks (q8.h): a scalar version for any stride and an AVX2 version for contiguous rows,
// bit-identical (the same float products and round-half-even conversions; max and integer sums are exact).
#include "q8.h"

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

#include "simd.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define OLMOE_X86 1
#endif

namespace olmoe {

namespace {

constexpr float kSmallest = 0x1p-100f;  // blocks whose largest |x| is below this round to zero

// The block's scale d and inverse scale id from its values x[0], x[step], …; id = 0 for a zero or non-finite block.
template <size_t N>
void block_scale(const float* x, size_t step, float& d, float& id) {
  float amax = 0;
  bool finite = true;
  for (size_t i = 0; i < N; i++) {
    const float a = std::fabs(x[i * step]);
    finite = finite && a <= FLT_MAX;
    amax = a > amax ? a : amax;
  }
  if (!finite) {
    d = std::numeric_limits<float>::quiet_NaN(), id = 0;
  } else if (amax < kSmallest) {
    d = 0, id = 0;
  } else {
    d = amax / 127.0f, id = 127.0f / amax;
  }
}

inline int8_t code(float x, float id) {
  const float v = std::nearbyint(x * id);  // round half to even (the default rounding mode)
  if (!(v == v)) return 0;                 // ∞ · 0 in a non-finite block, whose d is NaN anyway
  return static_cast<int8_t>(v > 127 ? 127 : v < -127 ? -127 : v);
}

template <size_t N>
float quantize_block_scalar(const float* x, size_t step, int8_t* q) {
  float d, id;
  block_scale<N>(x, step, d, id);
  for (size_t i = 0; i < N; i++) q[i] = code(x[i * step], id);
  return d;
}

// The fields of Q8Block32 / Q8Block256 derived from q.
void finish32(Q8Block32& b, int c) {
  b.sum = 0;
  for (int lane = 0; lane < 8; lane++) {
    const int s = b.q[4 * lane] + b.q[4 * lane + 1] + b.q[4 * lane + 2] + b.q[4 * lane + 3];
    b.bias[lane] = -c * s;
    b.sum += s;
  }
}

void finish256(Q8Block256& b) {
  for (int g = 0; g < 16; g++) {
    int s = 0;
    for (int i = 0; i < 16; i++) s += b.q[16 * g + i];
    b.sums16[g] = static_cast<int16_t>(s);
  }
  for (int g = 0; g < 8; g++) {
    b.sums32[g] = static_cast<int16_t>(b.sums16[2 * g] + b.sums16[2 * g + 1]);
    b.sums32_split[g] = static_cast<int8_t>(b.sums32[g] & 127);
    b.sums32_split[8 + g] = static_cast<int8_t>((b.sums32[g] - (b.sums32[g] & 127)) / 128);
  }
}

int bias_factor(DType weights) { return weights == DType::Q4_0 || weights == DType::Q4_0R16 ? 8 : 128; }

#ifdef OLMOE_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 inline __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

AVX2 inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// Scale of N contiguous values (as block_scale): the max and the finiteness test are exact in any order.
template <size_t N>
AVX2 void block_scale_avx2(const float* x, float& d, float& id) {
  __m256 amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  for (size_t i = 0; i < N; i += 8) {
    const __m256 a = abs8(_mm256_loadu_ps(x + i));
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, _mm256_set1_ps(FLT_MAX), _CMP_NLE_UQ));
    amax = _mm256_max_ps(amax, a);
  }
  const float m = hmax8(amax);
  if (_mm256_movemask_ps(bad)) {
    d = std::numeric_limits<float>::quiet_NaN(), id = 0;
  } else if (m < kSmallest) {
    d = 0, id = 0;
  } else {
    d = m / 127.0f, id = 127.0f / m;
  }
}

// 32 codes round-half-even(x · id) (cvtps2dq rounds by MXCSR: to nearest even, as Node leaves it).
AVX2 inline void codes32_avx2(const float* x, float id, int8_t* q) {
  const __m256 scale = _mm256_set1_ps(id), limit = _mm256_set1_ps(127.0f);
  __m256i v[4];
  for (int k = 0; k < 4; k++) v[k] = _mm256_cvtps_epi32(_mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(_mm256_loadu_ps(x + 8 * k), scale), limit), -limit));
  const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(v[0], v[1]), _mm256_packs_epi32(v[2], v[3]));
  // packs interleave 128-bit lanes: bytes come out as dwords 0,2,4,6,1,3,5,7 of the natural order
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(q), _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

AVX2 void quantize32_avx2(const float* x, size_t n, Q8Block32* out, int c) {
  for (size_t b = 0; b < n / 32; b++, x += 32) {
    float d, id;
    block_scale_avx2<32>(x, d, id);
    codes32_avx2(x, id, out[b].q);
    out[b].d = d;
    // lane sums of four bytes: maddubs with ones (pairs), madd with ones (quads)
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(out[b].q));
    const __m256i quads = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), q), _mm256_set1_epi16(1));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[b].bias), _mm256_mullo_epi32(quads, _mm256_set1_epi32(-c)));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(quads), _mm256_extracti128_si256(quads, 1));
    s = _mm_hadd_epi32(s, s);
    s = _mm_hadd_epi32(s, s);
    out[b].sum = _mm_cvtsi128_si32(s);
  }
}

// x[i] ← d · code(x[i]) over blocks of N contiguous values (round_to_q8 with step 1).
template <size_t N>
AVX2 void round_avx2(float* x, size_t n) {
  const __m256 limit = _mm256_set1_ps(127.0f);
  for (size_t b = 0; b < n; b += N, x += N) {
    float d, id;
    block_scale_avx2<N>(x, d, id);
    const __m256 scale = _mm256_set1_ps(id), step = _mm256_set1_ps(d);
    for (size_t i = 0; i < N; i += 8) {
      const __m256 v = _mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), scale), limit), -limit);
      _mm256_storeu_ps(x + i, _mm256_mul_ps(step, _mm256_cvtepi32_ps(_mm256_cvtps_epi32(v))));
    }
  }
}

// Eight tokens at once, one per lane (round_to_q8_tokens): the per-lane operations of block_scale and code.
template <size_t N>
AVX2 void round_tokens_avx2(float* x, size_t n, size_t feature_step) {
  const __m256 limit = _mm256_set1_ps(127.0f), sign = _mm256_set1_ps(-0.0f);
  for (size_t b = 0; b < n; b += N) {
    float* block = x + b * feature_step;
    __m256 amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
    for (size_t i = 0; i < N; i++) {
      const __m256 a = _mm256_andnot_ps(sign, _mm256_loadu_ps(block + i * feature_step));
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, _mm256_set1_ps(FLT_MAX), _CMP_NLE_UQ));
      amax = _mm256_max_ps(amax, a);
    }
    const __m256 small = _mm256_cmp_ps(amax, _mm256_set1_ps(kSmallest), _CMP_LT_OQ), zero = _mm256_or_ps(small, bad);
    const __m256 id = _mm256_andnot_ps(zero, _mm256_div_ps(limit, amax));
    const __m256 d = _mm256_blendv_ps(_mm256_andnot_ps(small, _mm256_div_ps(amax, limit)), _mm256_set1_ps(std::numeric_limits<float>::quiet_NaN()), bad);
    for (size_t i = 0; i < N; i++) {
      float* at = block + i * feature_step;
      const __m256 v = _mm256_max_ps(_mm256_min_ps(_mm256_mul_ps(_mm256_loadu_ps(at), id), limit), -limit);
      _mm256_storeu_ps(at, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtps_epi32(v))));
    }
  }
}

AVX2 void quantize256_avx2(const float* x, size_t n, Q8Block256* out) {
  for (size_t b = 0; b < n / 256; b++, x += 256) {
    float d, id;
    block_scale_avx2<256>(x, d, id);
    for (int k = 0; k < 8; k++) codes32_avx2(x + 32 * k, id, out[b].q + 32 * k);
    out[b].d = d;
    finish256(out[b]);
  }
}
#endif

}  // namespace

bool k_quant(DType weights) { return weights == DType::Q4_K || weights == DType::Q4_KR16 || weights == DType::Q5_K || weights == DType::Q6_K || weights == DType::Q6_KR16; }

size_t q8_row_bytes(DType weights, size_t n) {
  if (k_quant(weights)) return n / 256 * sizeof(Q8Block256);
  if (weights == DType::Q4_0 || weights == DType::Q4_0R16 || weights == DType::Q8_0) return n / 32 * sizeof(Q8Block32);
  return 0;
}

void quantize_q8(DType weights, const float* x, size_t n, uint8_t* out) {
#ifdef OLMOE_X86
  if (cpu().level != Simd::Scalar) {
    if (k_quant(weights)) return quantize256_avx2(x, n, reinterpret_cast<Q8Block256*>(out));
    return quantize32_avx2(x, n, reinterpret_cast<Q8Block32*>(out), bias_factor(weights));
  }
#endif
  if (k_quant(weights)) {
    auto* blocks = reinterpret_cast<Q8Block256*>(out);
    for (size_t b = 0; b < n / 256; b++) {
      blocks[b].d = quantize_block_scalar<256>(x + 256 * b, 1, blocks[b].q);
      finish256(blocks[b]);
    }
    return;
  }
  auto* blocks = reinterpret_cast<Q8Block32*>(out);
  for (size_t b = 0; b < n / 32; b++) {
    blocks[b].d = quantize_block_scalar<32>(x + 32 * b, 1, blocks[b].q);
    finish32(blocks[b], bias_factor(weights));
  }
}

void round_to_q8(DType weights, float* x, size_t n, size_t step) {
  const size_t block = k_quant(weights) ? 256 : 32;
#ifdef OLMOE_X86
  if (step == 1 && cpu().level != Simd::Scalar) return block == 256 ? round_avx2<256>(x, n) : round_avx2<32>(x, n);
#endif
  int8_t q[256];
  for (size_t b = 0; b < n; b += block) {
    float* values = x + b * step;
    const float d = block == 256 ? quantize_block_scalar<256>(values, step, q) : quantize_block_scalar<32>(values, step, q);
    for (size_t i = 0; i < block; i++) values[i * step] = d * q[i];
  }
}

void round_to_q8_tokens(DType weights, float* x, size_t tokens, size_t n, size_t feature_step) {
  size_t t = 0;
#ifdef OLMOE_X86
  if (cpu().level != Simd::Scalar) {
    for (; t + 8 <= tokens; t += 8) {
      if (k_quant(weights)) round_tokens_avx2<256>(x + t, n, feature_step);
      else round_tokens_avx2<32>(x + t, n, feature_step);
    }
  }
#endif
  for (; t < tokens; t++) round_to_q8(weights, x + t, n, feature_step);
}

}  // namespace olmoe
