// q4_0, q4_k and q6_k weights repacked 16 rows to a vector (DType::Q4_0R16, Q4_KR16, Q6_KR16, packed.h) on AVX2
// without VNNI, any token count: the layouts and the integer sums of qgemm-r16.cc, on 256-bit vectors.
// A 64-byte vector of the layout is two halves here: bytes 0..31 hold rows 0..7 of the group (lane r = row r), bytes
// 32..63 rows 8..15, and the 16 f16 scales of a block split the same way. A tile runs over halves (8 rows each).
// Where VNNI's vpdpbusd adds four products into a 32-bit lane, vpmaddubsw adds two into a 16-bit one, and the 16-bit
// sums of several steps are added before one vpmaddwd widens them (against ones, or against the sub-block's scale):
// q4 codes (0..15) times q8 (|q| ≤ 127) give at most 3,810 a pair, so a q4_0 block's 8 steps (30,480) or a q4_k
// sub-block's 8 fit in 16 bits; q6_k's codes (0..63) give at most 16,002 a pair, two steps at a time. No sum saturates,
// the integer sums equal qgemm-r16.cc's, and the float work (conversion, scale multiply, FMA) is the same in the same
// order, so both levels should give the same bits (by construction: no machine measured yet had both).
// AVX2 has 16 vector registers where AVX-512 has 32: many-token tiles are one half × 4 tokens, and every sum that
// spans steps lives in one register per token.
// Dimension legend: U halves and N tokens per tile.
#include "packed.h"

#include "simd.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include <cstring>
#include <type_traits>

#include "q8.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace olmoe {
namespace {

// Four bytes at p in every 32-bit lane: vbroadcastss from memory, a load alone (set1 of a scalar made GCC load the
// scalars early and spill them, then broadcast from the stack).
inline __m256i broadcast4(const void* p) { return _mm256_castps_si256(_mm256_broadcast_ss(static_cast<const float*>(p))); }

inline __m256i load(const uint8_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }

// Eight f16 scales as floats.
inline __m256 halves8(const uint8_t* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }

// Prefetch distances as qgemm-r16.cc's (bytes ahead in each group's stream).
constexpr size_t kAhead = 2048, kAheadK = 4096;

// Rows 8h..8h+7 of the 16-row group at `group` (its blocks in order), their outputs at out + r·rs (+ j·ts per token).
struct Half {
  const uint8_t* group;
  size_t h;
  float* out;
};

// Every line of a half's block `ahead` bytes on, once per group (from the half with h = 0); nothing where P is false.
template <int U, bool P>
inline void prefetch_halves(const Half (&u)[U], size_t offset, size_t block_bytes, size_t ahead) {
  if (!P) return;
  for (int k = 0; k < U; k++) {
    if (u[k].h) continue;
    const char* at = reinterpret_cast<const char*>(u[k].group + offset) + ahead;
    for (size_t line = 0; line < block_bytes; line += 64) _mm_prefetch(at + line, _MM_HINT_T0);
  }
}

template <int U, int N>
void store_halves(const __m256 (&acc)[U][N], const Half (&u)[U], size_t rs, size_t ts) {
  for (int k = 0; k < U; k++)
    for (int j = 0; j < N; j++) {
      float* o = u[k].out + j * ts;
      if (rs == 1) {
        _mm256_storeu_ps(o, acc[k][j]);
      } else {
        alignas(32) float lanes[8];
        _mm256_store_ps(lanes, acc[k][j]);
        for (int r = 0; r < 8; r++) o[r * rs] = lanes[r];
      }
    }
}

template <class V, int U, int N>
inline void clear(V (&acc)[U][N]) {
  for (int k = 0; k < U; k++)
    for (int j = 0; j < N; j++) acc[k][j] = V{};
}

// ---------------------------------------------------------------- q4_0 (DType::Q4_0R16)
// Per block and half: Σ n·q over the 32 unsigned codes in 16-bit pairs, widened once, from −8·Σq (qdot.h's q4_0).
template <int U, int N, bool P>
void tile_q4_0(const Half (&u)[U], const Q8Block32* const* x, size_t blocks, size_t rs, size_t ts) {
  __m256 acc[U][N];
  clear(acc);
  const __m256i nibble = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  for (size_t b = 0; b < blocks; b++) {
    prefetch_halves<U, P>(u, b * kGroupBlockBytes, kGroupBlockBytes, kAhead);
    for (int k = 0; k < U; k++) {
      const uint8_t* block = u[k].group + b * kGroupBlockBytes;
      __m256i sum16[N];
      for (int j = 0; j < N; j++) sum16[j] = _mm256_setzero_si256();
      const auto step = [&](int s) {
        const __m256i bytes = load(block + 32 + 64 * s + 32 * u[k].h);
        const __m256i low = _mm256_and_si256(bytes, nibble), high = _mm256_and_si256(_mm256_srli_epi16(bytes, 4), nibble);
        for (int j = 0; j < N; j++) {
          const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(low, broadcast4(x[j][b].q + 4 * s)),
                                                 _mm256_maddubs_epi16(high, broadcast4(x[j][b].q + 16 + 4 * s)));
          sum16[j] = _mm256_add_epi16(sum16[j], pairs);
        }
      };
      // Several tokens: one step at a time. Unrolled, GCC issued all 8·N products of a block first and spilled them
      // (bench/native/prefill-bench.cc, 128 tokens, one thread, AMD EPYC Zen 3: 119 → 126–138 GFLOP/s; 2 tokens 85 →
      // 106); one token keeps the unrolled block (rolled it measured 55–90 against 64–90).
      if constexpr (N == 1) {
        for (int s = 0; s < 4; s++) step(s);
      } else {
#pragma GCC unroll 1
        for (int s = 0; s < 4; s++) step(s);
      }
      const __m256 dw = halves8(block + 16 * u[k].h);
      for (int j = 0; j < N; j++) {
        const __m256i sum = _mm256_add_epi32(_mm256_madd_epi16(sum16[j], ones), _mm256_set1_epi32(-8 * x[j][b].sum));
        acc[k][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_mul_ps(dw, _mm256_set1_ps(x[j][b].d)), acc[k][j]);
      }
    }
  }
  store_halves(acc, u, rs, ts);
}

// ---------------------------------------------------------------- q4_k (DType::Q4_KR16)
// Per superblock and half: each sub-block's 16-bit sums widened against its 6-bit scale (vpmaddwd), the mins' term
// Σ_j m_j·Σq_j in 32-bit lanes, then d·d_x and dmin·d_x in float, as qgemm-r16.cc's tile_k.

// pshufb control: in every 32-bit lane, its byte k zero-extended into both 16-bit halves.
inline __m256i pair_byte(int k) {
  const char z = static_cast<char>(0x80);
  const char c0 = static_cast<char>(k), c1 = static_cast<char>(4 + k), c2 = static_cast<char>(8 + k), c3 = static_cast<char>(12 + k);
  return _mm256_setr_epi8(c0, z, c0, z, c1, z, c1, z, c2, z, c2, z, c3, z, c3, z, c0, z, c0, z, c1, z, c1, z, c2, z, c2, z, c3, z, c3, z);
}

template <int U, int N, bool P>
void tile_q4_k(const Half (&u)[U], const Q8Block256* const* x, size_t blocks, size_t rs, size_t ts) {
  __m256 acc[U][N];
  clear(acc);
  const __m256i nibble = _mm256_set1_epi8(0x0F), six = _mm256_set1_epi8(63), top = _mm256_set1_epi8(0x30), ones = _mm256_set1_epi16(1);
  for (size_t b = 0; b < blocks; b++) {
    prefetch_halves<U, P>(u, b * kGroupSuperBytes, kGroupSuperBytes, kAheadK);
    for (int k = 0; k < U; k++) {
      const uint8_t* block = u[k].group + b * kGroupSuperBytes;
      const size_t half = 32 * u[k].h;
      // packed.h's three scale vectors: lane r bytes 0..3 (scales 0..3, top bits of 4..7), 4..7 (mins), 8..11
      const uint8_t* packed = block + kSuperScales + half;
      __m256i scaled[N];
      for (int j = 0; j < N; j++) scaled[j] = _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int p = 0; p < 4; p++) {  // sub-blocks 2p (low nibbles) and 2p + 1 (high)
        const __m256i a = load(packed);
        const __m256i scales = p < 2 ? _mm256_and_si256(a, six)
                                     : _mm256_or_si256(_mm256_and_si256(load(packed + 128), nibble), _mm256_and_si256(_mm256_srli_epi16(a, 2), top));
#pragma GCC unroll 2
        for (int which = 0; which < 2; which++) {
          __m256i sum16[N];
          for (int j = 0; j < N; j++) sum16[j] = _mm256_setzero_si256();
          const auto step = [&](int s) {
            const __m256i bytes = load(block + kSuperCodes + 64 * (8 * p + s) + half);
            const __m256i codes = which ? _mm256_and_si256(_mm256_srli_epi16(bytes, 4), nibble) : _mm256_and_si256(bytes, nibble);
            for (int j = 0; j < N; j++)
              sum16[j] = _mm256_add_epi16(sum16[j], _mm256_maddubs_epi16(codes, broadcast4(x[j][b].q + 64 * p + 32 * which + 4 * s)));
          };
          for (int s = 0; s < 8; s++) step(s);
          const __m256i scale = _mm256_shuffle_epi8(scales, pair_byte(2 * (p % 2) + which));
          for (int j = 0; j < N; j++) scaled[j] = _mm256_add_epi32(scaled[j], _mm256_madd_epi16(sum16[j], scale));
        }
      }
      const __m256i m = load(packed + 64), c = load(packed + 128);
      const __m256i mins0 = _mm256_and_si256(m, six);
      const __m256i mins1 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(c, 4), nibble), _mm256_and_si256(_mm256_srli_epi16(m, 2), top));
      const __m256 d = halves8(block + 16 * u[k].h), dmin = halves8(block + 32 + 16 * u[k].h);
      for (int j = 0; j < N; j++) {
        // the mins against Q8Block256::sums32_split (7-bit low parts, then high parts): ≤ 2 · 2 · 63 · 127 a 16-bit lane
        const int8_t* split = x[j][b].sums32_split;
        const __m256i low = _mm256_add_epi16(_mm256_maddubs_epi16(mins0, broadcast4(split)), _mm256_maddubs_epi16(mins1, broadcast4(split + 4)));
        const __m256i high = _mm256_add_epi16(_mm256_maddubs_epi16(mins0, broadcast4(split + 8)), _mm256_maddubs_epi16(mins1, broadcast4(split + 12)));
        const __m256i mins = _mm256_add_epi32(_mm256_madd_epi16(low, ones), _mm256_slli_epi32(_mm256_madd_epi16(high, ones), 7));
        const __m256 dx = _mm256_set1_ps(x[j][b].d);
        acc[k][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(scaled[j]), _mm256_mul_ps(d, dx), acc[k][j]);
        acc[k][j] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(mins), _mm256_mul_ps(dmin, dx), acc[k][j]);
      }
    }
  }
  store_halves(acc, u, rs, ts);
}

// ---------------------------------------------------------------- q6_k (DType::Q6_KR16)
// Per superblock and half: Σ_g sc_g·Σ v·q over the 16 scale groups of 16 (two steps' 16-bit sums widened against the
// group's scale at a time), minus 32·Σ_g sc_g·Σq_g (vpmaddwd over pairs of groups), then d·d_x in float.

// The codes (0..63) of scale group 4k + i at one step from the step's three vectors (packed.h: low nibbles of groups
// 4k, 4k + 1 at `step`, of 4k + 2, 4k + 3 at step + 64, the four groups' top two bits at step + 128).
inline __m256i six_bit_code(const uint8_t* step, int i) {
  const __m256i nibble = _mm256_set1_epi8(0x0F), top = _mm256_set1_epi8(0x30);
  const __m256i low = load(step + 64 * (i / 2)), high = load(step + 128);
  const __m256i n = _mm256_and_si256(i % 2 ? _mm256_srli_epi16(low, 4) : low, nibble);
  const __m256i t = i == 0 ? _mm256_slli_epi16(high, 4) : i == 1 ? _mm256_slli_epi16(high, 2) : i == 2 ? high : _mm256_srli_epi16(high, 2);
  return _mm256_or_si256(n, _mm256_and_si256(t, top));
}

// The int8 scales of rows 8h..8h+7 in scale group g, each in both 16-bit halves of its 32-bit lane.
inline __m256i group_scales(const uint8_t* scales, size_t g) {
  const __m128i s = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales + 16 * g));
  return _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(s, s));
}

template <int U, int N, bool P>
void tile_q6_k(const Half (&u)[U], const Q8Block256* const* x, size_t blocks, size_t rs, size_t ts) {
  __m256 acc[U][N];
  clear(acc);
  for (size_t b = 0; b < blocks; b++) {
    prefetch_halves<U, P>(u, b * kGroupSuper6Bytes, kGroupSuper6Bytes, kAheadK);
    for (int k = 0; k < U; k++) {
      const uint8_t* block = u[k].group + b * kGroupSuper6Bytes;
      const uint8_t* scales = block + kSuper6Scales + 8 * u[k].h;
      __m256i scaled[N], offsets[N];
      for (int j = 0; j < N; j++) offsets[j] = _mm256_setzero_si256();
      for (size_t g = 0; g < 16; g += 2) {  // lane r: (sc_g, sc_{g+1}) of row r against (Σq_g, Σq_{g+1})
        const __m128i s0 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales + 16 * g));
        const __m128i s1 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(scales + 16 * (g + 1)));
        const __m256i pair = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(s0, s1));
        for (int j = 0; j < N; j++) offsets[j] = _mm256_add_epi32(offsets[j], _mm256_madd_epi16(pair, broadcast4(x[j][b].sums16 + g)));
      }
      for (int j = 0; j < N; j++) scaled[j] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(offsets[j], 5));
#pragma GCC unroll 4
      for (int q = 0; q < 4; q++)
#pragma GCC unroll 4
        for (int i = 0; i < 4; i++) {
          const __m256i scale = group_scales(scales, 4 * q + i);
          const auto twice = [&](int first) {  // steps first and first + 1: their 16-bit sums, widened against the scale
            __m256i sum16[N];
            for (int j = 0; j < N; j++) sum16[j] = _mm256_setzero_si256();
            for (int s = first; s < first + 2; s++) {
              const __m256i codes = six_bit_code(block + kSuper6Codes + 192 * (4 * q + s) + 32 * u[k].h, i);
              for (int j = 0; j < N; j++)
                sum16[j] = _mm256_add_epi16(sum16[j], _mm256_maddubs_epi16(codes, broadcast4(x[j][b].q + 16 * (4 * q + i) + 4 * s)));
            }
            for (int j = 0; j < N; j++) scaled[j] = _mm256_add_epi32(scaled[j], _mm256_madd_epi16(sum16[j], scale));
          };
          twice(0), twice(2);
        }
      const __m256 d = halves8(block + 16 * u[k].h);
      for (int j = 0; j < N; j++) acc[k][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(scaled[j]), _mm256_mul_ps(d, _mm256_set1_ps(x[j][b].d)), acc[k][j]);
    }
  }
  store_halves(acc, u, rs, ts);
}

// ---------------------------------------------------------------- drivers
// As qgemm-r16.cc's: decode reads runs of groups (kDecodeGroups streams), both halves of a group in one tile; more
// tokens pass in blocks of 4 over chunks of groups, one half at a time.
template <DType D>
struct Halves {
  static constexpr bool kQ4_0 = D == DType::Q4_0R16;
  using Block = std::conditional_t<kQ4_0, Q8Block32, Q8Block256>;
  static constexpr size_t kValues = kQ4_0 ? 32 : 256;
  static constexpr int kDecodeGroups = decode_streams(D);
  // Tokens per many-token tile (one half × kTokens; bench/native/prefill-bench.cc, one thread, AMD EPYC Zen 3, best of
  // alternating builds, GFLOP/s): q4_0 4 (120; 3: 113, 5: 112), q4_k 3 (115; 2: 113, 4: 106), q6_k 4 (89; 3: 80).
  static constexpr int kTokens = kQ4_0 ? 4 : D == DType::Q4_KR16 ? 3 : 4;
  template <int U, int N, bool P>
  static void run(const Half (&u)[U], const Block* const* x, size_t blocks, size_t rs, size_t ts) {
    if constexpr (kQ4_0) tile_q4_0<U, N, P>(u, x, blocks, rs, ts);
    else if constexpr (D == DType::Q4_KR16) tile_q4_k<U, N, P>(u, x, blocks, rs, ts);
    else tile_q6_k<U, N, P>(u, x, blocks, rs, ts);
  }
};

template <class W, int N>
void token_blocks(const QDotArgs& a, size_t t, const typename W::Block* (&x)[N]) {
  for (int j = 0; j < N; j++) x[j] = reinterpret_cast<const typename W::Block*>(a.act + (t + j) * a.act_stride);
}

// N tokens in G streams, tile k taking groups [k·run, (k + 1)·run) in order, both halves of each (2G halves a tile).
template <class W, int G, bool P, int N>
void runs(const QDotArgs& a, size_t groups) {
  const typename W::Block* x[N];
  token_blocks<W, N>(a, 0, x);
  const size_t blocks = a.n / W::kValues, group_bytes = 16 * a.w_stride, run = groups / G;
  for (size_t i = 0; i < run; i++) {
    Half u[2 * G];
    for (int k = 0; k < G; k++)
      for (int h = 0; h < 2; h++) {
        const size_t g = k * run + i;
        u[2 * k + h] = {a.w + g * group_bytes, static_cast<size_t>(h), a.out + (16 * g + 8 * h) * a.rs};
      }
    W::template run<2 * G, N, P>(u, x, blocks, a.rs, a.ts);
  }
  for (size_t g = G * run; g < groups; g++) {
    const Half u[2] = {{a.w + g * group_bytes, 0, a.out + 16 * g * a.rs}, {a.w + g * group_bytes, 1, a.out + (16 * g + 8) * a.rs}};
    W::template run<2, N, P>(u, x, blocks, a.rs, a.ts);
  }
}

// Tokens [t, t + N) over halves of groups [g0, g1), one half a tile.
template <class W, int N, bool P>
void halves(const QDotArgs& a, size_t t, size_t g0, size_t g1) {
  const typename W::Block* x[N];
  token_blocks<W, N>(a, t, x);
  const size_t blocks = a.n / W::kValues, group_bytes = 16 * a.w_stride;
  for (size_t g = g0; g < g1; g++)
    for (size_t h = 0; h < 2; h++) {
      const Half u[1] = {{a.w + g * group_bytes, h, a.out + t * a.ts + (16 * g + 8 * h) * a.rs}};
      W::template run<1, N, P>(u, x, blocks, a.rs, a.ts);
    }
}

// Groups a chunk of many tokens passes over (qgemm-r16.cc's kChunkTiles · 2 q4_0 groups, 8 K-quant groups).
template <class W>
constexpr size_t chunk_groups() { return W::kQ4_0 ? 16 : 8; }

template <class W, bool P>
void rows(const QDotArgs& a) {
  const size_t groups = a.rows / 16;
  switch (a.tokens) {
    case 1: return runs<W, W::kDecodeGroups, P, 1>(a, groups);
    case 2: return runs<W, 2, P, 2>(a, groups);  // an expert's share of a batch of decode streams: 2 runs, 8 sums
    default: break;
  }
  constexpr int kTokens = W::kTokens;
  const size_t chunk = a.tokens > 2 * kTokens ? chunk_groups<W>() : 1;
  for (size_t g0 = 0; g0 < groups; g0 += chunk) {
    const size_t g1 = g0 + chunk < groups ? g0 + chunk : groups;
    size_t t = 0;
    for (; t + kTokens <= a.tokens; t += kTokens) halves<W, kTokens, P>(a, t, g0, g1);
    switch (a.tokens - t) {
      case 3: halves<W, 3, P>(a, t, g0, g1); break;
      case 2: halves<W, 2, P>(a, t, g0, g1); break;
      case 1: halves<W, 1, P>(a, t, g0, g1); break;
      default: break;
    }
  }
}

template <bool P>
void rows_of(const QDotArgs& a) {
  if (a.dtype == DType::Q4_KR16) return rows<Halves<DType::Q4_KR16>, P>(a);
  if (a.dtype == DType::Q6_KR16) return rows<Halves<DType::Q6_KR16>, P>(a);
  rows<Halves<DType::Q4_0R16>, P>(a);
}

}  // namespace

void qgemm_rows_r16_avx2(const QDotArgs& a) {
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
