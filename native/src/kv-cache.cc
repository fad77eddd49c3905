// KV cache rows: rounding on store (f16, q8_0) and widening on load (native/src/kv-cache.h).
#include "kv-cache.h"

#include <cmath>
#include <cstring>

#include "gemm.h"
#include "half.h"
#include "pool.h"
#include "quant-blocks.h"

namespace olmoe {

namespace {

constexpr size_t kQ8Block = 32, kQ8BlockBytes = 34;

// float32 → f16 bits, round to nearest even, subnormals, overflow to ±∞ (what F16C's vcvtps2ph computes; the scalar
// twin of src/core/f16.ts float32ToF16Bits).
uint16_t f32_to_f16(float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, 4);
  const uint32_t sign = (bits >> 16) & 0x8000u, exponent = (bits >> 23) & 0xffu;
  uint32_t mantissa = bits & 0x7fffffu;
  if (exponent == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mantissa ? 0x200u : 0u));
  const int half_exponent = static_cast<int>(exponent) - 127 + 15;
  if (half_exponent >= 31) return static_cast<uint16_t>(sign | 0x7c00u);
  auto round_shift = [](uint32_t v, int shift) {
    const uint32_t half = 1u << (shift - 1), truncated = v >> shift, remainder = v & ((1u << shift) - 1);
    return remainder > half || (remainder == half && (truncated & 1)) ? truncated + 1 : truncated;
  };
  if (half_exponent <= 0) {
    if (half_exponent < -10) return static_cast<uint16_t>(sign);
    return static_cast<uint16_t>(sign | round_shift(mantissa | 0x800000u, 14 - half_exponent));
  }
  return static_cast<uint16_t>(sign | ((static_cast<uint32_t>(half_exponent) << 10) + round_shift(mantissa, 13)));
}

void store_f16(const float* x, size_t n, uint8_t* out) {
  for (size_t i = 0; i < n; i++) {
    const uint16_t h = f32_to_f16(x[i]);
    std::memcpy(out + 2 * i, &h, 2);
  }
}

// One q8_0 block of values x[0, n) (n ≤ 32; zeros after).
void store_q8_block(const float* x, size_t n, uint8_t* out) {
  float amax = 0;
  bool finite = true;
  for (size_t i = 0; i < n; i++) {
    const float magnitude = std::fabs(x[i]);
    if (!(magnitude <= 3.4028234663852886e38f)) finite = false;
    else amax = std::max(amax, magnitude);
  }
  const float d = finite ? amax / 127.0f : NAN, inverse = d != 0 && finite ? 1.0f / d : 0.0f;
  const uint16_t h = f32_to_f16(d);
  std::memcpy(out, &h, 2);
  for (size_t i = 0; i < kQ8Block; i++) out[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(i < n && finite ? std::round(x[i] * inverse) : 0.0f));
}

#if defined(__x86_64__)
// F16C rounds to nearest even with subnormals and overflow to ±∞ as f32_to_f16 does; a NaN keeps payload bits that
// the scalar path drops, so a group of eight holding one is stored by the scalar path.
__attribute__((target("avx2,f16c"))) void store_f16_f16c(const float* x, size_t n, uint8_t* out) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    if (_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)) != 0) {
      store_f16(x + i, 8, out + 2 * i);
      continue;
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + 2 * i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
  store_f16(x + i, n - i, out + 2 * i);
}
#endif

bool avx512() { return std::strcmp(kernels().name, "avx512") == 0; }
bool avx2() { return std::strcmp(kernels().name, "avx2") == 0; }

void store_row(const float* x, size_t width, DType type, uint8_t* out) {
  if (type == DType::F32) std::memcpy(out, x, width * sizeof(float));
#if defined(__x86_64__)
  else if (type == DType::F16 && (avx512() || avx2())) store_f16_f16c(x, width, out);
#endif
  else if (type == DType::F16) store_f16(x, width, out);
  else
    for (size_t b = 0; b * kQ8Block < width; b++) store_q8_block(x + b * kQ8Block, std::min(kQ8Block, width - b * kQ8Block), out + b * kQ8BlockBytes);
}

void load_q8_scalar(const uint8_t* row, size_t first, size_t n, float* out) {
  for (size_t i = 0; i < n; i++) {
    const uint8_t* block = row + (first + i) / kQ8Block * kQ8BlockBytes;
    uint16_t bits;
    std::memcpy(&bits, block, 2);
    out[i] = f16_to_f32(bits) * static_cast<float>(static_cast<int8_t>(block[2 + (first + i) % kQ8Block]));
  }
}

#if defined(__x86_64__)
// Whole blocks: 32 values per block, two 16-lane vectors, d·q in float as the scalar path computes it.
OLMOE_AVX512 void load_q8_avx512(const uint8_t* row, size_t first, size_t n, float* out) {
  const uint8_t* block = row + first / kQ8Block * kQ8BlockBytes;
  for (size_t i = 0; i < n; i += kQ8Block, block += kQ8BlockBytes) {
    __m512 low, high;
    q8_0_values(block, low, high);
    _mm512_storeu_ps(out + i, low);
    _mm512_storeu_ps(out + i + 16, high);
  }
}

// The same with AVX2: eight values per vector.
__attribute__((target("avx2,fma,f16c"))) void load_q8_avx2(const uint8_t* row, size_t first, size_t n, float* out) {
  const uint8_t* block = row + first / kQ8Block * kQ8BlockBytes;
  for (size_t i = 0; i < n; i += kQ8Block, block += kQ8BlockBytes) {
    uint16_t bits;
    std::memcpy(&bits, block, 2);
    const __m256 d = _mm256_set1_ps(_cvtsh_ss(bits));
    for (size_t j = 0; j < kQ8Block; j += 8) {
      const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + j)));
      _mm256_storeu_ps(out + i + j, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
    }
  }
}
#endif

}  // namespace

size_t kv_row_bytes(DType type, size_t width) {
  if (type == DType::Q8_0) return (width + kQ8Block - 1) / kQ8Block * kQ8BlockBytes;
  return width * (type == DType::F16 ? 2 : 4);
}

void kv_store(const float* rows, size_t count, size_t width, DType type, uint8_t* out) {
  const size_t row_bytes = kv_row_bytes(type, width);
  auto store = [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) store_row(rows + r * width, width, type, out + r * row_bytes);
  };
  if (count * width < (1u << 16)) store(0, count);  // a decode step: not worth waking the pool
  else pool().parallel_for(count, store);
}

void kv_load(DType type, const uint8_t* row, size_t first, size_t n, float* out) {
  if (type == DType::F32) {
    std::memcpy(out, row + first * sizeof(float), n * sizeof(float));
  } else if (type == DType::F16) {
    kernels().widen(row + 2 * first, DType::F16, n, out);
  } else {
#if defined(__x86_64__)
    if (first % kQ8Block == 0 && n % kQ8Block == 0 && avx512()) return load_q8_avx512(row, first, n, out);
    if (first % kQ8Block == 0 && n % kQ8Block == 0 && avx2()) return load_q8_avx2(row, first, n, out);
#endif
    load_q8_scalar(row, first, n, out);
  }
}

}  // namespace olmoe
