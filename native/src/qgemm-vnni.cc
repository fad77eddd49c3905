// qgemm.h on AVX-512 VNNI with 512-bit vectors, q4_0 and q8_0. One vector holds block b of two weight rows (lanes
// 0..7: row r, 8..15: row r + 1) against block b of one token broadcast to both halves, so every activation
// operand is a plain broadcast load (the q8 codes, the bias lanes of Q8Block32 as vpdpbusd's start value, d_x) and
// a tile of P row pairs × N tokens costs per block: one vpdpbusd, one int→float conversion, one multiply of the
// two scales and one FMA per (pair, token), i.e. 64 multiply-adds in four vector operations, against 16 per FMA on
// dequantized floats. Weight codes are unpacked once per (pair, block) for the N tokens.
// Per block, q4_0: d_w·d_x·(Σ n·q − 8·Σq), q8_0: d_w·d_x·(Σ (w + 128)·q − 128·Σq), as qdot.h.
// Dimension legend: P row pairs and N tokens per tile.
#include "qgemm.h"

#include "packed.h"

#include "quant.h"
#include "simd.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "q8.h"
#include "quant.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#endif

namespace olmoe {
namespace {

inline uint16_t u16(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return bits;
}

inline __m512i broadcast256(const void* p) { return _mm512_broadcast_i64x4(_mm256_loadu_si256(static_cast<const __m256i*>(p))); }

// The 32 nibble codes of q4_0 blocks a and b as unsigned bytes: a's low nibbles, a's high, b's low, b's high.
struct Q4_0Pair {
  static constexpr size_t kBytes = 18;
  static __m512i codes(const uint8_t* a, const uint8_t* b) {
    const __m256i both = _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + 2)), _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + 2)));
    const __m512i doubled = _mm512_permutexvar_epi64(_mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3), _mm512_castsi256_si512(both));
    return _mm512_and_si512(_mm512_srlv_epi64(doubled, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)), _mm512_set1_epi8(0x0F));
  }
};

// q8_0 codes w as w ^ 0x80 = w + 128 (unsigned for vpdpbusd; the bias lanes hold −128·Σq).
struct Q8_0Pair {
  static constexpr size_t kBytes = 34;
  static __m512i codes(const uint8_t* a, const uint8_t* b) {
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + 2))),
                                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + 2)), 1);
    return _mm512_xor_si512(both, _mm512_set1_epi8(static_cast<char>(0x80)));
  }
};

inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// rows[2p], rows[2p + 1] for p < P against tokens x[0..N) over `blocks` blocks; out[i][j] at out[i·rs + j·ts] for
// the 2P rows (`valid` of them are written: the last pair may repeat a row to fill the tile).
template <class W, int P, int N>
void tile(const uint8_t* const* rows, const Q8Block32* const* x, size_t blocks, const float* halves, float* out, size_t rs, size_t ts, int valid) {
  __m512 acc[P][N];
  for (int p = 0; p < P; p++)
    for (int j = 0; j < N; j++) acc[p][j] = _mm512_setzero_ps();
  for (size_t b = 0; b < blocks; b++) {
    __m512i codes[P];
    __m512 dw[P];
    for (int p = 0; p < P; p++) {
      const uint8_t* first = rows[2 * p] + b * W::kBytes;
      const uint8_t* second = rows[2 * p + 1] + b * W::kBytes;
      codes[p] = W::codes(first, second);
      dw[p] = _mm512_insertf32x8(_mm512_set1_ps(halves[u16(first)]), _mm256_set1_ps(halves[u16(second)]), 1);
    }
    for (int j = 0; j < N; j++) {
      const Q8Block32& xb = x[j][b];
      const __m512i q = broadcast256(xb.q), bias = broadcast256(xb.bias);
      const __m512 dx = _mm512_set1_ps(xb.d);
      for (int p = 0; p < P; p++) {
        const __m512 dot = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(bias, codes[p], q));
        acc[p][j] = _mm512_fmadd_ps(dot, _mm512_mul_ps(dw[p], dx), acc[p][j]);
      }
    }
  }
  for (int p = 0; p < P; p++)
    for (int j = 0; j < N; j++) {
      if (2 * p < valid) out[2 * p * rs + j * ts] = hsum256(_mm512_castps512_ps256(acc[p][j]));
      if (2 * p + 1 < valid) out[(2 * p + 1) * rs + j * ts] = hsum256(_mm512_extractf32x8_ps(acc[p][j], 1));
    }
}

constexpr int kPairs = 3;  // rows per tile: 2·kPairs
constexpr int kTokens = 6;  // 18 accumulators. On an Intel Xeon 4 × 4, 3 × 6 and 2 × 8 measured the same
// (bench/native/prefill-bench.cc); on an AMD EPYC (Zen 5) 3 × 6 prefilled Q4_0 2-5 % faster than 4 × 4 and 2 × 8
// (256-token prompt, alternating addons), its weight unpacking shared by six tokens.

// Rows [0, a.rows) in tiles of 2P rows for N tokens starting at x; the last tile's pairs repeat its last row.
template <class W, int N>
void rows_for_tokens(const QDotArgs& a, const Q8Block32* const* x, float* out) {
  const float* halves = half_table();
  const size_t blocks = a.n / 32;
  const uint8_t* rows[2 * kPairs];
  for (size_t r = 0; r < a.rows; r += 2 * kPairs) {
    const int valid = static_cast<int>(a.rows - r < 2 * kPairs ? a.rows - r : 2 * kPairs);
    for (int i = 0; i < 2 * kPairs; i++) rows[i] = a.w + (r + (i < valid ? i : valid - 1)) * a.w_stride;
    float* o = out + r * a.rs;
    switch ((valid + 1) / 2) {
      case 1: tile<W, 1, N>(rows, x, blocks, halves, o, a.rs, a.ts, valid); break;
      case 2: tile<W, 2, N>(rows, x, blocks, halves, o, a.rs, a.ts, valid); break;
      default: tile<W, kPairs, N>(rows, x, blocks, halves, o, a.rs, a.ts, valid); break;
    }
  }
}

template <class W>
void gemm32(const QDotArgs& a) {
  const Q8Block32* x[kTokens];
  for (size_t t = 0; t < a.tokens;) {
    const size_t n = a.tokens - t >= kTokens ? kTokens : a.tokens - t;
    for (size_t j = 0; j < n; j++) x[j] = reinterpret_cast<const Q8Block32*>(a.act + (t + j) * a.act_stride);
    float* out = a.out + t * a.ts;
    switch (n) {
      case 1: rows_for_tokens<W, 1>(a, x, out); break;
      case 2: rows_for_tokens<W, 2>(a, x, out); break;
      case 3: rows_for_tokens<W, 3>(a, x, out); break;
      case 4: rows_for_tokens<W, 4>(a, x, out); break;
      case 5: rows_for_tokens<W, 5>(a, x, out); break;
      default: rows_for_tokens<W, kTokens>(a, x, out); break;
    }
    t += n;
  }
}

// ---------------------------------------------------------------- q8_0 in groups of 16 rows
// Above, every vpdpbusd (two rows' halves of a block × one token) is followed by a conversion, a multiply of the
// scales and an FMA. Here 16 rows of the file's q8_0 are first laid out as the packed decode types are (packed.h:
// lane r of a vector is row r), in a buffer of the worker's: per block the 16 rows' scales (f32), then 8 vectors whose
// 32-bit lane r holds bytes 4s..4s+3 of row r's codes, as w ^ 0x80. Per block and token, 8 vpdpbusd then finish the
// block for all 16 rows, and the float work is one conversion, one multiply and one FMA. The layout is built once per
// group and read by every token of the call (prefill's 512, an expert's routed few dozen) while it stays in L1/L2.
constexpr size_t kQ8GroupBlock = 64 + 8 * 64;
constexpr size_t kQ8Groups = 2;       // groups per tile: each activation broadcast serves both
constexpr int kQ8GroupTokens = 4;      // tokens per tile: 2 × 4 int32 sums and 2 × 4 float sums in registers
constexpr size_t kQ8GroupMinTokens = 16;  // below, the pair tiles above (the layout's cost is per group, not per token)

// Rows [0, 16) of w (q8_0, `stride` bytes apart) over `blocks` blocks into the group layout at out (64-byte aligned).
void layout_q8_0_group(const uint8_t* w, size_t stride, size_t blocks, const float* halves, uint8_t* out) {
  const TransposeDwords transpose = transpose_dwords();
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (size_t b = 0; b < blocks; b++, out += kQ8GroupBlock) {
    const uint8_t* block = w + 34 * b;
    float* scales = reinterpret_cast<float*>(out);
    for (size_t r = 0; r < 16; r++) scales[r] = halves[u16(block + r * stride)];
    transpose(block + 2, stride, out + 64);
    transpose(block + 18, stride, out + 64 + 256);
    for (size_t s = 0; s < 8; s++) _mm512_store_si512(out + 64 + 64 * s, _mm512_xor_si512(_mm512_load_si512(out + 64 + 64 * s), flip));
  }
}

// G groups (laid out, `group_bytes` apart) × tokens x[0..N) over `blocks` blocks: out[(16g + r)·rs + j·ts].
template <int G, int N>
void q8_0_group_tile(const uint8_t* groups, size_t group_bytes, const Q8Block32* const* x, size_t blocks, float* out, size_t rs, size_t ts) {
  __m512 acc[G][N];
  for (int g = 0; g < G; g++)
    for (int j = 0; j < N; j++) acc[g][j] = _mm512_setzero_ps();
  for (size_t b = 0; b < blocks; b++) {
    __m512i sum[G][N];
    for (int j = 0; j < N; j++) {
      const __m512i start = _mm512_set1_epi32(-128 * x[j][b].sum);  // Σ (w + 128)·q − 128·Σq
      for (int g = 0; g < G; g++) sum[g][j] = start;
    }
    const uint8_t* block = groups + b * kQ8GroupBlock;
    for (int s = 0; s < 8; s++) {
      __m512i codes[G];
      for (int g = 0; g < G; g++) codes[g] = _mm512_load_si512(block + g * group_bytes + 64 + 64 * s);
      for (int j = 0; j < N; j++) {
        int32_t q4;
        std::memcpy(&q4, x[j][b].q + 4 * s, 4);
        const __m512i q = _mm512_set1_epi32(q4);
        for (int g = 0; g < G; g++) sum[g][j] = _mm512_dpbusd_epi32(sum[g][j], codes[g], q);
      }
    }
    for (int g = 0; g < G; g++) {
      const __m512 dw = _mm512_load_ps(reinterpret_cast<const float*>(block + g * group_bytes));
      for (int j = 0; j < N; j++) acc[g][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[g][j]), _mm512_mul_ps(dw, _mm512_set1_ps(x[j][b].d)), acc[g][j]);
    }
  }
  for (int g = 0; g < G; g++)
    for (int j = 0; j < N; j++) {
      alignas(64) float lanes[16];
      _mm512_store_ps(lanes, acc[g][j]);
      for (int r = 0; r < 16; r++) out[(16 * g + r) * rs + j * ts] = lanes[r];
    }
}

template <int G>
void q8_0_group_tokens(const QDotArgs& a, const uint8_t* groups, size_t group_bytes, float* out) {
  const size_t blocks = a.n / 32;
  const Q8Block32* x[kQ8GroupTokens];
  size_t t = 0;
  auto point = [&](size_t count) {
    for (size_t j = 0; j < count; j++) x[j] = reinterpret_cast<const Q8Block32*>(a.act + (t + j) * a.act_stride);
  };
  for (; t + kQ8GroupTokens <= a.tokens; t += kQ8GroupTokens) point(kQ8GroupTokens), q8_0_group_tile<G, kQ8GroupTokens>(groups, group_bytes, x, blocks, out + t * a.ts, a.rs, a.ts);
  point(a.tokens - t);
  switch (a.tokens - t) {
    case 3: q8_0_group_tile<G, 3>(groups, group_bytes, x, blocks, out + t * a.ts, a.rs, a.ts); break;
    case 2: q8_0_group_tile<G, 2>(groups, group_bytes, x, blocks, out + t * a.ts, a.rs, a.ts); break;
    case 1: q8_0_group_tile<G, 1>(groups, group_bytes, x, blocks, out + t * a.ts, a.rs, a.ts); break;
    default: break;
  }
}

// Rows in groups of 16, kQ8Groups at a time, each laid out once for all the call's tokens; the rows past the last
// whole group by the pair tiles.
void gemm_q8_0_groups(const QDotArgs& a) {
  const size_t blocks = a.n / 32, group_bytes = blocks * kQ8GroupBlock, groups = a.rows / 16;
  thread_local std::vector<uint8_t> buffer;
  if (buffer.size() < kQ8Groups * group_bytes + 64) buffer.resize(kQ8Groups * group_bytes + 64);
  uint8_t* laid = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(buffer.data()) + 63) & ~uintptr_t{63});
  const float* halves = half_table();
  for (size_t g0 = 0; g0 < groups; g0 += kQ8Groups) {
    const size_t count = groups - g0 < kQ8Groups ? groups - g0 : kQ8Groups;
    for (size_t g = 0; g < count; g++) layout_q8_0_group(a.w + 16 * (g0 + g) * a.w_stride, a.w_stride, blocks, halves, laid + g * group_bytes);
    float* out = a.out + 16 * g0 * a.rs;
    if (count == kQ8Groups) q8_0_group_tokens<kQ8Groups>(a, laid, group_bytes, out);
    else q8_0_group_tokens<1>(a, laid, group_bytes, out);
  }
  if (a.rows % 16 != 0) {
    QDotArgs rest = a;
    rest.w = a.w + 16 * groups * a.w_stride, rest.rows = a.rows % 16, rest.out = a.out + 16 * groups * a.rs;
    gemm32<Q8_0Pair>(rest);
  }
}

}  // namespace

void qgemm_rows_vnni(const QDotArgs& a) {
  if (a.dtype == DType::Q4_0) return gemm32<Q4_0Pair>(a);
  if (a.dtype == DType::Q8_0 && a.tokens >= kQ8GroupMinTokens && a.rows >= 16) return gemm_q8_0_groups(a);
  if (a.dtype == DType::Q8_0) return gemm32<Q8_0Pair>(a);
  qdot_rows_vnni(a);
}

}  // namespace olmoe

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else
namespace olmoe {
void qgemm_rows_vnni(const QDotArgs& a) { qdot_rows_scalar(a); }
}  // namespace olmoe
#endif

namespace olmoe {

bool integer_gemm(DType dtype) { return is_quantized(dtype) && cpu().level != Simd::Scalar; }

namespace {

bool vnni_tiles(DType dtype) {
  const CpuFeatures& features = cpu();
  return features.level == Simd::Avx512 && features.vnni && (dtype == DType::Q4_0 || dtype == DType::Q8_0);
}

bool amx_tiles() { return cpu().level == Simd::Avx512 && qgemm_amx_available(); }

}  // namespace

const char* qgemm_kernel(DType dtype) {
  if (!integer_gemm(dtype)) return "float-tiles";
  if (amx_tiles()) return "amx-int8";
  if (packed_type(dtype) != dtype || is_packed(dtype)) return cpu().vnni && cpu().level == Simd::Avx512 ? "avx512-vnni-16rows" : "avx2-16rows";
  if (dtype == DType::Q8_0 && vnni_tiles(dtype)) return "avx512-vnni-16rows";  // laid out per call (gemm_q8_0_groups)
  return vnni_tiles(dtype) ? "avx512-vnni" : "integer-dot";
}

void qgemm_rows(const QDotArgs& a) {
  if (is_packed(a.dtype)) return qgemm_rows_r16(a);
#if defined(__x86_64__)
  // (the AMX packing gathers token rows with 32-bit offsets: 16 rows of act_stride bytes must fit)
  if (a.tokens >= kAmxMinTokens && a.act_stride < (size_t{1} << 26) && amx_tiles()) return qgemm_rows_amx(a);
  if (a.tokens >= kGemmMinTokens && vnni_tiles(a.dtype)) return qgemm_rows_vnni(a);
#endif
  qdot_rows(a);
}

}  // namespace olmoe
