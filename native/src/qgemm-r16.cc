// q4_0, q4_k and q6_k weights repacked 16 rows to a vector (DType::Q4_0R16, Q4_KR16, Q6_KR16, packed.h) on AVX-512
// VNNI, any token count.
// In the file's row-major q4_0 a 32-bit lane of a dot product holds four codes of one row, so every block ends in
// per-row float work (convert, two scale multiplies, add) spent on 32 multiply-adds, and each row needs a horizontal
// sum. Here lane r of a vector is row r of a group of 16: one vpdpbusd is four codes × 16 rows against four
// activation bytes broadcast, eight of them finish a block for 16 rows, and the float work (one conversion, one
// multiply of the scales, one FMA) is spent once per 512 multiply-adds; the 16 f16 scales are one vcvtph2ps.
// Per block: Σ n·q over the unsigned codes starts from −8·Σq (the q8 block's sum), as qdot.h's q4_0. q4_k (below):
// the same per sub-block of 32, its 6-bit scales and mins applied in 32-bit lanes before the float work; q6_k the same
// per scale group of 16.
// Dimension legend: G row groups and N tokens per tile.
#include "packed.h"

#include "simd.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include <cstring>
#include <type_traits>

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

// Software prefetch distance in each group stream (bytes): a q4_0 group's block is 288 bytes, 4.5 lines.
// (2048 into L1 streamed as fast as 3072 or 4096, or L2 hints, on an AMD EPYC, 2 threads: ~50–58 GB/s, as row-major q4_0.)
constexpr size_t kAhead = 2048;
// q4_k and q6_k groups read 2304 and 3360 bytes per superblock: 4096 ahead (2048–4096 alike within the noise for the
// decode expert layer of bench/native/q4-bench.cc, 1024 and 6144 slower; q4_k in tiles: 9472 much slower).
constexpr size_t kAheadK = 4096;

// Every line of the G groups' blocks of `block_bytes` at `block` (groups `group_bytes` apart), `ahead` bytes on; nothing
// where P is false (stream_prefetch(), simd.h: the hardware's prefetchers alone).
template <int G, bool P>
inline void prefetch_groups(const uint8_t* block, size_t group_bytes, size_t block_bytes, size_t ahead) {
  if (!P) return;
  for (int g = 0; g < G; g++) {
    const char* at = reinterpret_cast<const char*>(block + g * group_bytes) + ahead;
    for (size_t line = 0; line < block_bytes; line += 64) _mm_prefetch(at + line, _MM_HINT_T0);
  }
}

// 64 bytes loaded into a register, for operations that use them more than once: as a memory operand of each (what the
// compiler makes of a plain load) they were loaded once per use, and the loads, not the arithmetic, bounded the
// decode tiles. One thread on 16 rows × 2048 in L1 (AMD EPYC Zen 5, 3.44 GHz), cycles per 16 rows × 256 values: q4_k
// 152 → 75 (with its scales below), q6_k 205–220 → 103–113, q4_0 118–122 → 78–113; from DRAM (2 threads, decode's
// 1024 × 2048 matrices, variants alternating in one process) q4_k 4–8 % and q6_k 2–4 % faster. In the machine's fast
// phases the tiles stream at 84–96 % of what loads alone reach in their order (bench/native/stream-bench.cc).
inline __m512i load_once(const void* p) {
  __m512i v = _mm512_loadu_si512(p);
  __asm__("" : "+v"(v));
  return v;
}

// The low nibbles of 64 code bytes as bytes 0..15, the high ones as 16 × 0..15 (bytes & 0xF0: a dot product with
// them is 16 times the nibbles', divided out exactly after the sum).
inline void mask_nibbles(const uint8_t* codes, __m512i& low, __m512i& high16) {
  const __m512i bytes = load_once(codes);
  low = _mm512_and_si512(bytes, _mm512_set1_epi8(0x0F));
  high16 = _mm512_and_si512(bytes, _mm512_set1_epi8(static_cast<char>(0xF0)));
}

// The low and high nibbles of 64 code bytes as bytes 0..15.
inline void split_nibbles(const uint8_t* codes, __m512i& low, __m512i& high) {
  const __m512i bytes = load_once(codes), nibble = _mm512_set1_epi8(0x0F);
  low = _mm512_and_si512(bytes, nibble);
  high = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), nibble);
}

// Zeros (float sums or 32-bit integer ones).
template <class V, int G, int N>
inline void clear_tile(V (&acc)[G][N]) {
  for (int g = 0; g < G; g++)
    for (int j = 0; j < N; j++) acc[g][j] = V{};
}

// Lane r of acc[g][j] is row r of tile group g, token j: out[g·gs + r·rs + j·ts].
template <int G, int N>
void store_tile(const __m512 (&acc)[G][N], float* out, size_t gs, size_t rs, size_t ts) {
  for (int g = 0; g < G; g++)
    for (int j = 0; j < N; j++) {
      float* o = out + g * gs + j * ts;
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
template <int G, int N, bool P>
void tile(const uint8_t* w, size_t group_bytes, const Q8Block32* const* x, size_t blocks, float* out, size_t gs, size_t rs, size_t ts) {
  __m512 acc[G][N];
  clear_tile(acc);
  for (size_t b = 0; b < blocks; b++) {
    __m512i sum[G][N];
    for (int j = 0; j < N; j++) {
      const __m512i start = _mm512_set1_epi32(-8 * x[j][b].sum);
      for (int g = 0; g < G; g++) sum[g][j] = start;
    }
    prefetch_groups<G, P>(w + b * kGroupBlockBytes, group_bytes, kGroupBlockBytes, kAhead);
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
  store_tile<G, N>(acc, out, gs, rs, ts);
}

// tile for one token: the high nibbles left in place (bytes & 0xF0, mask_nibbles) and summed apart, so each 64 code
// bytes cost two ANDs where split_nibbles takes two ANDs and a 16-bit shift (on Zen 4 shifts have fewer pipes than
// ANDs), paid back by one exact shift and one add per group a block. bench/native/prefill-bench.cc, one thread, one
// token, AMD EPYC Zen 4: 235 → 247 GFLOP/s. With 2 tokens no faster; from 3 on slower (the second set of sums spills).
template <int G, int N, bool P>
void tile_masked(const uint8_t* w, size_t group_bytes, const Q8Block32* const* x, size_t blocks, float* out, size_t gs, size_t rs, size_t ts) {
  __m512 acc[G][N];
  clear_tile(acc);
  for (size_t b = 0; b < blocks; b++) {
    __m512i low_sum[G][N], high_sum[G][N];
    for (int j = 0; j < N; j++) {
      const __m512i start = _mm512_set1_epi32(-8 * x[j][b].sum);
      for (int g = 0; g < G; g++) low_sum[g][j] = start, high_sum[g][j] = _mm512_setzero_si512();
    }
    prefetch_groups<G, P>(w + b * kGroupBlockBytes, group_bytes, kGroupBlockBytes, kAhead);
    for (int s = 0; s < 4; s++) {
      __m512i qa[N], qb[N];
      for (int j = 0; j < N; j++) qa[j] = _mm512_set1_epi32(i32(x[j][b].q + 4 * s)), qb[j] = _mm512_set1_epi32(i32(x[j][b].q + 16 + 4 * s));
      for (int g = 0; g < G; g++) {
        __m512i low, high16;
        mask_nibbles(w + g * group_bytes + b * kGroupBlockBytes + 32 + 64 * s, low, high16);
        for (int j = 0; j < N; j++) {
          low_sum[g][j] = _mm512_dpbusd_epi32(low_sum[g][j], low, qa[j]);
          high_sum[g][j] = _mm512_dpbusd_epi32(high_sum[g][j], high16, qb[j]);
        }
      }
    }
    for (int g = 0; g < G; g++) {
      const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + g * group_bytes + b * kGroupBlockBytes)));
      for (int j = 0; j < N; j++) {
        const __m512i sum = _mm512_add_epi32(low_sum[g][j], _mm512_srai_epi32(high_sum[g][j], 4));
        acc[g][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(dw, _mm512_set1_ps(x[j][b].d)), acc[g][j]);
      }
    }
  }
  store_tile<G, N>(acc, out, gs, rs, ts);
}

// ---------------------------------------------------------------- q4_k (DType::Q4_KR16)
// Per superblock and row: Σ_j sc_j·(Σ codes·q over sub-block j) and Σ_j m_j·Σq_j in 32-bit lanes (one per row), then
// d·d_x and dmin·d_x in float, as qdot.cc's q45_k_row.

// The 16 rows' 6-bit scales and mins of sub-blocks 0..3 ([0]) and 4..7 ([1]) as bytes, lane r holding row r's four,
// from the packed bytes (packed.h: three vectors, lane r bytes 0..3, 4..7 and 8..11 of row r's 12): bytes 0..3 keep
// the scales of sub-blocks 0..3 in their low 6 bits and 4..7 the mins; sub-blocks 4..7 take their low 4 bits from bytes
// 8..11 (scale: low nibble, min: high) and their top 2 from the top bits of bytes 0..3 / 4..7 (llama.cpp's
// get_scale_min_k4, bytewise). Ten vector operations for 16 rows where unpacking each sub-block's scale and min in
// 32-bit lanes took eight to ten per sub-block.
struct KScales {
  __m512i scales[2], mins[2];
};

inline KScales k_scales_mins(const uint8_t* packed) {
  const __m512i a = load_once(packed), b = load_once(packed + 64), c = load_once(packed + 128);  // each used twice
  const __m512i six = _mm512_set1_epi8(63), low = _mm512_set1_epi8(15), top = _mm512_set1_epi8(0x30);
  KScales k;
  k.scales[0] = _mm512_and_si512(a, six);
  k.mins[0] = _mm512_and_si512(b, six);
  // (x & low) | t, t = bits 6..7 of a (b) moved to 4..5: the 16-bit shift brings bits of the next byte only into 0..1
  k.scales[1] = _mm512_ternarylogic_epi32(c, low, _mm512_and_si512(_mm512_srli_epi16(a, 2), top), 0xEA);
  k.mins[1] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(c, 4), low, _mm512_and_si512(_mm512_srli_epi16(b, 2), top), 0xEA);
  return k;
}

// Byte k of every 32-bit lane, zero-extended.
inline __m512i lane_byte(__m512i bytes, int k) {
  const int none = static_cast<int>(0x80808000u);
  return _mm512_shuffle_epi8(bytes, _mm512_set4_epi32(none | (12 + k), none | (8 + k), none | (4 + k), none | k));
}

// Σ_j m_j·Σq_j of one token, lane r = row r: the mins as vpdpbusd's unsigned bytes against the activation's sums
// split into 7-bit low parts and high parts (Q8Block256::sums32_split), joined as low + 128·high.
inline __m512i k_mins_dot(const KScales& k, const Q8Block256& x) {
  const __m512i zero = _mm512_setzero_si512();
  const __m512i low = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, k.mins[0], _mm512_set1_epi32(i32(x.sums32_split))), k.mins[1],
                                          _mm512_set1_epi32(i32(x.sums32_split + 4)));
  const __m512i high = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(zero, k.mins[0], _mm512_set1_epi32(i32(x.sums32_split + 8))), k.mins[1],
                                           _mm512_set1_epi32(i32(x.sums32_split + 12)));
  return _mm512_add_epi32(low, _mm512_slli_epi32(high, 7));
}

template <int G, int N, bool P>
void tile_k(const uint8_t* w, size_t group_bytes, const Q8Block256* const* x, size_t blocks, float* out, size_t gs, size_t rs, size_t ts) {
  __m512 acc[G][N];
  clear_tile(acc);
  for (size_t b = 0; b < blocks; b++) {
    __m512i scaled[G][N], scaled16[G][N];  // scaled16: the high nibbles' sums, 16 times too large until the end
    clear_tile(scaled);
    clear_tile(scaled16);
    prefetch_groups<G, P>(w + b * kGroupSuperBytes, group_bytes, kGroupSuperBytes, kAheadK);
    KScales k[G];
    for (int g = 0; g < G; g++) k[g] = k_scales_mins(w + g * group_bytes + b * kGroupSuperBytes + kSuperScales);
#pragma GCC unroll 4
    for (int p = 0; p < 4; p++) {
      __m512i first[G][N], second[G][N];
      clear_tile(first);
      clear_tile(second);
      for (int s = 0; s < 8; s++) {
        __m512i low[G], high[G];
        for (int g = 0; g < G; g++) mask_nibbles(w + g * group_bytes + b * kGroupSuperBytes + kSuperCodes + 64 * (8 * p + s), low[g], high[g]);
        for (int j = 0; j < N; j++) {
          const int8_t* q = x[j][b].q + 64 * p + 4 * s;
          const __m512i qa = _mm512_set1_epi32(i32(q)), qb = _mm512_set1_epi32(i32(q + 32));
          for (int g = 0; g < G; g++) {
            first[g][j] = _mm512_dpbusd_epi32(first[g][j], low[g], qa);
            second[g][j] = _mm512_dpbusd_epi32(second[g][j], high[g], qb);
          }
        }
      }
      for (int g = 0; g < G; g++) {  // sub-blocks 2p and 2p + 1: bytes 2(p % 2) and 2(p % 2) + 1 of scales[p / 2]
        const __m512i s1 = lane_byte(k[g].scales[p / 2], 2 * (p % 2)), s2 = lane_byte(k[g].scales[p / 2], 2 * (p % 2) + 1);
        for (int j = 0; j < N; j++) {
          scaled[g][j] = _mm512_add_epi32(scaled[g][j], _mm512_mullo_epi32(first[g][j], s1));
          scaled16[g][j] = _mm512_add_epi32(scaled16[g][j], _mm512_mullo_epi32(second[g][j], s2));
        }
      }
    }
    for (int g = 0; g < G; g++) {
      const uint8_t* block = w + g * group_bytes + b * kGroupSuperBytes;
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block)));
      const __m512 dmin = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32)));
      for (int j = 0; j < N; j++) {
        const __m512 dx = _mm512_set1_ps(x[j][b].d);
        const __m512i dots = _mm512_add_epi32(scaled[g][j], _mm512_srai_epi32(scaled16[g][j], 4));
        acc[g][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dots), _mm512_mul_ps(d, dx), acc[g][j]);
        acc[g][j] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(k_mins_dot(k[g], x[j][b])), _mm512_mul_ps(dmin, dx), acc[g][j]);
      }
    }
  }
  store_tile<G, N>(acc, out, gs, rs, ts);
}

// ---------------------------------------------------------------- q6_k (DType::Q6_KR16)
// Per superblock and row: Σ_j sc_j·(Σ v·q − 32·Σq) over the 16 scale groups j of 16 values (v the 6-bit codes, 0..63),
// the −32·Σq as each group's start value, then d·d_x in float, as qdot.h's q6_k. Codes come as quads of scale groups
// (packed.h): per step two nibble vectors and one vector of their four 2-bit high parts.

// The codes of scale groups 4k..4k+3 at step s (values 4s..4s+3 of each group, lane r = row r) from their three vectors.
inline void six_bit_codes(const uint8_t* step, __m512i (&v)[4]) {
  const __m512i a = load_once(step), b = load_once(step + 64), h = load_once(step + 128);
  const __m512i low = _mm512_set1_epi8(0x0F), top = _mm512_set1_epi8(0x30);
  // (x & low) | t, t holding bits 4..5 only
  v[0] = _mm512_ternarylogic_epi32(a, low, _mm512_and_si512(_mm512_slli_epi16(h, 4), top), 0xEA);
  v[1] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(a, 4), low, _mm512_and_si512(_mm512_slli_epi16(h, 2), top), 0xEA);
  v[2] = _mm512_ternarylogic_epi32(b, low, _mm512_and_si512(h, top), 0xEA);
  v[3] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(b, 4), low, _mm512_and_si512(_mm512_srli_epi16(h, 2), top), 0xEA);
}

template <int G, int N, bool P>
void tile_q6(const uint8_t* w, size_t group_bytes, const Q8Block256* const* x, size_t blocks, float* out, size_t gs, size_t rs, size_t ts) {
  __m512 acc[G][N];
  clear_tile(acc);
  for (size_t b = 0; b < blocks; b++) {
    __m512i scaled[G][N];
    clear_tile(scaled);
    prefetch_groups<G, P>(w + b * kGroupSuper6Bytes, group_bytes, kGroupSuper6Bytes, kAheadK);
    for (int k = 0; k < 4; k++) {
      __m512i sums[G][N][4];
      for (int j = 0; j < N; j++)
        for (int i = 0; i < 4; i++) {
          const __m512i start = _mm512_set1_epi32(-32 * x[j][b].sums16[4 * k + i]);
          for (int g = 0; g < G; g++) sums[g][j][i] = start;
        }
      for (int s = 0; s < 4; s++) {
        __m512i q[N][4];
        for (int j = 0; j < N; j++)
          for (int i = 0; i < 4; i++) q[j][i] = _mm512_set1_epi32(i32(x[j][b].q + 16 * (4 * k + i) + 4 * s));
        for (int g = 0; g < G; g++) {
          __m512i v[4];
          six_bit_codes(w + g * group_bytes + b * kGroupSuper6Bytes + kSuper6Codes + 192 * (4 * k + s), v);
          for (int j = 0; j < N; j++)
            for (int i = 0; i < 4; i++) sums[g][j][i] = _mm512_dpbusd_epi32(sums[g][j][i], v[i], q[j][i]);
        }
      }
      for (int g = 0; g < G; g++)
        for (int i = 0; i < 4; i++) {
          const __m512i sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + g * group_bytes + b * kGroupSuper6Bytes + kSuper6Scales + 16 * (4 * k + i))));
          for (int j = 0; j < N; j++) scaled[g][j] = _mm512_add_epi32(scaled[g][j], _mm512_mullo_epi32(sums[g][j][i], sc));
        }
    }
    for (int g = 0; g < G; g++) {
      const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + g * group_bytes + b * kGroupSuper6Bytes)));
      for (int j = 0; j < N; j++) acc[g][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(scaled[g][j]), _mm512_mul_ps(d, _mm512_set1_ps(x[j][b].d)), acc[g][j]);
    }
  }
  store_tile<G, N>(acc, out, gs, rs, ts);
}

// The packed types for the drivers below: activation blocks, values per block, groups per many-token tile, and the
// streams (runs of groups) one token reads at once. The decode expert layer of bench/native/q4-bench.cc (2 threads,
// AMD EPYC Zen 5, alternating builds): q4_0 in four streams 469 → 413 µs against four adjacent groups per tile (two
// streams 459, one 558); q4_k in two 460–498 µs against 595–683 in tiles of four adjacent groups (the next tile
// prefetched); q6_k in two 714–764 µs, in four 1,056, its file layout's rows 986–992.
template <DType D>
struct Groups {
  static_assert(D == DType::Q4_0R16 || D == DType::Q4_KR16 || D == DType::Q6_KR16);
  static constexpr bool kQ4_0 = D == DType::Q4_0R16;
  using Block = std::conditional_t<kQ4_0, Q8Block32, Q8Block256>;
  static constexpr size_t kValues = kQ4_0 ? 32 : 256;
  static constexpr int kPrefillGroups = kQ4_0 ? 2 : 1;
  static constexpr int kDecodeGroups = decode_streams(D);
  // Whether 2–4 tokens read the decode's runs (tiles of kDecodeGroups groups × N tokens), not the many-token tiles:
  // 2–4 tokens are an expert's share of a batch of decode streams (GenerationBatch, `olmoe serve`).
  // q4_0's tiles of 2 adjacent groups read two streams where its runs read four: a step of 8 streams (OLMoE-1B-7B,
  // 2 threads, AMD EPYC Zen 4, both ways alternating step by step in one process) took 78.2 and 76.1 ms against 89.6
  // and 85.8. q4_k+q6_k (Q4_K_M) is as fast either way (80.6–100.5 ms against 81.7–100.9: runs of 2, tiles of 1).
  static constexpr bool kFewTokenRuns = kQ4_0;
  template <int G, int N, bool P>
  static void run(const uint8_t* w, size_t group_bytes, const Block* const* x, size_t blocks, float* out, size_t gs, size_t rs, size_t ts) {
    if constexpr (kQ4_0 && N == 1) tile_masked<G, N, P>(w, group_bytes, x, blocks, out, gs, rs, ts);
    else if constexpr (kQ4_0) tile<G, N, P>(w, group_bytes, x, blocks, out, gs, rs, ts);
    else if constexpr (D == DType::Q4_KR16) tile_k<G, N, P>(w, group_bytes, x, blocks, out, gs, rs, ts);
    else tile_q6<G, N, P>(w, group_bytes, x, blocks, out, gs, rs, ts);
  }
};

// Groups [g0, g1) in tiles of G groups (the rest one at a time) for tokens [t, t + N).
template <class W, int G, int N, bool P>
void tiles(const QDotArgs& a, size_t t, size_t g0, size_t g1) {
  const typename W::Block* x[N];
  for (int j = 0; j < N; j++) x[j] = reinterpret_cast<const typename W::Block*>(a.act + (t + j) * a.act_stride);
  const size_t blocks = a.n / W::kValues, group_bytes = 16 * a.w_stride;
  float* out = a.out + t * a.ts;
  size_t g = g0;
  for (; g + G <= g1; g += G) W::template run<G, N, P>(a.w + g * group_bytes, group_bytes, x, blocks, out + 16 * g * a.rs, 16 * a.rs, a.rs, a.ts);
  for (; g < g1; g++) W::template run<1, N, P>(a.w + g * group_bytes, group_bytes, x, blocks, out + 16 * g * a.rs, 16 * a.rs, a.rs, a.ts);
}

// N tokens (decode: one) in G streams, tile group k taking groups [k·run, (k + 1)·run) in order, so that each stream
// reads one long run of consecutive groups, which the hardware prefetchers follow (adjacent groups in one tile jump
// every 16 rows).
template <class W, int G, bool P, int N = 1>
void runs(const QDotArgs& a, size_t groups) {
  const typename W::Block* x[N];
  for (int j = 0; j < N; j++) x[j] = reinterpret_cast<const typename W::Block*>(a.act + j * a.act_stride);
  const size_t blocks = a.n / W::kValues, group_bytes = 16 * a.w_stride, run = groups / G;
  for (size_t i = 0; i < run; i++)
    W::template run<G, N, P>(a.w + i * group_bytes, run * group_bytes, x, blocks, a.out + 16 * i * a.rs, 16 * run * a.rs, a.rs, a.ts);
  for (size_t g = G * run; g < groups; g++)
    W::template run<1, N, P>(a.w + g * group_bytes, group_bytes, x, blocks, a.out + 16 * g * a.rs, 16 * a.rs, a.rs, a.ts);
}

constexpr int kTokens = 4;
// Many tokens pass over chunks of kChunkTiles tiles' groups (16 q4_0 groups: 288 KiB; 8 q4_k or q6_k groups: 147 or
// 215 KiB), which stay in L2 while every token block runs over them, so the rows come from memory once, in runs of
// the whole chunk. 512-token prefill of OLMoE-1B-7B (2 threads, AMD EPYC Zen 4, both ways alternating in one
// process, 8 pairs) against chunks of one tile: Q4_0 1.080× (1.00–1.11), Q4_K_M 1.096× (1.04–1.17). At 5–8 tokens
// (an expert's share of 8 decode streams) no gain was measured, and those keep chunks of one tile.
constexpr size_t kChunkTiles = 8;

// Decode (one token, or 2–4 where W::kFewTokenRuns) reads W::kDecodeGroups runs of groups at a time; more tokens take
// tiles of W::kPrefillGroups groups × 4 tokens, token blocks inner over a chunk of groups (kChunkTiles), so that the
// chunk's weights stay in cache while every token block passes over them.
template <class W, bool P>
void rows(const QDotArgs& a) {
  const size_t groups = a.rows / 16;
  if (a.tokens == 1) return runs<W, W::kDecodeGroups, P>(a, groups);
  if constexpr (W::kFewTokenRuns) {
    switch (a.tokens) {
      case 2: return runs<W, W::kDecodeGroups, P, 2>(a, groups);
      case 3: return runs<W, W::kDecodeGroups, P, 3>(a, groups);
      case 4: return runs<W, W::kDecodeGroups, P, 4>(a, groups);
      default: break;
    }
  }
  constexpr int G = W::kPrefillGroups;
  const size_t chunk = a.tokens > 2 * kTokens ? kChunkTiles * G : G;
  for (size_t g0 = 0; g0 < groups; g0 += chunk) {
    const size_t g1 = g0 + chunk < groups ? g0 + chunk : groups;
    size_t t = 0;
    for (; t + kTokens <= a.tokens; t += kTokens) tiles<W, G, kTokens, P>(a, t, g0, g1);
    switch (a.tokens - t) {
      case 3: tiles<W, G, 3, P>(a, t, g0, g1); break;
      case 2: tiles<W, G, 2, P>(a, t, g0, g1); break;
      case 1: tiles<W, G, 1, P>(a, t, g0, g1); break;
      default: break;
    }
  }
}

template <bool P>
void rows_of(const QDotArgs& a) {
  if (a.dtype == DType::Q4_KR16) return rows<Groups<DType::Q4_KR16>, P>(a);
  if (a.dtype == DType::Q6_KR16) return rows<Groups<DType::Q6_KR16>, P>(a);
  rows<Groups<DType::Q4_0R16>, P>(a);
}

}  // namespace

void qgemm_rows_r16_vnni(const QDotArgs& a) {
  if (stream_prefetch()) return rows_of<true>(a);
  rows_of<false>(a);
}

}  // namespace olmoe

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif
