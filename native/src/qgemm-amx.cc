// qgemm.h on the AMX tile unit (tdpbssd: 16 × 16 int32 sums of int8 × int8 products over 32 or 16 summed indices)
// for q4_0, q8_0, q4_k, q5_k and q6_k: the same integer block dots as qdot.h, 8,192 multiply-adds per instruction.
// Per call, for groups of up to 256 tokens:
//   1. the tokens' q8 codes are packed, 16 tokens at a time, into B tiles (per chunk of 32 summed indices: 8 rows
//      of 16 tokens × 4 consecutive codes, the layout tdpbssd reads), with their block scales (and, for q4_k and
//      q5_k, the sub-block sums Σq the minimums multiply) as vectors over the 16 tokens;
//   2. the weight rows, 16 at a time, are unpacked once into signed codes per chunk (A tiles, row-major, 32 bytes
//      a row: q4_0 n − 8, q8_0 w, q4_k/q5_k n, q6_k v − 32) and float scales per (chunk, row);
//   3. per (16 rows, 16 tokens): one tdpbssd per chunk (q6_k: per group of 16), the int32 tile stored and turned
//      into float lanes over tokens: acc[row] += float(C[row]) · d_x · d_w (q4_0, q8_0); the K-quants sum
//      float(C[row]) · (d·scale_j) over the sub-blocks of a block, subtract Σ_j (dmin·min_j)·Σq_j (q4_k, q5_k), and
//      multiply by the block's d_x once.
// The integer dots are exact, so results differ from qdot.h and the reference backend only in float summation order.
// Dimension legend: 16 weight rows per panel, 16 tokens per tile, chunks of 32 summed indices.
#include "amx.h"
#include "qgemm.h"

#if defined(__x86_64__)
#include <immintrin.h>

#include <cstddef>
#include <cstring>
#include <vector>

#include "gemm.h"
#include "q8.h"
#include "quant.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

#include "kquant-codes.h"

namespace olmoe {
namespace {

constexpr size_t kTile = 16;            // weight rows per panel, tokens per token tile
constexpr size_t kChunkBytes = 16 * 32;  // one A or B tile of a chunk of 32 summed indices
constexpr size_t kGroupTokens = 256;     // tokens whose B tiles are packed together (512 KiB at 2,048 inputs)

// Tiles 0..3: C (16 rows × 16 int32) of four products in flight; 4, 5 and 6, 7: A (16 weight rows × `bytes`
// codes) and B (bytes / 4 rows of 16 tokens × 4 codes), alternately. Chunks of 32 codes (q4_0, q8_0, q4_k, q5_k)
// or groups of 16 (q6_k).
template <int kBytes>
const TileConfig& int8_tiles() {
  static const TileConfig config = [] {
    TileConfig cfg{};
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
      const bool c = t < 4, a = t == 4 || t == 6;
      cfg.rows[t] = c || a ? 16 : kBytes / 4;
      cfg.colsb[t] = a ? kBytes : 64;
    }
    return cfg;
  }();
  return config;
}

inline uint16_t u16(const uint8_t* p) {
  uint16_t bits;
  std::memcpy(&bits, p, 2);
  return bits;
}

// F16C, not the 256 KiB half_table(): the lookups missed the cache at every block.
inline float f16(const uint8_t* p) { return _cvtsh_ss(u16(p)); }

inline __m256i load256(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline void store256(void* p, __m256i v) { _mm256_storeu_si256(static_cast<__m256i*>(p), v); }

// How one dtype's activation blocks and weight blocks are laid out.
struct Layout {
  size_t values;       // per weight block (32 or 256)
  size_t act_block;    // bytes of one activation block (Q8Block32 or Q8Block256)
  size_t d_offset;     // of the activation block's d
  int groups;          // scale groups per chunk of 32 (q6_k: 2)
};

Layout layout_of(DType dtype) {
  const size_t d32 = offsetof(Q8Block32, d), d256 = offsetof(Q8Block256, d);
  switch (dtype) {
    case DType::Q4_0:
    case DType::Q8_0: return {32, sizeof(Q8Block32), d32, 1};
    case DType::Q4_K:
    case DType::Q5_K: return {256, sizeof(Q8Block256), d256, 1};
    default: return {256, sizeof(Q8Block256), d256, 2};
  }
}

// ---------------------------------------------------------------- activations: B tiles and per-token vectors

struct TokenTile {
  const int32_t* b;   // [chunks][8][16]: dword k of token n's chunk at [chunk][k][n]
  const float* dx;    // [blocks][16]
  const float* sums;  // [chunks][16] Σq of each sub-block of 32 (q4_k, q5_k)
};

// Tokens [t0, t0 + count) (count ≤ 16; the rest of the tile is zeros) into b, dx and sums.
void pack_tokens(const QDotArgs& a, const Layout& l, size_t t0, size_t count, int32_t* b, float* dx, float* sums) {
  const size_t chunks = a.n / 32, blocks = a.n / l.values, per_block = l.values / 32;
  const __mmask16 valid = static_cast<__mmask16>((1u << count) - 1);
  const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(static_cast<int>(a.act_stride)));
  const uint8_t* base = a.act + t0 * a.act_stride;
  for (size_t c = 0; c < chunks; c++) {
    const uint8_t* chunk = base + (c / per_block) * l.act_block + (c % per_block) * 32;
    for (int k = 0; k < 8; k++) _mm512_store_si512(b + (c * 8 + k) * 16, _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, rows, chunk + 4 * k, 1));
  }
  for (size_t blk = 0; blk < blocks; blk++)
    _mm512_store_ps(dx + blk * 16, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), valid, rows, base + blk * l.act_block + l.d_offset, 1));
  if (!sums) return;
  for (size_t c = 0; c < chunks; c++) {  // int16 sums32[j] of block c / 8, read as the low half of a dword
    const uint8_t* at = base + (c / 8) * l.act_block + offsetof(Q8Block256, sums32) + 2 * (c % 8);
    const __m512i words = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, rows, at, 1);
    _mm512_store_ps(sums + c * 16, _mm512_cvtepi32_ps(_mm512_srai_epi32(_mm512_slli_epi32(words, 16), 16)));
  }
}

// ---------------------------------------------------------------- weights: A tiles and per-row scales

struct Panel {
  int8_t* codes;  // [chunks][16 rows][32]
  float* scales;  // [chunks · groups][16]: q4_0/q8_0 d; q4_k/q5_k d·scale_j; q6_k d·scale_g
  float* mins;    // [chunks][16]: q4_k/q5_k dmin·min_j
};

inline int8_t* code_row(const Panel& p, size_t chunk, size_t row) { return p.codes + chunk * kChunkBytes + row * 32; }

void unpack_q4_0(const uint8_t* w, size_t blocks, size_t row, const Panel& p) {
  const __m256i shifts = _mm256_setr_epi64x(0, 0, 4, 4), low = _mm256_set1_epi8(0x0F), eight = _mm256_set1_epi8(8);
  for (size_t c = 0; c < blocks; c++, w += 18) {
    const __m256i both = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 2)));
    store256(code_row(p, c, row), _mm256_sub_epi8(_mm256_and_si256(_mm256_srlv_epi64(both, shifts), low), eight));
    p.scales[c * 16 + row] = f16(w);
  }
}

void unpack_q8_0(const uint8_t* w, size_t blocks, size_t row, const Panel& p) {
  for (size_t c = 0; c < blocks; c++, w += 34) {
    store256(code_row(p, c, row), load256(w + 2));
    p.scales[c * 16 + row] = f16(w);
  }
}

template <bool kFiveBits>
void unpack_q45_k(const uint8_t* w, size_t blocks, size_t row, const Panel& p) {
  constexpr size_t kBytes = kFiveBits ? 176 : 144;
  for (size_t b = 0; b < blocks; b++, w += kBytes) {
    uint8_t scales[8], mins[8];
    scales_mins_k4(w + 4, scales, mins);
    const float d = f16(w), dmin = f16(w + 2);
    for (int j = 0; j < 8; j++) p.scales[(8 * b + j) * 16 + row] = d * scales[j], p.mins[(8 * b + j) * 16 + row] = dmin * mins[j];
    const uint8_t* qs = w + (kFiveBits ? 48 : 16);
    __m256i high = kFiveBits ? load256(w + 16) : _mm256_setzero_si256();
    for (int pair = 0; pair < 4; pair++) {  // sub-blocks 2·pair (low nibbles) and 2·pair + 1 (high nibbles)
      __m256i first, second;
      k45_codes<kFiveBits>(qs + 32 * pair, high, first, second);
      store256(code_row(p, 8 * b + 2 * pair, row), first);
      store256(code_row(p, 8 * b + 2 * pair + 1, row), second);
    }
  }
}

void unpack_q6_k(const uint8_t* w, size_t blocks, size_t row, const Panel& p) {
  const __m256i offset = _mm256_set1_epi8(32);
  for (size_t b = 0; b < blocks; b++, w += 210) {
    const float d = f16(w + 208);
    const int8_t* sc = reinterpret_cast<const int8_t*>(w + 192);
    for (int g = 0; g < 16; g++) p.scales[(16 * b + g) * 16 + row] = d * sc[g];
    for (int half = 0; half < 2; half++) {  // values 128·half + 32·g + l: chunk 8b + 4·half + g
      __m256i codes[4];
      q6_codes(w, half, codes);
      for (int g = 0; g < 4; g++) store256(code_row(p, 8 * b + 4 * half + g, row), _mm256_sub_epi8(codes[g], offset));
    }
  }
}

// Rows [r, r + rows) of the call's weights (rows ≤ 16) into the panel; the panel's other rows are zeros.
void unpack_panel(const QDotArgs& a, const Layout& l, size_t r, size_t rows, const Panel& p) {
  const size_t chunks = a.n / 32, blocks = a.n / l.values;
  if (rows < kTile) {
    for (size_t c = 0; c < chunks; c++) std::memset(code_row(p, c, rows), 0, (kTile - rows) * 32);
    for (size_t i = 0; i < chunks * l.groups; i++) std::memset(p.scales + i * 16 + rows, 0, (kTile - rows) * sizeof(float));
    if (p.mins)
      for (size_t c = 0; c < chunks; c++) std::memset(p.mins + c * 16 + rows, 0, (kTile - rows) * sizeof(float));
  }
  for (size_t i = 0; i < rows; i++) {
    const uint8_t* w = a.w + (r + i) * a.w_stride;
    switch (a.dtype) {
      case DType::Q4_0: unpack_q4_0(w, blocks, i, p); break;
      case DType::Q8_0: unpack_q8_0(w, blocks, i, p); break;
      case DType::Q4_K: unpack_q45_k<false>(w, blocks, i, p); break;
      case DType::Q5_K: unpack_q45_k<true>(w, blocks, i, p); break;
      default: unpack_q6_k(w, blocks, i, p); break;
    }
  }
}

// ---------------------------------------------------------------- 16 rows × 16 tokens

// GCC's tile intrinsics paste the tile number into the instruction text: it must be a literal, hence a macro.
// C = A · B with A's rows `a_stride` bytes apart and B's 64.
#define OLMOE_TILE_PRODUCT(kC, kA, kB, a, a_stride, b) \
  do {                                                 \
    _tile_loadd(kA, (a), (a_stride));                  \
    _tile_loadd(kB, (b), 64);                          \
    _tile_zero(kC);                                    \
    _tile_dpbssd(kC, kA, kB);                          \
  } while (0)

// For products k = 0 .. count − 1 (operands from source(k, a, b)), C_k stored to c[k % kDepth], then done(k).
// Product k runs on C tile k % 4 with operand tiles (4, 5) or (6, 7) by parity, and is issued three products ahead
// of its store, so that the tile unit computes while the vector units turn earlier ones into floats. In sequence,
// every store waits out its product's whole latency: two in flight ran at ~60 % of this, one at ~50 %.
template <size_t kDepth, class Source, class Done>
inline void stream_products(size_t count, Source source, int32_t (*c)[256], Done done) {
  const int8_t* a;
  const int32_t* b;
#define OLMOE_ISSUE(kC, kA, kB, k)                   \
  do {                                               \
    source((k), a, b);                               \
    OLMOE_TILE_PRODUCT(kC, kA, kB, a, 32, b);        \
  } while (0)
#define OLMOE_RETIRE(kC, k)                          \
  do {                                               \
    _tile_stored(kC, c[(k) % kDepth], 64);           \
    done(k);                                         \
  } while (0)
  if (count > 0) OLMOE_ISSUE(0, 4, 5, 0);
  if (count > 1) OLMOE_ISSUE(1, 6, 7, 1);
  if (count > 2) OLMOE_ISSUE(2, 4, 5, 2);
  for (size_t k = 0; k < count; k += 4) {
    if (k + 3 < count) OLMOE_ISSUE(3, 6, 7, k + 3);
    OLMOE_RETIRE(0, k);
    if (k + 1 >= count) break;
    if (k + 4 < count) OLMOE_ISSUE(0, 4, 5, k + 4);
    OLMOE_RETIRE(1, k + 1);
    if (k + 2 >= count) break;
    if (k + 5 < count) OLMOE_ISSUE(1, 6, 7, k + 5);
    OLMOE_RETIRE(2, k + 2);
    if (k + 3 >= count) break;
    if (k + 6 < count) OLMOE_ISSUE(2, 4, 5, k + 6);
    OLMOE_RETIRE(3, k + 3);
  }
#undef OLMOE_ISSUE
#undef OLMOE_RETIRE
}

inline __m512 lanes(const int32_t* c) { return _mm512_cvtepi32_ps(_mm512_load_si512(c)); }

// Operands of chunk k: the panel's 16 rows × 32 codes, the token tile's 8 × 16 × 4.
inline auto chunk_source(const Panel& p, const TokenTile& t) {
  return [&p, &t](size_t k, const int8_t*& a, const int32_t*& b) { a = p.codes + k * kChunkBytes, b = t.b + k * 128; };
}

// acc[row][token] over all chunks, blocks of 32: acc += float(C)·d_x·d_w per chunk.
// (acc is kept in registers here, not behind the caller's pointer, which the tile stores could alias.)
void tile_32(const Panel& p, const TokenTile& t, size_t chunks, __m512* out) {
  alignas(64) int32_t c[4][256];
  __m512 acc[16];
  for (auto& v : acc) v = _mm512_setzero_ps();
  stream_products<4>(chunks, chunk_source(p, t), c, [&](size_t k) {
    const __m512 dx = _mm512_load_ps(t.dx + k * 16);
    const float* dw = p.scales + k * 16;
    for (int m = 0; m < 16; m++) acc[m] = _mm512_fmadd_ps(_mm512_mul_ps(lanes(c[k % 4] + 16 * m), dx), _mm512_set1_ps(dw[m]), acc[m]);
  });
  for (int m = 0; m < 16; m++) out[m] = acc[m];
}

// acc over all blocks of 256: per block Σ_j float(C_j)·(d·scale_j) − Σ_j (dmin·min_j)·Σq_j, times d_x.
void tile_q45_k(const Panel& p, const TokenTile& t, size_t blocks, __m512* out) {
  __m512 acc[16];
  for (auto& v : acc) v = _mm512_setzero_ps();
  alignas(64) int32_t c[8][256];
  stream_products<8>(8 * blocks, chunk_source(p, t), c, [&](size_t k) {
    if (k % 8 != 7) return;
    const size_t b = k / 8;
    const __m512 dx = _mm512_load_ps(t.dx + b * 16);
    const float* scales = p.scales + 8 * b * 16;
    const float* mins = p.mins + 8 * b * 16;
    const float* sums = t.sums + 8 * b * 16;
    for (int m = 0; m < 16; m++) {
      __m512 s = _mm512_mul_ps(lanes(c[0] + 16 * m), _mm512_set1_ps(scales[m]));
      for (int j = 1; j < 8; j++) s = _mm512_fmadd_ps(lanes(c[j] + 16 * m), _mm512_set1_ps(scales[j * 16 + m]), s);
      for (int j = 0; j < 8; j++) s = _mm512_fnmadd_ps(_mm512_set1_ps(mins[j * 16 + m]), _mm512_load_ps(sums + j * 16), s);
      acc[m] = _mm512_fmadd_ps(s, dx, acc[m]);
    }
  });
  for (int m = 0; m < 16; m++) out[m] = acc[m];
}

// acc over all blocks of 256: per block Σ_g float(C_g)·(d·scale_g) over its 16 groups of 16, times d_x. Group g
// is the first or second 16 codes of chunk g / 2 (A rows 16 of 32 bytes; B rows 4 of 8).
void tile_q6_k(const Panel& p, const TokenTile& t, size_t blocks, __m512* out) {
  __m512 acc[16];
  for (auto& v : acc) v = _mm512_setzero_ps();
  alignas(64) int32_t c[16][256];
  auto source = [&p, &t](size_t g, const int8_t*& a, const int32_t*& b) { a = p.codes + (g / 2) * kChunkBytes + 16 * (g % 2), b = t.b + (g / 2) * 128 + 64 * (g % 2); };
  stream_products<16>(16 * blocks, source, c, [&](size_t g) {
    if (g % 16 != 15) return;
    const size_t b = g / 16;
    const __m512 dx = _mm512_load_ps(t.dx + b * 16);
    const float* scales = p.scales + 16 * b * 16;
    for (int m = 0; m < 16; m++) {
      __m512 s = _mm512_mul_ps(lanes(c[0] + 16 * m), _mm512_set1_ps(scales[m]));
      for (int j = 1; j < 16; j++) s = _mm512_fmadd_ps(lanes(c[j] + 16 * m), _mm512_set1_ps(scales[j * 16 + m]), s);
      acc[m] = _mm512_fmadd_ps(s, dx, acc[m]);
    }
  });
  for (int m = 0; m < 16; m++) out[m] = acc[m];
}

// out[row·rs + token·ts] for the valid rows and tokens of the tile.
void write_tile(const __m512* acc, size_t rows, size_t tokens, float* out, size_t rs, size_t ts) {
  alignas(64) float values[16][16];
  for (int m = 0; m < 16; m++) _mm512_store_ps(values[m], acc[m]);
  for (size_t n = 0; n < tokens; n++)
    for (size_t m = 0; m < rows; m++) out[m * rs + n * ts] = values[m][n];
}

struct Scratch {
  std::vector<int32_t> b;
  std::vector<float> dx, sums, scales, mins;
  std::vector<int8_t> codes;
};

// gemm.h's grow-only scratch, 64-byte aligned (tile loads and aligned vector stores).
template <class T>
T* aligned(std::vector<T>& v, size_t count) {
  T* data = scratch(v, count + 64 / sizeof(T));
  return data + ((64 - reinterpret_cast<uintptr_t>(data) % 64) % 64) / sizeof(T);
}

}  // namespace

bool qgemm_amx_available() { return amx_granted(AmxKind::Int8); }

void qgemm_rows_amx(const QDotArgs& a) {
  const Layout l = layout_of(a.dtype);
  amx_use(l.groups == 2 ? int8_tiles<16>() : int8_tiles<32>());
  const bool k45 = a.dtype == DType::Q4_K || a.dtype == DType::Q5_K;
  const size_t chunks = a.n / 32, blocks = a.n / l.values;
  thread_local Scratch s;
  const size_t group_tiles = kGroupTokens / kTile;
  int32_t* b = aligned(s.b, group_tiles * chunks * 128);
  float* dx = aligned(s.dx, group_tiles * blocks * 16);
  float* sums = k45 ? aligned(s.sums, group_tiles * chunks * 16) : nullptr;
  const Panel panel{aligned(s.codes, chunks * kChunkBytes), aligned(s.scales, chunks * l.groups * 16), k45 ? aligned(s.mins, chunks * 16) : nullptr};
  for (size_t g0 = 0; g0 < a.tokens; g0 += kGroupTokens) {
    const size_t group = std::min(kGroupTokens, a.tokens - g0), tiles = (group + kTile - 1) / kTile;
    for (size_t i = 0; i < tiles; i++)
      pack_tokens(a, l, g0 + i * kTile, std::min(kTile, group - i * kTile), b + i * chunks * 128, dx + i * blocks * 16, sums ? sums + i * chunks * 16 : nullptr);
    for (size_t r = 0; r < a.rows; r += kTile) {
      const size_t rows = std::min(kTile, a.rows - r);
      unpack_panel(a, l, r, rows, panel);
      for (size_t i = 0; i < tiles; i++) {
        const TokenTile tile{b + i * chunks * 128, dx + i * blocks * 16, sums ? sums + i * chunks * 16 : nullptr};
        __m512 acc[16];  // every row written by the tile function
        if (l.values == 32) tile_32(panel, tile, chunks, acc);
        else if (k45) tile_q45_k(panel, tile, blocks, acc);
        else tile_q6_k(panel, tile, blocks, acc);
        const size_t t0 = g0 + i * kTile;
        write_tile(acc, rows, std::min(kTile, a.tokens - t0), a.out + r * a.rs + t0 * a.ts, a.rs, a.ts);
      }
    }
  }
}

}  // namespace olmoe

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else
namespace olmoe {
bool qgemm_amx_available() { return false; }
void qgemm_rows_amx(const QDotArgs& a) { qdot_rows_scalar(a); }
}  // namespace olmoe
#endif
