#include "quant.h"

#include "half.h"

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

const float* half_table() {
  static const HalfTable table;
  return table.values;
}

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
    case DType::Q4_0: return 18;
    case DType::Q4_K: return 144;
    case DType::Q5_K: return 176;
    case DType::Q6_K: return 210;
    case DType::F32: return 4;
    default: return 2;
  }
}

#ifdef OLMOE_X86
#define AVX512 OLMOE_AVX512

AVX512 inline void q8_0_block(const float* x, const uint8_t* w, __m512& low_sum, __m512& high_sum) {
  __m512 low, high;
  q8_0_values(w, low, high);
  low_sum = _mm512_fmadd_ps(low, _mm512_loadu_ps(x), low_sum);
  high_sum = _mm512_fmadd_ps(high, _mm512_loadu_ps(x + 16), high_sum);
}

AVX512 float dot_q8_0_avx512(const float* x, const uint8_t* w, size_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 64 <= n; i += 64, w += 68) {
    q8_0_block(x + i, w, acc0, acc1);
    q8_0_block(x + i + 32, w + 34, acc2, acc3);
  }
  if (i < n) q8_0_block(x + i, w, acc0, acc1);
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

AVX512 inline void q4_0_block(const float* x, const uint8_t* w, __m512& low_sum, __m512& high_sum) {
  __m512 low, high;
  q4_0_values(w, low, high);
  low_sum = _mm512_fmadd_ps(low, _mm512_loadu_ps(x), low_sum);
  high_sum = _mm512_fmadd_ps(high, _mm512_loadu_ps(x + 16), high_sum);
}

// Two blocks per iteration into four accumulators: independent chains keep the shuffle and FMA units busy.
AVX512 float dot_q4_0_avx512(const float* x, const uint8_t* w, size_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 64 <= n; i += 64, w += 36) {
    q4_0_block(x + i, w, acc0, acc1);
    q4_0_block(x + i + 32, w + 18, acc2, acc3);
  }
  if (i < n) q4_0_block(x + i, w, acc0, acc1);
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

// The four horizontal sums of a, b, c, d in one vector (fewer shuffles than four separate reductions).
AVX512 inline __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
  const __m512 abcd = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, 0x44), _mm512_shuffle_ps(ab, cd, 0xEE));
  const __m256 half = _mm256_add_ps(_mm512_castps512_ps256(abcd), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(abcd), 1)));
  return _mm_add_ps(_mm256_castps256_ps128(half), _mm256_extractf128_ps(half, 1));
}

// x · four q4_0 rows at w, w + apart, w + 2·apart, w + 3·apart (bytes) into out[0..3]. x is loaded once per block
// for the four rows, which give eight independent accumulator chains, and the per-block work is lean (it is bound
// by the shuffle ports): the f16 scale comes from the 65536-entry table as the broadcast memory operand of the table
// multiply (no convert, no register broadcast), the 16 nibble bytes are widened once (vpmovzxbd) and the high
// nibbles reach the index bits with one shift (vpermps reads bits 0–3 only). Per row the products are those of
// dot_q4_0_avx512, x · ((q − 8)·d), summed in another order.
AVX512 void dot4_q4_0_avx512(const float* x, const uint8_t* w, size_t apart, size_t n, float* out) {
  const float* halves = half_table();
  const __m512 offsets = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
  __m512 acc[4][2];
  for (auto& row : acc) row[0] = row[1] = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 32, w += 18) {
    const __m512 low = _mm512_loadu_ps(x + i), high = _mm512_loadu_ps(x + i + 16);
    for (int r = 0; r < 4; r++) {
      const uint8_t* block = w + r * apart;
      const __m512 table = _mm512_mul_ps(offsets, _mm512_set1_ps(halves[u16_at(block)]));
      const __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2)));
      acc[r][0] = _mm512_fmadd_ps(_mm512_permutexvar_ps(q, table), low, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(_mm512_permutexvar_ps(_mm512_srli_epi32(q, 4), table), high, acc[r][1]);
    }
  }
  _mm_storeu_ps(out, sum4(_mm512_add_ps(acc[0][0], acc[0][1]), _mm512_add_ps(acc[1][0], acc[1][1]), _mm512_add_ps(acc[2][0], acc[2][1]),
                          _mm512_add_ps(acc[3][0], acc[3][1])));
}

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

bool has_avx512() {
  static const bool yes = [] {
    __builtin_cpu_init();
    const char* forced = std::getenv("OLMOE_SIMD");
    bool allowed = !forced || std::strcmp(forced, "avx512") == 0 || forced[0] == '\0';
    return allowed && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  }();
  return yes;
}
#endif

}  // namespace

bool is_quantized(DType dtype) { return static_cast<int>(dtype) >= static_cast<int>(DType::Q8_0); }

size_t block_elements(DType dtype) {
  switch (dtype) {
    case DType::Q8_0:
    case DType::Q4_0: return 32;
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K: return 256;
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

void dot_rows_quantized(const float* x, const uint8_t* w, size_t stride, DType dtype, size_t n, size_t rows, float* out, size_t out_stride,
                        float (*dot)(const float*, const float*, size_t)) {
  size_t r = 0;
#ifdef OLMOE_X86
  if (dtype == DType::Q4_0 && has_avx512()) {
    // Four runs of `run` consecutive rows, one row of each per kernel call: four sequential streams in separate
    // pages, which the hardware prefetchers follow (four adjacent rows interleaved within a page they do not).
    const size_t run = rows / 4;
    alignas(16) float four[4];
    for (size_t i = 0; i < run; i++) {
      dot4_q4_0_avx512(x, w + i * stride, run * stride, n, four);
      for (int k = 0; k < 4; k++) out[(i + k * run) * out_stride] = four[k];
    }
    r = 4 * run;
  }
#endif
  for (; r < rows; r++) out[r * out_stride] = dot_quantized(x, w + r * stride, dtype, n, dot);
}

float dot_quantized(const float* x, const uint8_t* w, DType dtype, size_t n, float (*dot)(const float*, const float*, size_t)) {
#ifdef OLMOE_X86
  if (dtype == DType::Q8_0 && has_avx512()) return dot_q8_0_avx512(x, w, n);
  if (dtype == DType::Q4_0 && has_avx512()) return dot_q4_0_avx512(x, w, n);
#endif
  const size_t elements = block_elements(dtype), bytes = block_bytes(dtype);
  alignas(64) float block[256];
  float sum = 0;
  for (size_t i = 0; i < n; i += elements, w += bytes) {
    dequantize_block(dtype, w, block);
    sum += dot(x + i, block, elements);
  }
  return sum;
}

}  // namespace olmoe
