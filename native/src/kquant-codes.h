// The codes of K-quant weight blocks on 256-bit vectors, shared by the integer dot kernels (qdot-x86.h) and the AMX
// tiles (qgemm-amx.cc). Include it after the including file's target pragma (AVX2 or higher): the functions live in
// an anonymous namespace, so each translation unit gets its own copy, compiled for its own instruction set.
#pragma once
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace olmoe {
namespace {

// q4_k / q5_k: the eight 6-bit scales (bytes 0..7 of scales) and mins (bytes 8..15) from the 12 packed bytes:
// sub-blocks 0..3 keep 6 bits in bytes 0..3 (scales) and 4..7 (mins); sub-blocks 4..7 take their low 4 bits from
// bytes 8..11 (scale: low nibble, min: high nibble) and their top 2 bits from the top bits of bytes 0..3 / 4..7.
inline void scales_mins_k4(const uint8_t* packed, uint8_t* scales, uint8_t* mins) {
  uint32_t w[3];
  std::memcpy(w, packed, 12);
  const uint32_t six = 0x3f3f3f3f, nibble = 0x0f0f0f0f, two = 0x03030303;
  const uint32_t out[4] = {w[0] & six, (w[2] & nibble) | (((w[0] >> 6) & two) << 4), w[1] & six, ((w[2] >> 4) & nibble) | (((w[1] >> 6) & two) << 4)};
  std::memcpy(scales, out, 8);
  std::memcpy(mins, out + 2, 8);
}

// q4_k / q5_k: the 32 codes (0..15, or 0..31 with the fifth bits) of sub-blocks 2·pair (first: low nibbles of the
// 32 bytes at qs) and 2·pair + 1 (second: high nibbles). q5_k's fifth bits: bit 2·pair of qh[l] for the first and
// 2·pair + 1 for the second, read from bits 0 and 1 of `high`, which is then shifted on for the next pair.
template <bool kFiveBits>
inline void k45_codes(const uint8_t* qs, __m256i& high, __m256i& first, __m256i& second) {
  const __m256i low = _mm256_set1_epi8(0x0F), packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs));
  first = _mm256_and_si256(packed, low);
  second = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low);
  if (kFiveBits) {
    first = _mm256_or_si256(first, _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(1)), 4));
    second = _mm256_or_si256(second, _mm256_slli_epi16(_mm256_and_si256(high, _mm256_set1_epi8(2)), 3));
    high = _mm256_srli_epi16(high, 2);
  }
}

// q6_k: the codes v (0..63) of one half of a block (128 values: ql at w + 64·half, qh at w + 128 + 32·half), as
// four groups of 32: group g holds values 128·half + 32·g + l, l < 32.
inline void q6_codes(const uint8_t* w, int half, __m256i* codes) {
  const __m256i low = _mm256_set1_epi8(0x0F);
  const uint8_t* ql = w + 64 * half;
  const __m256i ql0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql)), ql1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
  const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 128 + 32 * half));
  codes[0] = _mm256_or_si256(_mm256_and_si256(ql0, low), _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x03)), 4));
  codes[1] = _mm256_or_si256(_mm256_and_si256(ql1, low), _mm256_slli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(0x0C)), 2));
  codes[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), low), _mm256_and_si256(qh, _mm256_set1_epi8(0x30)));
  codes[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), low), _mm256_srli_epi16(_mm256_and_si256(qh, _mm256_set1_epi8(static_cast<char>(0xC0))), 2));
}

}  // namespace
}  // namespace olmoe
