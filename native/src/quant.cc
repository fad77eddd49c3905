#include "quant.h"

#include "half.h"
#include "simd.h"

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#define OLMOE_X86 1
#include "quant-blocks.h"
#endif

namespace olmoe {

namespace {

struct HalfTable {
  float values[65536];
  HalfTable() {
    for (uint32_t i = 0; i < 65536; i++) values[i] = f16_to_f32(static_cast<uint16_t>(i));
  }
};

}  // namespace

const float* half_table() {
  static const HalfTable table;
  return table.values;
}

namespace {

inline uint16_t u16_at(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }

inline float f16_at(const uint8_t* p) { return half_table()[u16_at(p)]; }

void scale_min_k4(int j, const uint8_t* q, int* scale, int* min) {
  if (j < 4) {
    *scale = q[j] & 63;
    *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void dequantize_q8_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  for (int j = 0; j < 32; j++) y[j] = static_cast<int8_t>(b[2 + j]) * d;
}

void dequantize_q4_0(const uint8_t* b, float* y) {
  const float d = f16_at(b);
  for (int j = 0; j < 16; j++) {
    y[j] = ((b[2 + j] & 0xF) - 8) * d;
    y[j + 16] = ((b[2 + j] >> 4) - 8) * d;
  }
}

void dequantize_k(const uint8_t* b, float* y, bool five_bits) {
  const float d = f16_at(b), dmin = f16_at(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = five_bits ? b + 48 : b + 16;
  for (int j = 0; j < 4; j++) {
    int s1, m1, s2, m2;
    scale_min_k4(2 * j, scales, &s1, &m1);
    scale_min_k4(2 * j + 1, scales, &s2, &m2);
    const float d1 = d * s1, n1 = dmin * m1, d2 = d * s2, n2 = dmin * m2;
    const int u1 = 1 << (2 * j), u2 = 2 << (2 * j);
    for (int l = 0; l < 32; l++) {
      const uint8_t q = qs[32 * j + l];
      const int high1 = five_bits && (qh[l] & u1) ? 16 : 0, high2 = five_bits && (qh[l] & u2) ? 16 : 0;
      y[64 * j + l] = d1 * ((q & 0xF) + high1) - n1;
      y[64 * j + 32 + l] = d2 * ((q >> 4) + high2) - n2;
    }
  }
}

void dequantize_q6_k(const uint8_t* b, float* y) {
  const float d = f16_at(b + 208);
  for (int half = 0; half < 2; half++) {
    const uint8_t* ql = b + 64 * half;
    const uint8_t* qh = b + 128 + 32 * half;
    const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192 + 8 * half);
    float* out = y + 128 * half;
    for (int l = 0; l < 32; l++) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      out[l] = d * sc[is] * q1;
      out[l + 32] = d * sc[is + 2] * q2;
      out[l + 64] = d * sc[is + 4] * q3;
      out[l + 96] = d * sc[is + 6] * q4;
    }
  }
}

void dequantize_block(DType dtype, const uint8_t* b, float* y) {
  switch (dtype) {
    case DType::Q8_0: return dequantize_q8_0(b, y);
    case DType::Q4_0: return dequantize_q4_0(b, y);
    case DType::Q4_K: return dequantize_k(b, y, false);
    case DType::Q5_K: return dequantize_k(b, y, true);
    case DType::Q6_K: return dequantize_q6_k(b, y);
    default: return;
  }
}

size_t block_bytes(DType dtype) {
  switch (dtype) {
    case DType::Q8_0: return 34;
    case DType::Q4_0:
    case DType::Q4_0R16: return 18;
    case DType::Q4_K:
    case DType::Q4_KR16: return 144;  // packed.h: 2304 bytes per 16 rows
    case DType::Q5_K: return 176;
    case DType::Q6_K:
    case DType::Q6_KR16: return 210;  // packed.h: 3360 bytes per 16 rows
    case DType::F32: return 4;
    default: return 2;
  }
}

#ifdef OLMOE_X86
#define AVX512 OLMOE_AVX512

// Blocks of 32 as two vectors each (quant-blocks.h) into y.
template <void (*values)(const uint8_t*, __m512&, __m512&), size_t kBytes>
AVX512 void dequantize_blocks_avx512(const uint8_t* w, size_t n, float* y) {
  for (size_t i = 0; i < n; i += 32, w += kBytes) {
    __m512 low, high;
    values(w, low, high);
    _mm512_storeu_ps(y + i, low);
    _mm512_storeu_ps(y + i + 16, high);
  }
}

bool has_avx512() { return cpu().level == Simd::Avx512; }
#endif

}  // namespace

bool is_quantized(DType dtype) { return static_cast<int>(dtype) >= static_cast<int>(DType::Q8_0); }

size_t block_elements(DType dtype) {
  switch (dtype) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_0R16: return 32;
    case DType::Q4_K:
    case DType::Q4_KR16:
    case DType::Q5_K:
    case DType::Q6_K:
    case DType::Q6_KR16: return 256;
    default: return 1;
  }
}

size_t row_bytes(DType dtype, size_t n) { return n / block_elements(dtype) * block_bytes(dtype); }

void dequantize_row(DType dtype, const uint8_t* src, size_t n, float* dst) {
#ifdef OLMOE_X86
  if (dtype == DType::Q8_0 && has_avx512()) return dequantize_blocks_avx512<q8_0_values, 34>(src, n, dst);
  if (dtype == DType::Q4_0 && has_avx512()) return dequantize_blocks_avx512<q4_0_values, 18>(src, n, dst);
#endif
  const size_t elements = block_elements(dtype), bytes = block_bytes(dtype);
  for (size_t i = 0; i < n; i += elements, src += bytes) dequantize_block(dtype, src, dst + i);
}

}  // namespace olmoe
