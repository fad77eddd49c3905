// The x86 kernels of qdot.h on 256-bit vectors, written once over an `Ops` policy that supplies the integer dot
// instructions: qdot-vnni.cc (vpdpbusd / vpdpwssd) and qdot-avx2.cc (vpmaddubsw + vpmaddwd) include this file under
// their own target pragma, each getting its own copy (anonymous namespace).
//   Ops::q4(bias, n, q)   lanes of bias + Σ n·q over four bytes, n unsigned (0..15), q signed
//   Ops::q8(bias, w, q)   lanes of Σ w·q over four bytes, both signed (bias: −128·Σq, Q8Block32)
//   Ops::madd(acc, a, b)  acc + Σ a·b over pairs of int16 lanes
//   Ops::wide_k<N>(…)     true where the level computed a K-quant row itself (qdot-vnni.cc's 512-bit K-quant rows)
// Dimension legend: R weight rows, N tokens handled by one kernel call.
#pragma once
#include <immintrin.h>

#include <cstring>

#include "kquant-codes.h"
#include "q8.h"
#include "qdot.h"
#include "quant.h"

namespace olmoe {
namespace {

inline uint16_t u16(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return bits;
}

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline int hsum_epi32(__m128i v) {
  v = _mm_add_epi32(v, _mm_unpackhi_epi64(v, v));
  v = _mm_add_epi32(v, _mm_shuffle_epi32(v, 0xB1));
  return _mm_cvtsi128_si32(v);
}

// ---------------------------------------------------------------- q4_0 and q8_0 (blocks of 32)

// The 32 nibble codes of a q4_0 block as bytes: its 16 bytes in both halves, the upper half shifted down by 4.
struct Q4_0Weights {
  static constexpr size_t kBytes = 18;
  static constexpr size_t kPrefetchEvery = 64 / kBytes;  // one prefetch per 54 bytes: no cache line skipped
  static __m256i unpack(const uint8_t* block) {
    const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 2)));
    return _mm256_and_si256(_mm256_srlv_epi64(both, _mm256_setr_epi64x(0, 0, 4, 4)), _mm256_set1_epi8(0x0F));
  }
  template <class Ops>
  static __m256i lanes(__m256i codes, const Q8Block32& x) { return Ops::q4(load256(x.bias), codes, load256(x.q)); }
};

struct Q8_0Weights {
  static constexpr size_t kBytes = 34;
  static constexpr size_t kPrefetchEvery = 64 / kBytes;  // every block
  static __m256i unpack(const uint8_t* block) { return load256(block + 2); }
  template <class Ops>
  static __m256i lanes(__m256i codes, const Q8Block32& x) { return Ops::q8(load256(x.bias), codes, load256(x.q)); }
};

// Software prefetch distance in each row stream (bytes): a few hundred nanoseconds of streaming ahead; the hardware
// prefetchers alone ramp up late at each of the many short runs decode reads. Measured with bench/native/q4-bench.cc
// (q4_0, one thread, busy Intel machine, best of 10): DRAM 22 → 27 G weights/s and the decode expert layer 2.3 → 1.9 ms
// with 1536; 512 helped less. A prefetch goes out every W::kPrefetchEvery blocks, so that no cache line goes without
// one (q4_0 every 54 bytes, q8_0 every 34): one every 4 blocks (q8_0 every 136 bytes, half its lines left to the
// hardware) streamed q8_0 from DRAM at 36 GB/s on an AMD EPYC (Zen 5, 2 threads), every block at 56–65 GB/s, and
// took its decode expert layer from 1.5 to 0.8 ms.
constexpr size_t kPrefetchAhead = 1536;

// Every line of a K-quant block kPrefetchAhead bytes on (blocks are 144–210 bytes: all their lines, every block).
inline void prefetch_block(const uint8_t* w, size_t bytes) {
  for (size_t line = 0; line < bytes; line += 64) _mm_prefetch(reinterpret_cast<const char*>(w) + kPrefetchAhead + line, _MM_HINT_T0);
}

// R rows × N tokens over `blocks` blocks: each weight block is unpacked once for the N tokens, each activation block
// loaded once for the R rows. Row pointers come from the caller (R separate streams, see rows32).
template <class Ops, class W, int R, int N>
void kernel32(const uint8_t* const* rows, const Q8Block32* const* x, size_t blocks, const float* halves, float* out, size_t rs, size_t ts) {
  __m256 acc[R][N];
  for (int r = 0; r < R; r++)
    for (int j = 0; j < N; j++) acc[r][j] = _mm256_setzero_ps();
  for (size_t b = 0; b < blocks; b++) {
    __m256i codes[R];
    __m256 dw[R];
    for (int r = 0; r < R; r++) {
      const uint8_t* block = rows[r] + b * W::kBytes;
      if (b % W::kPrefetchEvery == 0) _mm_prefetch(reinterpret_cast<const char*>(block) + kPrefetchAhead, _MM_HINT_T0);
      codes[r] = W::unpack(block);
      dw[r] = _mm256_set1_ps(halves[u16(block)]);
    }
    for (int j = 0; j < N; j++) {
      const __m256 dx = _mm256_set1_ps(x[j][b].d);
      for (int r = 0; r < R; r++) {
        const __m256 partial = _mm256_mul_ps(_mm256_cvtepi32_ps(W::template lanes<Ops>(codes[r], x[j][b])), dx);
        acc[r][j] = _mm256_fmadd_ps(partial, dw[r], acc[r][j]);
      }
    }
  }
  for (int r = 0; r < R; r++)
    for (int j = 0; j < N; j++) out[r * rs + j * ts] = hsum(acc[r][j]);
}

// R rows at a time from R runs of consecutive rows (R sequential streams in separate pages, which the hardware
// prefetchers follow; interleaving adjacent rows within a page they do not), N tokens at a time.
template <class Ops, class W, int R, int N>
void rows32_tokens(const QDotArgs& a, const Q8Block32* const* x, size_t t) {
  const float* halves = half_table();
  const size_t run = a.rows / R, blocks = a.n / 32;
  const uint8_t* rows[R];
  float* out = a.out + t * a.ts;
  for (size_t i = 0; i < run; i++) {
    for (int r = 0; r < R; r++) rows[r] = a.w + (r * run + i) * a.w_stride;
    kernel32<Ops, W, R, N>(rows, x, blocks, halves, out + i * a.rs, run * a.rs, a.ts);
  }
  for (size_t i = R * run; i < a.rows; i++) {
    rows[0] = a.w + i * a.w_stride;
    kernel32<Ops, W, 1, N>(rows, x, blocks, halves, out + i * a.rs, 0, a.ts);
  }
}

template <class Ops, class W>
void rows32(const QDotArgs& a) {
  const Q8Block32* x[4];
  for (size_t t = 0; t < a.tokens;) {
    const size_t n = a.tokens - t >= 4 ? 4 : a.tokens - t;
    for (size_t j = 0; j < n; j++) x[j] = reinterpret_cast<const Q8Block32*>(a.act + (t + j) * a.act_stride);
    switch (n) {
      case 1: rows32_tokens<Ops, W, 4, 1>(a, x, t); break;
      case 2: rows32_tokens<Ops, W, 2, 2>(a, x, t); break;
      case 3: rows32_tokens<Ops, W, 2, 3>(a, x, t); break;
      default: rows32_tokens<Ops, W, 2, 4>(a, x, t); break;
    }
    t += n;
  }
}

// ---------------------------------------------------------------- K-quants (blocks of 256)

// pshufb controls that broadcast 16-bit word `lo` to the lower 128-bit lane and word `hi` to the upper one.
inline __m256i word_broadcast(int lo, int hi) {
  const char a = static_cast<char>(2 * lo), b = static_cast<char>(2 * lo + 1), c = static_cast<char>(2 * hi), d = static_cast<char>(2 * hi + 1);
  return _mm256_setr_epi8(a, b, a, b, a, b, a, b, a, b, a, b, a, b, a, b, c, d, c, d, c, d, c, d, c, d, c, d, c, d, c, d);
}

// Σ_j mins[j] · sums32[j] of one activation block.
inline int mins_dot(const uint8_t* mins, const Q8Block256& x) {
  const __m128i m = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mins)));
  return hsum_epi32(_mm_madd_epi16(m, _mm_loadu_si128(reinterpret_cast<const __m128i*>(x.sums32))));
}

// One q4_k / q5_k row × N tokens.
template <class Ops, bool kFiveBits, int N>
void row_q45_k(const uint8_t* w, const Q8Block256* const* x, size_t blocks, const float* halves, float* out, size_t ts) {
  constexpr size_t kBytes = kFiveBits ? 176 : 144;
  __m256 acc[N];
  float min_total[N];
  for (int j = 0; j < N; j++) acc[j] = _mm256_setzero_ps(), min_total[j] = 0;
  for (size_t b = 0; b < blocks; b++, w += kBytes) {
    prefetch_block(w, kBytes);
    alignas(16) uint8_t scales[8], mins[8];
    scales_mins_k4(w + 4, scales, mins);
    const __m256i scale_words = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales))));
    const uint8_t* qs = w + (kFiveBits ? 48 : 16);
    __m256i high = kFiveBits ? load256(w + 16) : _mm256_setzero_si256();
    __m256i sums[N];
    for (int j = 0; j < N; j++) sums[j] = _mm256_setzero_si256();
    for (int pair = 0; pair < 4; pair++) {  // sub-blocks 2·pair (low nibbles) and 2·pair + 1 (high nibbles)
      __m256i first, second;
      k45_codes<kFiveBits>(qs + 32 * pair, high, first, second);
      const __m256i scale_first = _mm256_shuffle_epi8(scale_words, word_broadcast(2 * pair, 2 * pair));
      const __m256i scale_second = _mm256_shuffle_epi8(scale_words, word_broadcast(2 * pair + 1, 2 * pair + 1));
      for (int j = 0; j < N; j++) {
        const int8_t* q = x[j][b].q + 64 * pair;
        sums[j] = Ops::madd(sums[j], _mm256_maddubs_epi16(first, load256(q)), scale_first);
        sums[j] = Ops::madd(sums[j], _mm256_maddubs_epi16(second, load256(q + 32)), scale_second);
      }
    }
    const float d = halves[u16(w)], dmin = halves[u16(w + 2)];
    for (int j = 0; j < N; j++) {
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[j]), _mm256_set1_ps(d * x[j][b].d), acc[j]);
      min_total[j] += static_cast<float>(mins_dot(mins, x[j][b])) * (dmin * x[j][b].d);
    }
  }
  for (int j = 0; j < N; j++) out[j * ts] = hsum(acc[j]) - min_total[j];
}

// One q6_k row × N tokens. Per half of 128 values, four groups of 32 (v1..v4 below), each with two int8 scales.
template <class Ops, int N>
void row_q6_k(const uint8_t* w, const Q8Block256* const* x, size_t blocks, const float* halves, float* out, size_t ts) {
  __m256 acc[N];
  for (int j = 0; j < N; j++) acc[j] = _mm256_setzero_ps();
  for (size_t b = 0; b < blocks; b++, w += 210) {
    prefetch_block(w, 210);
    const __m256i scale_words = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 192)));  // 16 scales
    __m256i sums[N];
    for (int j = 0; j < N; j++) {  // the −32 of every code: −32 · Σ_g scale_g · Σ q over group g
      const __m256i offsets = _mm256_madd_epi16(scale_words, load256(x[j][b].sums16));
      sums[j] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offsets, 5));
    }
    for (int half = 0; half < 2; half++) {
      __m256i codes[4];
      q6_codes(w, half, codes);
      // this half's eight scales in both 128-bit lanes; group g of 32 uses words 2g (first 16 values), 2g + 1
      const __m256i half_scales = half ? _mm256_permute2x128_si256(scale_words, scale_words, 0x11) : _mm256_permute2x128_si256(scale_words, scale_words, 0x00);
      for (int g = 0; g < 4; g++) {
        const __m256i scale = _mm256_shuffle_epi8(half_scales, word_broadcast(2 * g, 2 * g + 1));
        for (int j = 0; j < N; j++) sums[j] = Ops::madd(sums[j], _mm256_maddubs_epi16(codes[g], load256(x[j][b].q + 128 * half + 32 * g)), scale);
      }
    }
    const float d = halves[u16(w + 208)];
    for (int j = 0; j < N; j++) acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[j]), _mm256_set1_ps(d * x[j][b].d), acc[j]);
  }
  for (int j = 0; j < N; j++) out[j * ts] = hsum(acc[j]);
}

template <class Ops, int N>
void row_k(DType dtype, const uint8_t* w, const Q8Block256* const* x, size_t blocks, const float* halves, float* out, size_t ts) {
  if (Ops::template wide_k<N>(dtype, w, x, blocks, halves, out, ts)) return;
  if (dtype == DType::Q4_K) return row_q45_k<Ops, false, N>(w, x, blocks, halves, out, ts);
  if (dtype == DType::Q5_K) return row_q45_k<Ops, true, N>(w, x, blocks, halves, out, ts);
  return row_q6_k<Ops, N>(w, x, blocks, halves, out, ts);
}

// K-quant rows are taken from four runs of consecutive rows in turn: four sequential streams for the prefetchers
// instead of one (bench/native/q4-bench.cc, 2 threads, from DRAM: q4_k 20.5 → 24.9 GB/s, q5_k 20.4 → 25.5, q6_k
// 21.2 → 27.0; the expert layer over 4 layers of weights 1.23 → 1.05 ms for q4_k, 2.0 → 1.5 ms for q6_k). Each row is
// computed as before.
constexpr size_t kKRuns = 4;

template <class Ops>
void rows_k(const QDotArgs& a) {
  const float* halves = half_table();
  const Q8Block256* x[4];
  for (size_t t = 0; t < a.tokens;) {
    const size_t n = a.tokens - t >= 4 ? 4 : a.tokens - t;
    for (size_t j = 0; j < n; j++) x[j] = reinterpret_cast<const Q8Block256*>(a.act + (t + j) * a.act_stride);
    const size_t runs = a.rows >= kKRuns * 8 ? kKRuns : 1, run = a.rows / runs;
    for (size_t i = 0; i < a.rows; i++) {
      // Rows from `runs` runs in turn (i = 0, 1, … visits run 0's first row, run 1's first row, …; the remainder last)
      const size_t r = i < run * runs ? (i % runs) * run + i / runs : i;
      const uint8_t* w = a.w + r * a.w_stride;
      float* out = a.out + r * a.rs + t * a.ts;
      switch (n) {
        case 1: row_k<Ops, 1>(a.dtype, w, x, a.n / 256, halves, out, a.ts); break;
        case 2: row_k<Ops, 2>(a.dtype, w, x, a.n / 256, halves, out, a.ts); break;
        case 3: row_k<Ops, 3>(a.dtype, w, x, a.n / 256, halves, out, a.ts); break;
        default: row_k<Ops, 4>(a.dtype, w, x, a.n / 256, halves, out, a.ts); break;
      }
    }
    t += n;
  }
}

template <class Ops>
void qdot_rows_x86(const QDotArgs& a) {
  switch (a.dtype) {
    case DType::Q4_0: return rows32<Ops, Q4_0Weights>(a);
    case DType::Q8_0: return rows32<Ops, Q8_0Weights>(a);
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K: return rows_k<Ops>(a);
    default: return;
  }
}

}  // namespace
}  // namespace olmoe
