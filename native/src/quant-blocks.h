// One GGUF block of 32 weights as two float vectors (weights [0, 16) and [16, 32)), AVX-512: the dequantizers of
// quant.cc (the tile path of prefill).
#pragma once
#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#define OLMOE_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

namespace olmoe {

OLMOE_AVX512 inline float f16_scale(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return _cvtsh_ss(bits);
}

// Nibble q dequantizes to (q − 8)·d: a 16-entry table of those products per block, looked up by vpermps with the
// nibbles as indices (vpermps reads only the low 4 bits, so the high nibble needs no mask after the shift).
OLMOE_AVX512 inline __m512 q4_0_table(const uint8_t* block) {
  const __m512 offsets = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  return _mm512_mul_ps(offsets, _mm512_set1_ps(f16_scale(block)));
}

OLMOE_AVX512 inline void q4_0_values(const uint8_t* block, __m512& low, __m512& high) {
  const __m512 table = q4_0_table(block);
  const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2));
  low = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(raw), table);
  high = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(_mm_srli_epi16(raw, 4)), table);
}

// A q8_0 block's 32 codes as floats, not yet times its scale d.
OLMOE_AVX512 inline void q8_0_codes(const uint8_t* block, __m512& low, __m512& high) {
  low = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2))));
  high = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 18))));
}

OLMOE_AVX512 inline void q8_0_values(const uint8_t* block, __m512& low, __m512& high) {
  const __m512 d = _mm512_set1_ps(f16_scale(block));
  q8_0_codes(block, low, high);
  low = _mm512_mul_ps(low, d);
  high = _mm512_mul_ps(high, d);
}

}  // namespace olmoe
#endif
