// Training's float32 GEMM, C[M, N] (+)= op(A)[M, K] · op(B)[K, N] on row-major operands, in the packed-panel
// scheme of Goto & van de Geijn ("Anatomy of high-performance matrix multiplication", TOMS 2008):
//   1. pack op(B), block after block of KC summed indices, into panels of NR columns, each [kc][NR] (B's two
//      layouts differ only in this copy; columns past N are zero-padded);
//   2. for each (row block, column block) of C, in parallel, for each K block in ascending order: an MR × NR
//      register-blocked micro-kernel per (MR rows of A, B panel), the B panel outermost so that it stays near
//      the core while the rows of A stream through. A is read in place, with strides for its two layouts.
// Work is never split along K: each element of C is the sum of its KC blocks in ascending order, each block an
// FMA chain over ascending k, so results are bit-identical for any thread count (exact training resume).
// bf16 mixed precision (TrainGemmArgs::bf16): the packing pass also rounds A and B to bfloat16 (train-gemm-bf16.inc).
// With AMX (Sapphire Rapids and later) both are packed as bf16 pairs of summed indices, zero-padded to whole tiles, and
// 32 × 64 blocks of C run on the tile unit (tdpbf16ps); with AVX-512 BF16 alone, the same pairs feed an MR × NR kernel
// of vdpbf16ps; elsewhere they are rounded in float32 and the float32 kernel runs. All three differ only in summation
// order (and the bf16 instructions reading subnormals as zero): a product of two bf16 values is exact in float32, so
// an FMA on rounded operands adds exactly what tdpbf16ps and vdpbf16ps add.
#include "train-gemm.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "amx.h"
#include "gemm.h"
#include "kernels.h"
#include "pool.h"
#include "simd.h"

#include "train-parallel.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define OLMOE_X86 1
#endif

namespace olmoe {

namespace {

// One micro-kernel call: C tile [rows ≤ MR, cols ≤ NR] (+)= op(A) rows · B panel over kc summed indices.
struct Tile {
  const float* a;  // op(A) element (r, p) at a[r * a_row_step + p * a_k_step]
  size_t a_row_step, a_k_step;
  const float* b_panel;  // [kc][NR]
  size_t kc;
  int rows, cols;
  float* c;
  size_t ldc;
  bool add;  // C += product (later K blocks, or accumulate) instead of C = product
};

// dst[t * dst_stride + q] = src[q * src_stride + t] for a 16 × 16 block (packing B stored [N, K]).
using Transpose16 = void (*)(const float* src, size_t src_stride, float* dst, size_t dst_stride);

struct MicroKernel {
  int mr, nr;
  void (*tile)(const Tile&);
  Transpose16 transpose16;  // null: scalar copies
};

// ---------------------------------------------------------------- scalar: 4 × 8, plain loops
constexpr int kScalarMr = 4, kScalarNr = 8;
// AMX bf16 blocks (below), here for the packing's geometry on every architecture.
constexpr int kAmxMr = 32, kAmxNr = 64;

void tile_scalar(const Tile& t) {
  float acc[kScalarMr][kScalarNr] = {};
  for (size_t p = 0; p < t.kc; p++) {
    const float* a = t.a + p * t.a_k_step;
    const float* b = t.b_panel + p * kScalarNr;
    for (int r = 0; r < t.rows; r++)
      for (int j = 0; j < kScalarNr; j++) acc[r][j] += a[r * t.a_row_step] * b[j];
  }
  for (int r = 0; r < t.rows; r++)
    for (int j = 0; j < t.cols; j++) {
      float& out = t.c[r * t.ldc + j];
      out = t.add ? out + acc[r][j] : acc[r][j];
    }
}

#ifdef OLMOE_X86
// ---------------------------------------------------------------- AVX2 + FMA: 6 × 16 (12 accumulators)
#define AVX2 __attribute__((target("avx2,fma")))
constexpr int kAvx2Mr = 6, kAvx2Nr = 16;

AVX2 inline __m256i avx2_tail(int valid) {
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(valid), lanes);
}

template <int R, int V>
AVX2 void tile_avx2_fixed(const Tile& t) {
  __m256 acc[R][V];
  for (auto& row : acc)
    for (auto& v : row) v = _mm256_setzero_ps();
  const float* a = t.a;
  const float* b = t.b_panel;
  const size_t row_step = t.a_row_step, k_step = t.a_k_step;
  for (size_t p = 0; p < t.kc; p++, a += k_step, b += kAvx2Nr) {
    __m256 bv[V];
    for (int v = 0; v < V; v++) bv[v] = _mm256_loadu_ps(b + 8 * v);
    for (int r = 0; r < R; r++) {
      const __m256 av = _mm256_broadcast_ss(a + r * row_step);
      for (int v = 0; v < V; v++) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < V; v++) {
      float* out = t.c + r * t.ldc + 8 * v;
      const int valid = std::min(8, t.cols - 8 * v);
      if (valid <= 0) break;
      const __m256i mask = avx2_tail(valid);
      __m256 sum = acc[r][v];
      if (t.add) sum = _mm256_add_ps(_mm256_maskload_ps(out, mask), sum);
      _mm256_maskstore_ps(out, mask, sum);
    }
}

template <int R>
AVX2 void tile_avx2_rows(const Tile& t) {
  if (t.cols <= 8) tile_avx2_fixed<R, 1>(t);
  else tile_avx2_fixed<R, 2>(t);
}

AVX2 void tile_avx2(const Tile& t) {
  switch (t.rows) {
    case 1: return tile_avx2_rows<1>(t);
    case 2: return tile_avx2_rows<2>(t);
    case 3: return tile_avx2_rows<3>(t);
    case 4: return tile_avx2_rows<4>(t);
    case 5: return tile_avx2_rows<5>(t);
    default: return tile_avx2_rows<6>(t);
  }
}

// ---------------------------------------------------------------- AVX-512: 6 × 64 (24 accumulators)
// Per summed index: 4 loads of B, 6 broadcasts of A, 24 FMAs, so the two FMA pipes rather than the loads bound it.
#define AVX512 __attribute__((target("avx512f,avx2,fma")))
constexpr int kAvx512Mr = 6, kAvx512Nr = 64;

template <int R, int V>
AVX512 void tile_avx512_fixed(const Tile& t) {
  __m512 acc[R][V];
  for (auto& row : acc)
    for (auto& v : row) v = _mm512_setzero_ps();
  const float* a = t.a;
  const float* b = t.b_panel;
  const size_t row_step = t.a_row_step, k_step = t.a_k_step;
  for (size_t p = 0; p < t.kc; p++, a += k_step, b += kAvx512Nr) {
    __m512 bv[V];
    for (int v = 0; v < V; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
    for (int r = 0; r < R; r++) {
      const __m512 av = _mm512_set1_ps(a[r * row_step]);
      for (int v = 0; v < V; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  const int last = t.cols - 16 * (V - 1);  // 1..16 columns in the last vector
  for (int r = 0; r < R; r++)
    for (int v = 0; v < V; v++) {
      float* out = t.c + r * t.ldc + 16 * v;
      const __mmask16 mask = v < V - 1 ? __mmask16(0xffff) : __mmask16((1u << last) - 1);
      __m512 sum = acc[r][v];
      if (t.add) sum = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, out), sum);
      _mm512_mask_storeu_ps(out, mask, sum);
    }
}

template <int R>
AVX512 void tile_avx512_rows(const Tile& t) {
  switch ((t.cols + 15) / 16) {
    case 1: return tile_avx512_fixed<R, 1>(t);
    case 2: return tile_avx512_fixed<R, 2>(t);
    case 3: return tile_avx512_fixed<R, 3>(t);
    default: return tile_avx512_fixed<R, 4>(t);
  }
}

AVX512 void tile_avx512(const Tile& t) {
  switch (t.rows) {
    case 1: return tile_avx512_rows<1>(t);
    case 2: return tile_avx512_rows<2>(t);
    case 3: return tile_avx512_rows<3>(t);
    case 4: return tile_avx512_rows<4>(t);
    case 5: return tile_avx512_rows<5>(t);
    default: return tile_avx512_rows<6>(t);
  }
}
// Two rounds of in-lane shuffles and two of 128-bit-lane shuffles: rows → columns of 4 × 4 blocks, then the
// blocks into place.
AVX512 void transpose16_avx512(const float* src, size_t src_stride, float* dst, size_t dst_stride) {
  __m512 r[16], t[16];
  for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * src_stride);
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  // r[4i + c], 128-bit lane l: column 4l + c of rows 4i .. 4i + 3
  for (int i = 0; i < 4; i++) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  // column 4l + c gathers lane l of r[c], r[4 + c], r[8 + c], r[12 + c]
  for (int c = 0; c < 4; c++) {
    const __m512 low01 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44), high01 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);
    const __m512 low23 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44), high23 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
    _mm512_storeu_ps(dst + c * dst_stride, _mm512_shuffle_f32x4(low01, low23, 0x88));
    _mm512_storeu_ps(dst + (4 + c) * dst_stride, _mm512_shuffle_f32x4(low01, low23, 0xDD));
    _mm512_storeu_ps(dst + (8 + c) * dst_stride, _mm512_shuffle_f32x4(high01, high23, 0x88));
    _mm512_storeu_ps(dst + (12 + c) * dst_stride, _mm512_shuffle_f32x4(high01, high23, 0xDD));
  }
}

#include "train-gemm-bf16.inc"  // the bf16 kernels: vdpbf16ps, AMX tiles, their packing
#endif  // OLMOE_X86

// The micro-kernel of the instruction set the inference kernels chose at startup (simd_level, OLMOE_SIMD).
const MicroKernel& micro_kernel() {
  static const MicroKernel chosen = [] {
    const std::string level = simd_level();
#ifdef OLMOE_X86
    if (level == "avx512") return MicroKernel{kAvx512Mr, kAvx512Nr, tile_avx512, transpose16_avx512};
    if (level == "avx2") return MicroKernel{kAvx2Mr, kAvx2Nr, tile_avx2, nullptr};
#endif
    return MicroKernel{kScalarMr, kScalarNr, tile_scalar, nullptr};
  }();
  return chosen;
}

// How bf16 products run: on the AMX tile unit, with vdpbf16ps, or as float32 FMAs of rounded operands. AMX and
// vdpbf16ps at the avx512 level only, so OLMOE_SIMD=avx2 or scalar test the portable path on any machine.
enum class Bf16Path { Rounded, Pairs, Amx };

Bf16Path bf16_path() {
  static const Bf16Path chosen = [] {
#ifdef OLMOE_X86
    if (cpu().level == Simd::Avx512 && cpu().bf16 && amx_granted(AmxKind::Bf16)) return Bf16Path::Amx;
    if (cpu().level == Simd::Avx512 && cpu().bf16) return Bf16Path::Pairs;
#endif
    return Bf16Path::Rounded;
  }();
  return chosen;
}

// The tile shape of a product: AMX's 32 × 64 blocks for its bf16 products, else the SIMD level's micro-kernel.
const MicroKernel& kernel_for(const TrainGemmArgs& g) {
#ifdef OLMOE_X86
  static const MicroKernel amx{kAmxMr, kAmxNr, nullptr, transpose16_avx512};
  if (g.bf16 && bf16_path() == Bf16Path::Amx) return amx;
#endif
  return micro_kernel();
}

// ---------------------------------------------------------------- packing
// Summed indices per block: a B panel of 64 columns takes 64 KiB (128 measured slower). Even, so that a bf16 pair of
// summed indices never straddles two blocks.
constexpr size_t kMaxKc = 256;

// Columns [j0, j0 + NR) of op(B), summed indices [p0, p0 + kc), into panel [kc][NR]; columns past N are zeros.
void pack_b(const TrainGemmArgs& g, const MicroKernel& mk, size_t j0, size_t p0, size_t kc, float* panel) {
  const size_t nr = mk.nr;
  const size_t cols = std::min(nr, g.n - j0);
  if (cols < nr) std::fill(panel, panel + kc * nr, 0.0f);
  if (!g.trans_b) {  // B [K, N]: each summed index is a contiguous run of columns
    for (size_t p = 0; p < kc; p++) std::memcpy(panel + p * nr, g.b + (p0 + p) * g.b_stride() + j0, cols * sizeof(float));
    return;
  }
  // B [N, K]: a transpose, by blocks of 16 summed indices × 16 columns (in registers where the ISA allows)
  constexpr size_t kBlock = 16;
  for (size_t s = 0; s < kc; s += kBlock) {
    const size_t strip = std::min(kBlock, kc - s);
    for (size_t q = 0; q < cols; q += kBlock) {
      const float* src = g.b + (j0 + q) * g.b_stride() + p0 + s;
      float* dst = panel + s * nr + q;
      if (mk.transpose16 && strip == kBlock && q + kBlock <= cols) {
        mk.transpose16(src, g.b_stride(), dst, nr);
        continue;
      }
      for (size_t j = 0; j < std::min(kBlock, cols - q); j++)
        for (size_t p = 0; p < strip; p++) dst[p * nr + j] = src[j * g.b_stride() + p];
    }
  }
}

// bf16 products with vdpbf16ps or AMX: a float panel [kc][NR] as bf16 pairs [⌈kc/2⌉][NR][2] (an odd last index pairs
// with 0), then zero pairs up to `pairs` (AMX: whole tiles).
void pair_panel(const float* panel, size_t kc, size_t nr, uint16_t* out, size_t pairs) {
  std::fill(out + (kc + 1) / 2 * nr * 2, out + pairs * nr * 2, uint16_t{0});
#ifdef OLMOE_X86
  if (nr % 16 == 0) return pair_panel_avx512(panel, kc, nr, out);
#endif
  for (size_t q = 0; q < (kc + 1) / 2; q++)
    for (size_t j = 0; j < nr; j++) {
      out[(q * nr + j) * 2] = bf16_bits(panel[2 * q * nr + j]);
      out[(q * nr + j) * 2 + 1] = 2 * q + 1 < kc ? bf16_bits(panel[(2 * q + 1) * nr + j]) : 0;
    }
}

// A of a bf16 product, prepared once per product by the packing pass in items of kARows rows: rounded to bf16 in
// float32, dense in its stored layout (portable path), or as bf16 rows [M][K rounded up to even] (vdpbf16ps).
// AMX reads whole tiles: rows up to a multiple of 32, summed indices up to a multiple of 32, zero-padded.
constexpr size_t kARows = 64;
inline size_t round_up(size_t x, size_t to) { return (x + to - 1) / to * to; }
inline bool paired(const TrainGemmArgs& g) { return g.bf16 && bf16_path() != Bf16Path::Rounded; }
inline bool amx(const TrainGemmArgs& g) { return g.bf16 && bf16_path() == Bf16Path::Amx; }
// Packed A's row length in bf16 (paired paths) and its rows.
size_t a_ld(const TrainGemmArgs& g) { return amx(g) ? round_up(g.k, 32) : round_up(g.k, 2); }
size_t a_rows(const TrainGemmArgs& g) { return amx(g) ? round_up(g.m, kAmxMr) : paired(g) || !g.trans_a ? g.m : g.k; }
size_t a_items(const TrainGemmArgs& g) { return g.bf16 ? (a_rows(g) + kARows - 1) / kARows : 0; }
size_t a_floats(const TrainGemmArgs& g) { return !g.bf16 ? 0 : paired(g) ? (a_rows(g) * a_ld(g) + 1) / 2 : g.m * g.k; }

void prepare_a(const TrainGemmArgs& g, size_t item, float* dst) {
  const size_t r0 = item * kARows, lda = g.a_stride();
  size_t r1 = std::min(a_rows(g), r0 + kARows);
  if (!paired(g)) {
    const size_t width = g.trans_a ? g.m : g.k;
    for (size_t r = r0; r < r1; r++)
      for (size_t c = 0; c < width; c++) dst[r * width + c] = round_bf16(g.a[r * lda + c]);
    return;
  }
  uint16_t* out = reinterpret_cast<uint16_t*>(dst);
  const size_t kp = a_ld(g), rows = std::min(r1, g.m);
  for (size_t r = std::max(r0, g.m); r < r1; r++) std::fill(out + r * kp, out + (r + 1) * kp, uint16_t{0});  // AMX row padding
  if (r0 >= rows) return;
  r1 = rows;
#ifdef OLMOE_X86
  if (g.trans_a) return pair_columns_avx512(g.a, lda, g.k, r0, r1, kp, reinterpret_cast<uint32_t*>(out));  // pads k itself
  for (size_t r = r0; r < r1; r++) to_bf16_avx512(g.a + r * lda, g.k, out + r * kp);
#else
  if (g.trans_a) {  // A [K, M]: read rows of A contiguously, write down the packed rows
    for (size_t p = 0; p < g.k; p++)
      for (size_t r = r0; r < r1; r++) out[r * kp + p] = bf16_bits(g.a[p * lda + r]);
  } else {
    for (size_t r = r0; r < r1; r++)
      for (size_t p = 0; p < g.k; p++) out[r * kp + p] = bf16_bits(g.a[r * lda + p]);
  }
#endif
  for (size_t r = r0; r < r1; r++) std::fill(out + r * kp + g.k, out + (r + 1) * kp, uint16_t{0});
}

// ---------------------------------------------------------------- driver
// Below this many multiply-adds (≈ 2.5 µs on one core) the product runs on the calling thread. Measured with
// back-to-back calls on the shared 2-core machine: 2 threads no faster at 131k (32 × 64 × 64), and up to 2×
// slower on small shapes above it while the other core was busy; an idle machine may gain below this.
constexpr size_t kSerialWork = size_t{1} << 18;
// Largest blocks of C per work item, in panels: 32 × 6 rows of A over 256 summed indices = 192 KiB stay in L2.
constexpr size_t kMaxRowPanels = 32, kMaxColPanels = 8;

struct Plan {
  size_t kc_blocks, m_panels, n_panels, row_blocks, col_blocks;
  bool serial;
};

// `wanted`: blocks of C to aim for (enough for the pool's dynamic claims to even out a busy core); this changes who
// computes a tile, never how.
Plan plan(const TrainGemmArgs& g, const MicroKernel& mk, size_t wanted) {
  Plan p{};
  p.kc_blocks = (g.k + kMaxKc - 1) / kMaxKc;
  p.m_panels = (g.m + mk.mr - 1) / mk.mr;
  p.n_panels = (g.n + mk.nr - 1) / mk.nr;
  p.row_blocks = (p.m_panels + kMaxRowPanels - 1) / kMaxRowPanels;
  p.col_blocks = (p.n_panels + kMaxColPanels - 1) / kMaxColPanels;
  while (p.row_blocks * p.col_blocks < wanted) {
    if (p.n_panels >= 2 * (p.col_blocks + 1)) p.col_blocks++;
    else if (p.m_panels >= 4 * (p.row_blocks + 1)) p.row_blocks++;
    else break;
  }
  return p;
}

// Split [0, count) into `parts` near-equal ranges; the index-th.
inline std::pair<size_t, size_t> part(size_t count, size_t parts, size_t index) {
  return {count * index / parts, count * (index + 1) / parts};
}

// op(B) packed block after block of KC summed indices: block b starts at n_panels · NR · b · KC and holds its
// panels [kc][NR] one after the other (bf16 pairs take half of that room). A float32 product reads A in place in
// either layout: the micro-kernel broadcasts one element per row and summed index, so packing A would only move it
// (measured: equal or slower on every shape of bench/train-gemm.mjs, single thread, and a transposing copy for A
// stored [M, K]); a bf16 product packs A once (rounded, or as pair rows for vdpbf16ps and AMX).
struct Operands {
  const TrainGemmArgs& g;
  const MicroKernel& mk;
  float* b_packed;
  size_t n_panels;
  const float* a_rounded = nullptr;   // bf16, portable path: A rounded, dense in its stored layout
  const uint16_t* a_pairs = nullptr;  // bf16, vdpbf16ps or AMX: A as bf16 rows [M (AMX: padded)][a_ld]
  // A K block's panel holds kc summed indices (AMX: padded to whole tiles of 32).
  size_t kc_stored(size_t kc) const { return amx(g) ? round_up(kc, 32) : kc; }
  float* b_panel(size_t p0, size_t kc, size_t j) const { return b_packed + n_panels * mk.nr * p0 + j * mk.nr * kc_stored(kc); }
  // The micro-kernel call for row panel i, column panel j and K block [p0, p0 + kc).
  Tile tile_for(size_t p0, size_t kc, size_t i, size_t j) const {
    const size_t mr = mk.mr, nr = mk.nr, row = i * mr, col = j * nr;
    const int rows = static_cast<int>(std::min(mr, g.m - row)), cols = static_cast<int>(std::min(nr, g.n - col));
    const bool add = g.accumulate || p0 > 0;
    float* c = g.c + row * g.c_stride() + col;
    const float* a = a_rounded ? a_rounded : g.a;
    const size_t lda = a_rounded ? (g.trans_a ? g.m : g.k) : g.a_stride();
    if (g.trans_a) return {a + p0 * lda + row, 1, lda, b_panel(p0, kc, j), kc, rows, cols, c, g.c_stride(), add};  // A [K, M]
    return {a + row * lda + p0, lda, 1, b_panel(p0, kc, j), kc, rows, cols, c, g.c_stride(), add};                 // A [M, K]
  }
  // Pack op(B)'s panel j of K block [p0, p0 + kc), rounded or paired for a bf16 product.
  void pack(size_t p0, size_t kc, size_t j) const {
    float* panel = b_panel(p0, kc, j);
    if (!a_pairs) {
      pack_b(g, mk, j * mk.nr, p0, kc, panel);
      if (g.bf16)
        for (size_t i = 0; i < kc * mk.nr; i++) panel[i] = round_bf16(panel[i]);
      return;
    }
    thread_local std::vector<float> buffer;  // the float panel before pairing (pairs take no more room than floats)
    float* floats = aligned_scratch(buffer, kc * mk.nr);
    pack_b(g, mk, j * mk.nr, p0, kc, floats);
    pair_panel(floats, kc, mk.nr, reinterpret_cast<uint16_t*>(panel), kc_stored(kc + (kc & 1)) / 2);
  }
  void multiply(size_t p0, size_t kc, size_t i, size_t j) const {
#ifdef OLMOE_X86
    if (a_pairs) {
      const Tile t = tile_for(p0, kc, i, j);
      const size_t ld = a_ld(g);
      const Tile16 pairs{a_pairs + i * mk.mr * ld + p0, ld, reinterpret_cast<const uint16_t*>(t.b_panel), kc_stored(kc + (kc & 1)) / 2, t.rows, t.cols, t.c, t.ldc, t.add};
      return amx(g) ? tile_amx(pairs) : tile_bf16(pairs);
    }
#endif
    mk.tile(tile_for(p0, kc, i, j));
  }
};

// One block of C, all of K: per K block, each B panel meets every A panel of the block while it sits in cache.
void multiply_block(const Plan& p, const Operands& ops, size_t item) {
  const auto [i0, i1] = part(p.m_panels, p.row_blocks, item / p.col_blocks);
  const auto [j0, j1] = part(p.n_panels, p.col_blocks, item % p.col_blocks);
  for (size_t p0 = 0; p0 < ops.g.k; p0 += kMaxKc) {
    const size_t kc = std::min(kMaxKc, ops.g.k - p0);
    for (size_t j = j0; j < j1; j++)
      for (size_t i = i0; i < i1; i++) ops.multiply(p0, kc, i, j);
  }
}

// Work items of a batch: (product, item) pairs, claimed one at a time by whichever thread runs.
struct Item {
  uint32_t product, item;
};

void run_items(bool serial, const std::vector<Item>& items, const std::function<void(const Item&)>& fn) {
  if (serial) {
    for (const Item& item : items) fn(item);
    return;
  }
  parallel_items(items.size(), [&](size_t i) { fn(items[i]); });
}

bool degenerate(const TrainGemmArgs& g) {
  if (g.m == 0 || g.n == 0) return true;
  if (g.k > 0) return false;
  if (!g.accumulate)
    for (size_t i = 0; i < g.m; i++) std::fill(g.c + i * g.c_stride(), g.c + i * g.c_stride() + g.n, 0.0f);
  return true;
}

}  // namespace

// One parallel pass packs every op(B) (and a bf16 product's A), one more computes every block of C: two pool barriers
// for the whole batch, which matters when another process holds a core and a barrier waits for its time slice.
void train_gemm_batch(const TrainGemmArgs* products, size_t count) {
  std::vector<size_t> live;
  size_t work = 0;
  bool serial = pool().threads() == 1;
  for (size_t i = 0; i < count; i++) {
    if (degenerate(products[i])) continue;
    live.push_back(i);
    work += products[i].m * products[i].n * products[i].k;
    serial = serial || products[i].serial;
  }
  if (live.empty()) return;
  serial = serial || work < kSerialWork;
  const size_t wanted = serial ? 1 : std::max<size_t>(1, 4 * static_cast<size_t>(pool().threads()) / live.size());
  std::vector<Plan> plans;
  std::vector<Operands> operands;
  std::vector<size_t> offsets, a_offsets;
  size_t packed = 0, a_packed = 0;
  const auto aligned = [](size_t floats) { return (floats + 15) / 16 * 16; };  // each product's scratch 64-byte aligned
  for (size_t i : live) {
    const TrainGemmArgs& g = products[i];
    const MicroKernel& mk = kernel_for(g);
    plans.push_back(plan(g, mk, wanted));
    offsets.push_back(packed);
    packed += aligned(plans.back().n_panels * mk.nr * (amx(g) ? round_up(g.k, 32) : g.k));
    a_offsets.push_back(a_packed);
    a_packed += aligned(a_floats(g));
  }
  thread_local std::vector<float> b_buffer, a_buffer;  // grow-only, per calling thread; workers use them only within a call
  float* b = aligned_scratch(b_buffer, packed);
  float* a = a_packed ? aligned_scratch(a_buffer, a_packed) : nullptr;
  std::vector<Item> pack_items, block_items;
  for (size_t x = 0; x < live.size(); x++) {
    const TrainGemmArgs& g = products[live[x]];
    Operands ops{g, kernel_for(g), b + offsets[x], plans[x].n_panels};
    if (paired(g)) ops.a_pairs = reinterpret_cast<const uint16_t*>(a + a_offsets[x]);
    else if (g.bf16) ops.a_rounded = a + a_offsets[x];
    operands.push_back(ops);
    const size_t b_items = plans[x].kc_blocks * plans[x].n_panels;
    for (size_t item = 0; item < b_items + a_items(g); item++) pack_items.push_back({uint32_t(x), uint32_t(item)});
    for (size_t item = 0; item < plans[x].row_blocks * plans[x].col_blocks; item++) block_items.push_back({uint32_t(x), uint32_t(item)});
  }
  run_items(serial, pack_items, [&](const Item& it) {
    const Plan& p = plans[it.product];
    const Operands& ops = operands[it.product];
    const size_t b_items = p.kc_blocks * p.n_panels;
    if (it.item >= b_items) return prepare_a(ops.g, it.item - b_items, a + a_offsets[it.product]);
    const size_t p0 = it.item / p.n_panels * kMaxKc, kc = std::min(kMaxKc, ops.g.k - p0), j = it.item % p.n_panels;
    ops.pack(p0, kc, j);
  });
  run_items(serial, block_items, [&](const Item& it) { multiply_block(plans[it.product], operands[it.product], it.item); });
}

// One product: on the pool as a batch of one, or here on the calling thread without the batch's bookkeeping (the
// attention kernel issues thousands of small serial products per layer).
void train_gemm(const TrainGemmArgs& g) {
  if (degenerate(g)) return;
  if (!(g.serial || pool().threads() == 1 || g.m * g.n * g.k < kSerialWork)) return train_gemm_batch(&g, 1);
  const MicroKernel& mk = kernel_for(g);
  const Plan p = plan(g, mk, 1);
  thread_local std::vector<float> b_buffer, a_buffer;
  Operands ops{g, mk, aligned_scratch(b_buffer, p.n_panels * mk.nr * (amx(g) ? round_up(g.k, 32) : g.k)), p.n_panels};
  if (g.bf16) {
    float* a = aligned_scratch(a_buffer, a_floats(g));
    for (size_t item = 0; item < a_items(g); item++) prepare_a(g, item, a);
    if (paired(g)) ops.a_pairs = reinterpret_cast<const uint16_t*>(a);
    else ops.a_rounded = a;
  }
  for (size_t item = 0; item < p.kc_blocks * p.n_panels; item++) {
    const size_t p0 = item / p.n_panels * kMaxKc, kc = std::min(kMaxKc, g.k - p0), j = item % p.n_panels;
    ops.pack(p0, kc, j);
  }
  for (size_t item = 0; item < p.row_blocks * p.col_blocks; item++) multiply_block(p, ops, item);
}

const char* train_gemm_bf16_kernel() {
  switch (bf16_path()) {
    case Bf16Path::Amx: return "amx-bf16";
    case Bf16Path::Pairs: return "avx512-bf16";
    default: return "fp32-fma";
  }
}

namespace {
std::atomic<float> bf16_sink{0};
}  // namespace

double bf16_peak(int repeats) {
#ifdef OLMOE_X86
  const Bf16Path path = bf16_path();
  if (path == Bf16Path::Rounded) return 0;
  const size_t parts = 2 * static_cast<size_t>(pool().threads());
  const size_t iterations = path == Bf16Path::Amx ? 200000 : 1000000;
  const double flops = path == Bf16Path::Amx ? 4.0 * 16 * 16 * 32 * 2 : 12.0 * 64;  // per iteration
  const auto now = [] { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); };
  double best = 0;
  for (int r = 0; r < repeats; r++) {
    const double started = now();
    pool().parallel_for(parts, [&](size_t p0, size_t p1) {
      for (size_t p = p0; p < p1; p++) bf16_sink.store(path == Bf16Path::Amx ? amx_chains(iterations) : dpbf16_chains(iterations), std::memory_order_relaxed);
    });
    best = std::max(best, flops * iterations * parts / (now() - started));
  }
  return best;
#else
  return 0;
#endif
}

}  // namespace olmoe
