// The dispatch of qdot_rows and its scalar level: per block, the integer sums of qdot.h, then the float scales.
#include "qdot.h"

#include <cstring>

#include "packed.h"
#include "q8.h"
#include "quant.h"
#include "simd.h"

namespace olmoe {

namespace {

inline float f16_at(const float* halves, const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return halves[bits];
}

float q4_0_row(const uint8_t* w, const Q8Block32* x, size_t blocks, const float* halves) {
  float sum = 0;
  for (size_t b = 0; b < blocks; b++, w += 18) {
    int dot = 0;
    for (int j = 0; j < 16; j++) dot += (w[2 + j] & 0xF) * x[b].q[j] + (w[2 + j] >> 4) * x[b].q[j + 16];
    sum += static_cast<float>(dot - 8 * x[b].sum) * (f16_at(halves, w) * x[b].d);
  }
  return sum;
}

float q8_0_row(const uint8_t* w, const Q8Block32* x, size_t blocks, const float* halves) {
  float sum = 0;
  for (size_t b = 0; b < blocks; b++, w += 34) {
    int dot = 0;
    for (int j = 0; j < 32; j++) dot += static_cast<int8_t>(w[2 + j]) * x[b].q[j];
    sum += static_cast<float>(dot) * (f16_at(halves, w) * x[b].d);
  }
  return sum;
}

// q4_k / q5_k: the 6-bit scale and min of sub-block j (the layout of src/core/quant.ts).
void scale_min(const uint8_t* q, int j, int& scale, int& min) {
  if (j < 4) {
    scale = q[j] & 63, min = q[j + 4] & 63;
  } else {
    scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

template <bool kFiveBits>
float q45_k_row(const uint8_t* w, const Q8Block256* x, size_t blocks, const float* halves) {
  constexpr size_t kBytes = kFiveBits ? 176 : 144;
  float sum = 0;
  for (size_t b = 0; b < blocks; b++, w += kBytes) {
    const uint8_t* qh = w + 16;
    const uint8_t* qs = w + (kFiveBits ? 48 : 16);
    int dots = 0, mins = 0;
    for (int j = 0; j < 8; j++) {
      int scale, min;
      scale_min(w + 4, j, scale, min);
      const int shift = j % 2 ? 4 : 0;  // sub-block j: nibbles of qs[32·(j/2) + l], low for even j, high for odd
      int dot = 0;
      for (int l = 0; l < 32; l++) {
        const int high = kFiveBits && (qh[l] >> j & 1) ? 16 : 0;
        dot += (((qs[32 * (j / 2) + l] >> shift) & 0xF) + high) * x[b].q[32 * j + l];
      }
      dots += scale * dot;
      mins += min * x[b].sums32[j];
    }
    const float dx = x[b].d;
    sum += static_cast<float>(dots) * (f16_at(halves, w) * dx) - static_cast<float>(mins) * (f16_at(halves, w + 2) * dx);
  }
  return sum;
}

float q6_k_row(const uint8_t* w, const Q8Block256* x, size_t blocks, const float* halves) {
  float sum = 0;
  for (size_t b = 0; b < blocks; b++, w += 210) {
    const auto* scales = reinterpret_cast<const int8_t*>(w + 192);
    int dots = 0;
    for (int i = 0; i < 256; i += 16) {
      // value i + l: 4 low bits from ql, 2 high bits from qh (the layout of src/core/quant.ts)
      const int half = i / 128, quarter = (i % 128) / 32;
      int dot = 0;
      for (int l = i % 32; l < i % 32 + 16; l++) {
        const uint8_t low = w[64 * half + l + 32 * (quarter % 2)], high = w[128 + 32 * half + l];
        const int v = ((quarter < 2 ? low & 0xF : low >> 4) | (((high >> (2 * quarter)) & 3) << 4)) - 32;
        dot += v * x[b].q[i + l - i % 32];
      }
      dots += scales[i / 16] * dot;
    }
    sum += static_cast<float>(dots) * (f16_at(halves, w + 208) * x[b].d);
  }
  return sum;
}

}  // namespace

void qdot_rows_scalar(const QDotArgs& a) {
  const float* halves = half_table();
  for (size_t r = 0; r < a.rows; r++) {
    const uint8_t* w = a.w + r * a.w_stride;
    for (size_t t = 0; t < a.tokens; t++) {
      const uint8_t* x = a.act + t * a.act_stride;
      const auto* x32 = reinterpret_cast<const Q8Block32*>(x);
      const auto* x256 = reinterpret_cast<const Q8Block256*>(x);
      float& out = a.out[r * a.rs + t * a.ts];
      switch (a.dtype) {
        case DType::Q4_0: out = q4_0_row(w, x32, a.n / 32, halves); break;
        case DType::Q8_0: out = q8_0_row(w, x32, a.n / 32, halves); break;
        case DType::Q4_K: out = q45_k_row<false>(w, x256, a.n / 256, halves); break;
        case DType::Q5_K: out = q45_k_row<true>(w, x256, a.n / 256, halves); break;
        case DType::Q6_K: out = q6_k_row(w, x256, a.n / 256, halves); break;
        default: break;
      }
    }
  }
}

void qdot_prefetch(DType dtype, const uint8_t* w, size_t w_stride, size_t rows) {
  // q4_0 / q8_0 single-token reads four runs of rows (qdot-x86.h rows32_tokens), the packed types decode_streams runs
  // of 16-row groups (packed.h), the K-quants one run.
  const bool packed = is_packed(dtype);
  const size_t streams = packed ? decode_streams(dtype) : dtype == DType::Q4_0 || dtype == DType::Q8_0 ? 4 : 1;
  const size_t run = packed ? rows / 16 / streams * 16 : rows / streams;
  for (size_t s = 0; s < streams; s++)
    for (size_t line = 0; line < 4; line++) __builtin_prefetch(w + s * run * w_stride + 64 * line, 0, 3);
}

void qdot_rows(const QDotArgs& a) {
  if (is_packed(a.dtype)) return qgemm_rows_r16(a);
#if defined(__x86_64__)
  const CpuFeatures& features = cpu();
  if (features.level == Simd::Avx512 && features.vnni) return qdot_rows_vnni(a);
  if (features.level != Simd::Scalar) return qdot_rows_avx2(a);
#endif
  qdot_rows_scalar(a);
}

}  // namespace olmoe
