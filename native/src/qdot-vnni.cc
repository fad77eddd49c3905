// qdot.h with AVX-512 VNNI on 256-bit vectors: vpdpbusd (u8 × s8, four products summed into each int32 lane, no
// saturation) and vpdpwssd (int16 pairs). q4_0 codes n enter as unsigned with the activation's bias −8·Σq as the
// accumulator's start; q8_0 codes w as w ^ 0x80 = w + 128 with bias −128·Σq (Q8Block32). 256-bit vectors keep the
// third vector port in use (512-bit operations fuse ports 0 and 1) and the per-block scale work narrow.
#include "qdot.h"
#include "q8.h"
#include "simd.h"

#if defined(__x86_64__)
#include <immintrin.h>

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#endif

namespace olmoe {
namespace {

struct VnniOps {
  static __m256i q4(__m256i bias, __m256i n, __m256i q) { return _mm256_dpbusd_epi32(bias, n, q); }
  static __m256i q8(__m256i bias, __m256i w, __m256i q) { return _mm256_dpbusd_epi32(bias, _mm256_xor_si256(w, _mm256_set1_epi8(static_cast<char>(0x80))), q); }
  static __m256i madd(__m256i acc, __m256i a, __m256i b) { return _mm256_dpwssd_epi32(acc, a, b); }
  template <int N>
  static bool wide_k(DType dtype, const uint8_t* w, const Q8Block256* const* x, size_t blocks, const float* halves, float* out, size_t ts);
};

}  // namespace
}  // namespace olmoe

#include "qdot-x86.h"

namespace olmoe {
namespace {

// The 256-bit kernels' eight integer lanes from a 512-bit sum: lane i of the lower half plus lane i of the upper one
// holds exactly what row_q45_k / row_q6_k's lane i holds (the same bytes 4i..4i+3 of every sub-block or group), so the
// float work that follows, and with it every result, is bit for bit the 256-bit kernels' (the conformance tests'
// tolerance for rounding steps of the hidden activations was set on those).
inline __m256i fold(__m512i sums) { return _mm256_add_epi32(_mm512_castsi512_si256(sums), _mm512_extracti64x4_epi64(sums, 1)); }

// One q4_k / q5_k row × N tokens on 512-bit vectors: each pair of sub-blocks (2p: low nibbles of 32 code bytes,
// 2p + 1: their high nibbles) fills one vector, laid out as the activation's 64 values of those sub-blocks, so one
// vpmaddubsw and one vpdpwssd (with sub-block 2p's scale in the lower half, 2p + 1's in the upper) take 64 codes per
// token: half the instructions of the 256-bit row_q45_k, the same results (fold).
template <bool kFiveBits, int N>
void row_q45_k_wide(const uint8_t* w, const Q8Block256* const* x, size_t blocks, const float* halves, float* out, size_t ts) {
  constexpr size_t kBytes = kFiveBits ? 176 : 144;
  const __m512i low = _mm512_set1_epi8(0x0F), halves_shift = _mm512_setr_epi64(0, 0, 0, 0, 4, 4, 4, 4);
  __m256 acc[N];
  float min_total[N];
  for (int j = 0; j < N; j++) acc[j] = _mm256_setzero_ps(), min_total[j] = 0;
  for (size_t b = 0; b < blocks; b++, w += kBytes) {
    prefetch_block(w, kBytes);
    alignas(16) uint8_t scales[8], mins[8];
    scales_mins_k4(w + 4, scales, mins);
    const __m512i scale_words = _mm512_castsi128_si512(_mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales))));
    const uint8_t* qs = w + (kFiveBits ? 48 : 16);
    const __m512i high = kFiveBits ? _mm512_broadcast_i64x4(load256(w + 16)) : _mm512_setzero_si512();
    __m512i sums[N];
    for (int j = 0; j < N; j++) sums[j] = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int pair = 0; pair < 4; pair++) {
      const __m512i packed = _mm512_broadcast_i64x4(load256(qs + 32 * pair));
      __m512i codes = _mm512_and_si512(_mm512_srlv_epi64(packed, halves_shift), low);
      if (kFiveBits) {  // fifth bits: bit 2·pair of qh[l] (lower half), bit 2·pair + 1 (upper half)
        const __m512i shift = _mm512_add_epi64(_mm512_set1_epi64(2 * pair), _mm512_setr_epi64(0, 0, 0, 0, 1, 1, 1, 1));
        codes = _mm512_or_si512(codes, _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(high, shift), _mm512_set1_epi8(1)), 4));
      }
      const __m512i pick = _mm512_add_epi16(_mm512_set1_epi16(static_cast<short>(2 * pair)),
                                            _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(1), 1));
      const __m512i scale = _mm512_permutexvar_epi16(pick, scale_words);
#pragma GCC unroll 4
      for (int j = 0; j < N; j++) {
        const __m512i q = _mm512_loadu_si512(x[j][b].q + 64 * pair);
        sums[j] = _mm512_dpwssd_epi32(sums[j], _mm512_maddubs_epi16(codes, q), scale);
      }
    }
    const float d = halves[u16(w)], dmin = halves[u16(w + 2)];
    for (int j = 0; j < N; j++) {
      acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(fold(sums[j])), _mm256_set1_ps(d * x[j][b].d), acc[j]);
      min_total[j] += static_cast<float>(mins_dot(mins, x[j][b])) * (dmin * x[j][b].d);
    }
  }
  for (int j = 0; j < N; j++) out[j * ts] = hsum(acc[j]) - min_total[j];
}

// One q6_k row × N tokens on 512-bit vectors: per half of 128 values, its 64 ql bytes give groups 0 and 1 (low
// nibbles: lower and upper 32 bytes) and groups 2 and 3 (high nibbles), each pair one vector laid out as the
// activation's 64 values; the two high bits come from the half's 32 qh bytes in both halves of a vector, shifted per
// group. Each 128-bit lane (16 values) takes its own int8 scale in vpdpwssd.
template <int N>
void row_q6_k_wide(const uint8_t* w, const Q8Block256* const* x, size_t blocks, const float* halves, float* out, size_t ts) {
  const __m512i low = _mm512_set1_epi8(0x0F), two = _mm512_set1_epi8(0x03);
  const __m512i first_shifts = _mm512_setr_epi64(0, 0, 0, 0, 2, 2, 2, 2), second_shifts = _mm512_setr_epi64(4, 4, 4, 4, 6, 6, 6, 6);
  // 128-bit lane k of a vector of codes takes scale k (+ the half's and the vector's first): word k in lane k
  const __m512i lane = _mm512_setr_epi64(0, 0, 0x0001000100010001, 0x0001000100010001, 0x0002000200020002, 0x0002000200020002,
                                         0x0003000300030003, 0x0003000300030003);
  __m256 acc[N];
  for (int j = 0; j < N; j++) acc[j] = _mm256_setzero_ps();
  for (size_t b = 0; b < blocks; b++, w += 210) {
    prefetch_block(w, 210);
    const __m256i scale_words = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 192)));  // 16 scales
    const __m512i scales512 = _mm512_zextsi256_si512(scale_words);
    __m512i sums[N];
    for (int j = 0; j < N; j++) {  // the −32 of every code: −32 · Σ_g scale_g · Σ q over group g
      const __m256i offsets = _mm256_madd_epi16(scale_words, load256(x[j][b].sums16));
      sums[j] = _mm512_zextsi256_si512(_mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offsets, 5)));
    }
#pragma GCC unroll 2
    for (int half = 0; half < 2; half++) {
      const __m512i ql = _mm512_loadu_si512(w + 64 * half);
      const __m512i qh = _mm512_broadcast_i64x4(load256(w + 128 + 32 * half));
      // groups 0 | 1 (low nibbles of ql's two 32-byte halves, qh bits 0-1 | 2-3) and 2 | 3 (high nibbles, bits 4-5 | 6-7)
      const __m512i first = _mm512_or_si512(_mm512_and_si512(ql, low), _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, first_shifts), two), 4));
      const __m512i second = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(ql, 4), low),
                                             _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi64(qh, second_shifts), two), 4));
      const __m512i first_scale = _mm512_permutexvar_epi16(_mm512_add_epi16(lane, _mm512_set1_epi16(static_cast<short>(8 * half))), scales512);
      const __m512i second_scale = _mm512_permutexvar_epi16(_mm512_add_epi16(lane, _mm512_set1_epi16(static_cast<short>(8 * half + 4))), scales512);
#pragma GCC unroll 4
      for (int j = 0; j < N; j++) {
        const int8_t* q = x[j][b].q + 128 * half;
        sums[j] = _mm512_dpwssd_epi32(sums[j], _mm512_maddubs_epi16(first, _mm512_loadu_si512(q)), first_scale);
        sums[j] = _mm512_dpwssd_epi32(sums[j], _mm512_maddubs_epi16(second, _mm512_loadu_si512(q + 64)), second_scale);
      }
    }
    const float d = halves[u16(w + 208)];
    for (int j = 0; j < N; j++) acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(fold(sums[j])), _mm256_set1_ps(d * x[j][b].d), acc[j]);
  }
  for (int j = 0; j < N; j++) out[j * ts] = hsum(acc[j]);
}

}  // namespace

template <int N>
bool VnniOps::wide_k(DType dtype, const uint8_t* w, const Q8Block256* const* x, size_t blocks, const float* halves, float* out, size_t ts) {
  if (!cpu().wide_rows) return false;
  if (dtype == DType::Q4_K) return row_q45_k_wide<false, N>(w, x, blocks, halves, out, ts), true;
  if (dtype == DType::Q5_K) return row_q45_k_wide<true, N>(w, x, blocks, halves, out, ts), true;
  if (dtype == DType::Q6_K) return row_q6_k_wide<N>(w, x, blocks, halves, out, ts), true;
  return false;
}

namespace {

// ---------------------------------------------------------------- q8_0 × one token, two blocks to a vector
// Row-major q8_0 (the file's layout, mapped, never repacked: a load-time copy would cost the load-time bar) on
// 512-bit vectors: blocks 2i and 2i + 1 of a row (68 bytes) fill one vector, so one xor, one vpdpbusd, one conversion
// and one FMA serve 64 weights, and the two f16 scales (bytes 0 and 34 of the pair) come from one 64-byte load
// spread by vpermw into one vcvtph2ps: 8 vector operations per 64 weights where the 256-bit kernel (qdot-x86.h
// kernel32) spends 12, three of them scalar scale lookups. Lanes 0–7 sum the even blocks, 8–15 the odd ones; the
// row's sum adds the two (a different order of the same float operations than kernel32's, within the matmul
// tolerance of test/quant-matmul.test.ts). bench/native/q4-bench.cc 3 (AMD EPYC Zen 5, alternating builds): one
// thread in cache 47–52 → 57–58 G weights/s, the decode expert layer (2 threads, from DRAM) 806–817 → 715–770 µs
// (a first form copied each call's activation pairs out to thread-local storage: 59–63 in cache, the same from DRAM);
// `olmoe bench` of a random Q8_0 OLMoE-1B-7B: decode 76–88 → 91–95 % of the read-bandwidth bound. Two row
// streams ran at 37 G weights/s in cache (too few FMA chains), eight slower from DRAM (908–926 µs a layer).

// R rows (R streams, as kernel32) × one token over `pairs` pairs of blocks; P: software prefetch (stream_prefetch).
template <int R, bool P>
void q8_0_pair_rows(const uint8_t* const* rows, const Q8Block32* x, size_t pairs, float* out, size_t rs) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  // words 0 (block 2i's scale) × 8, then 17 (bytes 34–35: block 2i + 1's) × 8
  const __m512i scale_words = _mm512_mask_blend_epi16(0x00FF, _mm512_set1_epi16(17), _mm512_setzero_si512());
  __m512 acc[R];
  for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
  for (size_t i = 0; i < pairs; i++) {
    // the activation's blocks 2i and 2i + 1, each in its half: codes, VNNI start values (Q8Block32::bias), scales
    const Q8Block32 &even = x[2 * i], &odd = x[2 * i + 1];
    const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(load256(even.q)), load256(odd.q), 1);
    const __m512i bias = _mm512_inserti64x4(_mm512_castsi256_si512(load256(even.bias)), load256(odd.bias), 1);
    const __m512 d = _mm512_insertf32x8(_mm512_set1_ps(even.d), _mm256_set1_ps(odd.d), 1);
    for (int r = 0; r < R; r++) {
      const uint8_t* pair = rows[r] + 68 * i;
      if (P) {
        _mm_prefetch(reinterpret_cast<const char*>(pair) + kPrefetchAhead, _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(pair) + kPrefetchAhead + 34, _MM_HINT_T0);
      }
      const __m512i codes = _mm512_inserti64x4(_mm512_castsi256_si512(load256(pair + 2)), load256(pair + 36), 1);
      const __m512i sums = _mm512_dpbusd_epi32(bias, _mm512_xor_si512(codes, flip), q);
      const __m512 scales = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(scale_words, _mm512_loadu_si512(pair))));
      acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(sums), d), scales, acc[r]);
    }
  }
  for (int r = 0; r < R; r++) out[r * rs] = _mm512_reduce_add_ps(acc[r]);
}

// One token × all rows: four runs of consecutive rows at a time, as rows32_tokens (qdot-x86.h).
template <bool P>
void q8_0_pairs(const QDotArgs& a) {
  constexpr int R = 4;
  const size_t blocks = a.n / 32, run = a.rows / R;
  const Q8Block32* x = reinterpret_cast<const Q8Block32*>(a.act);
  const uint8_t* rows[R];
  for (size_t i = 0; i < run; i++) {
    for (int r = 0; r < R; r++) rows[r] = a.w + (r * run + i) * a.w_stride;
    q8_0_pair_rows<R, P>(rows, x, blocks / 2, a.out + i * a.rs, run * a.rs);
  }
  for (size_t i = R * run; i < a.rows; i++) {
    rows[0] = a.w + i * a.w_stride;
    q8_0_pair_rows<1, P>(rows, x, blocks / 2, a.out + i * a.rs, 0);
  }
}

}  // namespace

void qdot_rows_vnni(const QDotArgs& args) {
  if (args.dtype == DType::Q8_0 && args.tokens == 1 && args.n % 64 == 0 && cpu().wide_rows) return stream_prefetch() ? q8_0_pairs<true>(args) : q8_0_pairs<false>(args);
  qdot_rows_x86<VnniOps>(args);
}
}  // namespace olmoe

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else
namespace olmoe {
void qdot_rows_vnni(const QDotArgs& args) { qdot_rows_scalar(args); }
}  // namespace olmoe
#endif
