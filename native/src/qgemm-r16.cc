// q4_0 and q4_k weights repacked 16 rows to a vector (DType::Q4_0R16, Q4_KR16, packed.h) on AVX-512 VNNI, any
// token count.
// In the file's row-major q4_0 a 32-bit lane of a dot product holds four codes of one row, so every block ends in
// per-row float work (convert, two scale multiplies, add) spent on 32 multiply-adds, and each row needs a horizontal
// sum. Here lane r of a vector is row r of a group of 16: one vpdpbusd is four codes × 16 rows against four
// activation bytes broadcast, eight of them finish a block for 16 rows, and the float work (one conversion, one
// multiply of the scales, one FMA) is spent once per 512 multiply-adds; the 16 f16 scales are one vcvtph2ps.
// Per block: Σ n·q over the unsigned codes starts from −8·Σq (the q8 block's sum), as qdot.h's q4_0. q4_k (below):
// the same per sub-block of 32, its 6-bit scales and mins applied in 32-bit lanes before the float work.
// Dimension legend: G row groups and N tokens per tile.
#include "packed.h"

#include "simd.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include <cstring>

#include "q8.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")
#endif

namespace olmoe {
namespace {

inline int32_t i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Software prefetch distance in the group stream (bytes): one group's block is 288 bytes, 4.5 lines.
// (2048 into L1 streamed as fast as 3072 or 4096, or L2 hints, on an AMD EPYC, 2 threads: ~50–58 GB/s, as row-major q4_0.)
constexpr size_t kAhead = 2048;
// q4_k groups read 2368 bytes per superblock: 4096 ahead for many tokens (for one, prefetch_next_tile; the expert
// layer of bench/native/q4-bench.cc dtype 9, 2 threads, per-group distances: 756 µs with 2048, 724 with 4096, 737 with
// 6144, 998 with 9472).
constexpr size_t kAheadK = 4096;

// Every line of the G groups' blocks of `block_bytes` at `block` (groups `group_bytes` apart), `ahead` bytes on.
template <int G>
inline void prefetch_groups(const uint8_t* block, size_t group_bytes, size_t block_bytes, size_t ahead) {
  for (int g = 0; g < G; g++) {
    const char* at = reinterpret_cast<const char*>(block + g * group_bytes) + ahead;
    for (size_t line = 0; line < block_bytes; line += 64) _mm_prefetch(at + line, _MM_HINT_T0);
  }
}

// One token (decode) of q4_k: the next tile's bytes (its G groups, contiguous after this tile's), a `blocks`-th of them
// per superblock step, instead of each group's stream kAheadK on. The expert layer of bench/native/q4-bench.cc
// (dtype 9, 2 threads, alternating runs on an AMD EPYC Zen 5): 802–819 → 672–701 µs. (q4_0 went the other way,
// 533 → 577–607 µs: it keeps the per-group distance.)
template <int G>
inline void prefetch_next_tile(const uint8_t* w, size_t group_bytes, size_t b, size_t blocks) {
  const size_t span = G * group_bytes, step = (span + blocks - 1) / blocks;
  const char* at = reinterpret_cast<const char*>(w) + span + b * step;
  for (size_t line = 0; line < step; line += 64) _mm_prefetch(at + line, _MM_HINT_T0);
}

// The low and high nibbles of 64 code bytes as bytes 0..15.
inline void split_nibbles(const uint8_t* codes, __m512i& low, __m512i& high) {
  const __m512i bytes = _mm512_loadu_si512(codes), nibble = _mm512_set1_epi8(0x0F);
  low = _mm512_and_si512(bytes, nibble);
  high = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), nibble);
}

template <int G, int N>
inline void clear_tile(__m512 (&acc)[G][N]) {
  for (int g = 0; g < G; g++)
    for (int j = 0; j < N; j++) acc[g][j] = _mm512_setzero_ps();
}

// Lane r of acc[g][j] is row 16g + r, token j: out[(16g + r)·rs + j·ts].
template <int G, int N>
void store_tile(const __m512 (&acc)[G][N], float* out, size_t rs, size_t ts) {
  for (int g = 0; g < G; g++)
    for (int j = 0; j < N; j++) {
      float* o = out + 16 * g * rs + j * ts;
      if (rs == 1) {
        _mm512_storeu_ps(o, acc[g][j]);
      } else {
        alignas(64) float lanes[16];
        _mm512_store_ps(lanes, acc[g][j]);
        for (int r = 0; r < 16; r++) o[r * rs] = lanes[r];
      }
    }
}

// Groups w[0..G) (each kGroupBlockBytes per block, `group_bytes` apart) × tokens x[0..N) over `blocks` blocks;
// out[(16g + r)·rs + j·ts].
template <int G, int N>
void tile(const uint8_t* w, size_t group_bytes, const Q8Block32* const* x, size_t blocks, float* out, size_t rs, size_t ts) {
  __m512 acc[G][N];
  clear_tile(acc);
  for (size_t b = 0; b < blocks; b++) {
    __m512i sum[G][N];
    for (int j = 0; j < N; j++) {
      const __m512i start = _mm512_set1_epi32(-8 * x[j][b].sum);
      for (int g = 0; g < G; g++) sum[g][j] = start;
    }
    prefetch_groups<G>(w + b * kGroupBlockBytes, group_bytes, kGroupBlockBytes, kAhead);
    for (int s = 0; s < 4; s++) {
      __m512i low[G], high[G];
      for (int g = 0; g < G; g++) split_nibbles(w + g * group_bytes + b * kGroupBlockBytes + 32 + 64 * s, low[g], high[g]);
      for (int j = 0; j < N; j++) {
        const __m512i qa = _mm512_set1_epi32(i32(x[j][b].q + 4 * s)), qb = _mm512_set1_epi32(i32(x[j][b].q + 16 + 4 * s));
        for (int g = 0; g < G; g++) sum[g][j] = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(sum[g][j], low[g], qa), high[g], qb);
      }
    }
    for (int g = 0; g < G; g++) {
      const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + g * group_bytes + b * kGroupBlockBytes)));
      for (int j = 0; j < N; j++) acc[g][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum[g][j]), _mm512_mul_ps(dw, _mm512_set1_ps(x[j][b].d)), acc[g][j]);
    }
  }
  store_tile<G, N>(acc, out, rs, ts);
}

// ---------------------------------------------------------------- q4_k (DType::Q4_KR16)
// Per superblock and row: Σ_j sc_j·(Σ codes·q over sub-block j) and Σ_j m_j·Σq_j in 32-bit lanes (one per row), then
// d·d_x and dmin·d_x in float, as qdot.cc's q45_k_row.

template <int G, int N>
void tile_k(const uint8_t* w, size_t group_bytes, const Q8Block256* const* x, size_t blocks, float* out, size_t rs, size_t ts) {
  __m512 acc[G][N];
  clear_tile(acc);
  for (size_t b = 0; b < blocks; b++) {
    __m512i scaled[G][N];
    for (int g = 0; g < G; g++)
      for (int j = 0; j < N; j++) scaled[g][j] = _mm512_setzero_si512();
    if (N == 1) prefetch_next_tile<G>(w, group_bytes, b, blocks);
    else prefetch_groups<G>(w + b * kGroupSuperBytes, group_bytes, kGroupSuperBytes, kAheadK);
    for (int p = 0; p < 4; p++) {
      __m512i first[G][N], second[G][N];
      for (int g = 0; g < G; g++)
        for (int j = 0; j < N; j++) first[g][j] = second[g][j] = _mm512_setzero_si512();
      for (int s = 0; s < 8; s++) {
        __m512i low[G], high[G];
        for (int g = 0; g < G; g++) split_nibbles(w + g * group_bytes + b * kGroupSuperBytes + kSuperCodes + 64 * (8 * p + s), low[g], high[g]);
        for (int j = 0; j < N; j++) {
          const int8_t* q = x[j][b].q + 64 * p + 4 * s;
          const __m512i qa = _mm512_set1_epi32(i32(q)), qb = _mm512_set1_epi32(i32(q + 32));
          for (int g = 0; g < G; g++) {
            first[g][j] = _mm512_dpbusd_epi32(first[g][j], low[g], qa);
            second[g][j] = _mm512_dpbusd_epi32(second[g][j], high[g], qb);
          }
        }
      }
      for (int g = 0; g < G; g++) {
        const uint8_t* scales = w + g * group_bytes + b * kGroupSuperBytes + kSuperScales;
        const __m512i s1 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + 16 * (2 * p))));
        const __m512i s2 = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + 16 * (2 * p + 1))));
        for (int j = 0; j < N; j++)
          scaled[g][j] = _mm512_add_epi32(scaled[g][j], _mm512_add_epi32(_mm512_mullo_epi32(first[g][j], s1), _mm512_mullo_epi32(second[g][j], s2)));
      }
    }
    for (int g = 0; g < G; g++) {
      const uint8_t* block = w + g * group_bytes + b * kGroupSuperBytes;
      __m512i mins[N];
      for (int j = 0; j < N; j++) mins[j] = _mm512_setzero_si512();
      for (int sub = 0; sub < 8; sub++) {
        const __m512i m = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + kSuperMins + 16 * sub)));
        for (int j = 0; j < N; j++) mins[j] = _mm512_add_epi32(mins[j], _mm512_mullo_epi32(m, _mm512_set1_epi32(x[j][b].sums32[sub])));
      }
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block)));
      const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32)));
      for (int j = 0; j < N; j++) {
        const __m512 dx = _mm512_set1_ps(x[j][b].d);
        acc[g][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(scaled[g][j]), _mm512_mul_ps(d, dx), acc[g][j]);
        acc[g][j] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins[j]), _mm512_mul_ps(dmin, dx), acc[g][j]);
      }
    }
  }
  store_tile<G, N>(acc, out, rs, ts);
}

// The two packed types for the drivers below: activation blocks, values per block, groups per many-token tile.
struct Q4_0Groups {
  using Block = Q8Block32;
  static constexpr size_t kValues = 32;
  static constexpr int kPrefillGroups = 2;
  template <int G, int N>
  static void run(const uint8_t* w, size_t group_bytes, const Block* const* x, size_t blocks, float* out, size_t rs, size_t ts) {
    tile<G, N>(w, group_bytes, x, blocks, out, rs, ts);
  }
};

struct Q4_KGroups {
  using Block = Q8Block256;
  static constexpr size_t kValues = 256;
  static constexpr int kPrefillGroups = 1;
  template <int G, int N>
  static void run(const uint8_t* w, size_t group_bytes, const Block* const* x, size_t blocks, float* out, size_t rs, size_t ts) {
    tile_k<G, N>(w, group_bytes, x, blocks, out, rs, ts);
  }
};

// Groups [g0, g1) in tiles of G groups (the rest one at a time) for tokens [t, t + N).
template <class W, int G, int N>
void tiles(const QDotArgs& a, size_t t, size_t g0, size_t g1) {
  const typename W::Block* x[N];
  for (int j = 0; j < N; j++) x[j] = reinterpret_cast<const typename W::Block*>(a.act + (t + j) * a.act_stride);
  const size_t blocks = a.n / W::kValues, group_bytes = 16 * a.w_stride;
  float* out = a.out + t * a.ts;
  size_t g = g0;
  for (; g + G <= g1; g += G) W::template run<G, N>(a.w + g * group_bytes, group_bytes, x, blocks, out + 16 * g * a.rs, a.rs, a.ts);
  for (; g < g1; g++) W::template run<1, N>(a.w + g * group_bytes, group_bytes, x, blocks, out + 16 * g * a.rs, a.rs, a.ts);
}

constexpr int kTokens = 4;

// Decode (one token) reads four groups at a time; more tokens take tiles of W::kPrefillGroups groups × 4 tokens,
// token blocks inner, so that the groups' weights stay in cache while every token block passes over them.
template <class W>
void rows(const QDotArgs& a) {
  const size_t groups = a.rows / 16;
  if (a.tokens == 1) return tiles<W, 4, 1>(a, 0, 0, groups);
  constexpr int G = W::kPrefillGroups;
  for (size_t g0 = 0; g0 < groups; g0 += G) {
    const size_t g1 = g0 + G < groups ? g0 + G : groups;
    size_t t = 0;
    for (; t + kTokens <= a.tokens; t += kTokens) tiles<W, G, kTokens>(a, t, g0, g1);
    switch (a.tokens - t) {
      case 3: tiles<W, G, 3>(a, t, g0, g1); break;
      case 2: tiles<W, G, 2>(a, t, g0, g1); break;
      case 1: tiles<W, G, 1>(a, t, g0, g1); break;
      default: break;
    }
  }
}

}  // namespace

void qgemm_rows_r16_vnni(const QDotArgs& a) {
  if (a.dtype == DType::Q4_KR16) return rows<Q4_KGroups>(a);
  rows<Q4_0Groups>(a);
}

}  // namespace olmoe

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif
