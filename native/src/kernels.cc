// Kernels with runtime dispatch: AVX-512 (F+BW+VL) → AVX2+FMA+F16C → scalar (simd.h). Each instruction set provides
// four primitives (widen a weight row, dot, fused widen-dot, a 4×4 register-blocked dot); the GEMM, expert and
// attention drivers are written once on top of them. Quantized weights go through the integer kernels of qdot.h /
// qgemm.h instead, on activations rounded to q8 blocks (q8.h), at every token count (decode and prefill); only the
// scalar level keeps float tiles for many tokens, on activations with the same rounding, so that every path
// computes the reference backend's quantized matmul.
#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <cstdint>
#include <string>
#include <vector>

#include "pool.h"
#include "quant.h"
#include "half.h"
#include "gemm.h"
#include "q8.h"
#include "qdot.h"
#include "qgemm.h"
#include "simd.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define OLMOE_X86 1
#endif

namespace olmoe {

namespace {

// ---------------------------------------------------------------- scalar
inline float bf16_to_f32(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}


inline float widen_one(const void* w, DType dtype, size_t i) {
  switch (dtype) {
    case DType::F32: return static_cast<const float*>(w)[i];
    case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(w)[i]);
    default: return f16_to_f32(static_cast<const uint16_t*>(w)[i]);
  }
}

void widen_scalar(const void* src, DType dtype, size_t n, float* dst) {
  for (size_t i = 0; i < n; i++) dst[i] = widen_one(src, dtype, i);
}

float dot_scalar(const float* a, const float* b, size_t n) {
  float sum = 0;
  for (size_t i = 0; i < n; i++) sum += a[i] * b[i];
  return sum;
}

float dot_widen_scalar(const float* x, const void* w, DType dtype, size_t n) {
  float sum = 0;
  for (size_t i = 0; i < n; i++) sum += x[i] * widen_one(w, dtype, i);
  return sum;
}

void axpy_scalar(float a, const float* x, float* y, size_t n) {
  for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

// Tile kernels: result[r][t] = Σ_i Xt[i][t] · w[r][i] for `rows` weight rows and `vectors` × lanes tokens, with
// the tokens (columns of the transposed activations Xt, row stride npad) in the vector lanes and each weight
// broadcast: rows × vectors accumulators, no transposition of the weights.
void tile_scalar(const float* Xt, size_t npad, size_t in, const float* const* w, int rows, int vectors, float* result, bool accumulate) {
  const int tokens = vectors * 8;
  for (int r = 0; r < rows; r++)
    for (int t = 0; t < tokens; t++) {
      float sum = accumulate ? result[r * 64 + t] : 0.0f;
      for (size_t i = 0; i < in; i++) sum += Xt[i * npad + t] * w[r][i];
      result[r * 64 + t] = sum;
    }
}

#ifdef OLMOE_X86
// Decode streams float weight rows one after another (each f16 row of 2,048 values is one 4 KiB page, where the
// hardware prefetchers stop and start over); a software prefetch this far ahead in the stream, running on into the
// next row, measured 9.8 → 10.7 tok/s for full-size F16 decode (1536–2048 best; 4096 no better, 8192 slower).
constexpr size_t kFloatPrefetchAhead = 2048;

// ---------------------------------------------------------------- AVX2 + FMA + F16C
#define AVX2 __attribute__((target("avx2,fma,f16c")))

AVX2 inline __m256 load8(const void* w, DType dtype, size_t i) {
  if (dtype == DType::F32) return _mm256_loadu_ps(static_cast<const float*>(w) + i);
  __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(w) + i));
  if (dtype == DType::F16) return _mm256_cvtph_ps(half);
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(half), 16));
}

AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

AVX2 void widen_avx2(const void* src, DType dtype, size_t n, float* dst) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8(src, dtype, i));
  for (; i < n; i++) dst[i] = widen_one(src, dtype, i);
}

AVX2 float dot_widen_avx2(const float* x, const void* w, DType dtype, size_t n) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  size_t i = 0;
  const size_t element = dtype == DType::F32 ? 4 : 2;
  const char* ahead = static_cast<const char*>(w) + kFloatPrefetchAhead;
  for (; i + 16 <= n; i += 16) {
    _mm_prefetch(ahead + i * element, _MM_HINT_T0);  // 32 or 64 bytes per iteration
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8(w, dtype, i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load8(w, dtype, i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load8(w, dtype, i), acc0);
  float sum = hsum8(_mm256_add_ps(acc0, acc1));
  for (; i < n; i++) sum += x[i] * widen_one(w, dtype, i);
  return sum;
}

AVX2 float dot_avx2(const float* a, const float* b, size_t n) { return dot_widen_avx2(a, b, DType::F32, n); }

AVX2 void axpy_avx2(float a, const float* x, float* y, size_t n) {
  const __m256 scale = _mm256_set1_ps(a);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(scale, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += a * x[i];
}

template <int R, int V>
AVX2 void tile_avx2_fixed(const float* Xt, size_t npad, size_t in, const float* const* w, float* result, bool accumulate) {
  __m256 acc[R][V];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < V; v++) acc[r][v] = accumulate ? _mm256_loadu_ps(result + r * 64 + 8 * v) : _mm256_setzero_ps();
  for (size_t i = 0; i < in; i++) {
    __m256 x[V];
    for (int v = 0; v < V; v++) x[v] = _mm256_loadu_ps(Xt + i * npad + 8 * v);
    for (int r = 0; r < R; r++) {
      const __m256 b = _mm256_broadcast_ss(w[r] + i);
      for (int v = 0; v < V; v++) acc[r][v] = _mm256_fmadd_ps(x[v], b, acc[r][v]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < V; v++) _mm256_storeu_ps(result + r * 64 + 8 * v, acc[r][v]);
}

template <int R>
AVX2 void tile_avx2_rows(const float* Xt, size_t npad, size_t in, const float* const* w, int vectors, float* result, bool accumulate) {
  if (vectors == 1) tile_avx2_fixed<R, 1>(Xt, npad, in, w, result, accumulate);
  else tile_avx2_fixed<R, 2>(Xt, npad, in, w, result, accumulate);
}

AVX2 void tile_avx2(const float* Xt, size_t npad, size_t in, const float* const* w, int rows, int vectors, float* result, bool accumulate) {
  switch (rows) {
    case 1: return tile_avx2_rows<1>(Xt, npad, in, w, vectors, result, accumulate);
    case 2: return tile_avx2_rows<2>(Xt, npad, in, w, vectors, result, accumulate);
    case 3: return tile_avx2_rows<3>(Xt, npad, in, w, vectors, result, accumulate);
    default: return tile_avx2_rows<4>(Xt, npad, in, w, vectors, result, accumulate);
  }
}

// ---------------------------------------------------------------- AVX-512 (F, BW, VL)
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

AVX512 inline __m512 load16(const void* w, DType dtype, size_t i, __mmask16 mask = 0xffff) {
  if (dtype == DType::F32) return _mm512_maskz_loadu_ps(mask, static_cast<const float*>(w) + i);
  __m256i half = _mm256_maskz_loadu_epi16(mask, static_cast<const uint16_t*>(w) + i);
  if (dtype == DType::F16) return _mm512_cvtph_ps(half);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(half), 16));
}

AVX512 inline __mmask16 tail_mask(size_t remaining) { return static_cast<__mmask16>((1u << remaining) - 1); }

AVX512 void widen_avx512(const void* src, DType dtype, size_t n, float* dst) {
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, load16(src, dtype, i));
  if (i < n) _mm512_mask_storeu_ps(dst + i, tail_mask(n - i), load16(src, dtype, i, tail_mask(n - i)));
}

AVX512 float dot_widen_avx512(const float* x, const void* w, DType dtype, size_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps(), acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
  size_t i = 0;
  const size_t element = dtype == DType::F32 ? 4 : 2;  // 64 values: `element` cache lines per iteration
  const char* ahead = static_cast<const char*>(w) + kFloatPrefetchAhead;
  for (; i + 64 <= n; i += 64) {
    for (size_t line = 0; line < element; line++) _mm_prefetch(ahead + i * element + 64 * line, _MM_HINT_T0);
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load16(w, dtype, i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), load16(w, dtype, i + 16), acc1);
    acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 32), load16(w, dtype, i + 32), acc2);
    acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 48), load16(w, dtype, i + 48), acc3);
  }
  for (; i + 16 <= n; i += 16) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load16(w, dtype, i), acc0);
  if (i < n) {
    __mmask16 mask = tail_mask(n - i);
    acc1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mask, x + i), load16(w, dtype, i, mask), acc1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

AVX512 float dot_avx512(const float* a, const float* b, size_t n) { return dot_widen_avx512(a, b, DType::F32, n); }

// R rows × N tokens (N ≤ 4) of float weights: each 16-value chunk of a row is widened once for the N tokens, each
// token's chunk loaded once for the R rows (R·N accumulators). The tokens come packed chunk by chunk (`xp`:
// [chunks][N][16], zero past `in`), so one pointer walks them all. The tile path puts tokens in vector lanes and
// broadcasts every weight value: for a few tokens most lanes are padding and the broadcasts bound it.
template <int R, int N, DType D, bool P>
AVX512 void few_tokens_fixed(const float* xp, size_t in, const char* w, size_t stride, float* out, size_t rs, size_t ts) {
  // Unrolled by pragma: GCC 12 otherwise unrolls these loops too late to keep the accumulator array in registers,
  // and stored all of it to the stack in every iteration.
  __m512 acc[R * N];
#pragma GCC unroll 32
  for (int k = 0; k < R * N; k++) acc[k] = _mm512_setzero_ps();
  constexpr size_t element = D == DType::F32 ? 4 : 2;
  for (size_t i = 0; i < in; i += 16, xp += 16 * N) {
    const __mmask16 mask = in - i >= 16 ? __mmask16(0xffff) : tail_mask(in - i);
    __m512 wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; r++) {
      if (P) _mm_prefetch(w + r * stride + i * element + kFloatPrefetchAhead, _MM_HINT_T0);  // twice per line for f16: no branch
      wv[r] = load16(w + r * stride, D, i, mask);
    }
#pragma GCC unroll 8
    for (int t = 0; t < N; t++) {
      const __m512 x = _mm512_loadu_ps(xp + 16 * t);
#pragma GCC unroll 8
      for (int r = 0; r < R; r++) acc[r * N + t] = _mm512_fmadd_ps(wv[r], x, acc[r * N + t]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; r++)
#pragma GCC unroll 8
    for (int t = 0; t < N; t++) out[r * rs + t * ts] = _mm512_reduce_add_ps(acc[r * N + t]);
}

// Rows [r0, r1) for N ≤ 4 tokens: 4 rows at a time (≤ 16 accumulators), then single rows. One token (decode) takes
// its 4 rows from 4 runs of consecutive rows, four sequential streams as qdot-x86.h's rows32: on an AMD EPYC (Zen 5)
// one stream per thread (dot_widen row after row, each f16 row a 4 KiB page) read the f16 expert layer of decode in
// 2.0-2.4 ms, four streams in 1.37-1.48 ms (bench/native/q4-bench.cc 2, 2 threads), and one thread in cache went
// from 28 to 37.5 G weights/s.
template <int N, DType D, bool P>
AVX512 void few_tokens_rows(const float* xp, size_t in, const void* W, size_t r0, size_t r1, float* out, size_t rs, size_t ts) {
  constexpr int R = 4;
  const size_t stride = row_bytes(D, in);
  const char* w = static_cast<const char*>(W);
  size_t r = r0;
  if (N == 1 && r1 - r0 >= kFewTokensMinRows) {
    const size_t run = (r1 - r0) / R;
    for (size_t i = 0; i < run; i++) few_tokens_fixed<R, N, D, P>(xp, in, w + (r0 + i) * stride, run * stride, out + (r0 + i) * rs, run * rs, ts);
    r = r0 + R * run;
  }
  for (; r + R <= r1; r += R) few_tokens_fixed<R, N, D, P>(xp, in, w + r * stride, stride, out + r * rs, rs, ts);
  for (; r < r1; r++) few_tokens_fixed<1, N, D, P>(xp, in, w + r * stride, stride, out + r * rs, rs, ts);
}

// One token streams its rows with software prefetch where stream_prefetch() says so (simd.h); more tokens prefetch.
template <DType D>
AVX512 void few_tokens_dtype(const float* xp, size_t n, size_t in, const void* W, size_t r0, size_t r1, float* out, size_t rs, size_t ts) {
  switch (n) {
    case 1: return stream_prefetch() ? few_tokens_rows<1, D, true>(xp, in, W, r0, r1, out, rs, ts) : few_tokens_rows<1, D, false>(xp, in, W, r0, r1, out, rs, ts);
    case 2: return few_tokens_rows<2, D, true>(xp, in, W, r0, r1, out, rs, ts);
    case 3: return few_tokens_rows<3, D, true>(xp, in, W, r0, r1, out, rs, ts);
    default: return few_tokens_rows<4, D, true>(xp, in, W, r0, r1, out, rs, ts);
  }
}

// gemm_dot for 2 or more tokens of float weights (f32, f16, bf16), in groups of up to 4 tokens, each group packed
// chunk by chunk first (a few KB per token: the rows of a work item are many times that). Groups of 4 keep a group's
// activations in L1 beside the rows (2,048 inputs: 32 KiB); 8 at once ran from L2 and were slower (58 against 90
// GFLOP/s, one thread, f16 rows in cache), so 8 tokens read each row twice, the second time from cache.
constexpr size_t kFewGroup = 4;
AVX512 void few_tokens_avx512(const float* X, size_t n, size_t in, const void* W, DType dtype, size_t r0, size_t r1, float* out, size_t rs, size_t ts) {
  thread_local std::vector<float> packed;
  const size_t chunks = (in + 15) / 16;
  for (size_t t = 0; t < n; t += kFewGroup) {
    const size_t group = std::min<size_t>(kFewGroup, n - t);
    float* xp = scratch(packed, chunks * group * 16);
    for (size_t c = 0; c < chunks; c++) {
      const size_t length = std::min<size_t>(16, in - 16 * c);
      for (size_t j = 0; j < group; j++) {
        float* dst = xp + (c * group + j) * 16;
        std::memcpy(dst, X + (t + j) * in + 16 * c, length * sizeof(float));
        std::fill(dst + length, dst + 16, 0.0f);
      }
    }
    float* o = out + t * ts;
    if (dtype == DType::F16) few_tokens_dtype<DType::F16>(xp, group, in, W, r0, r1, o, rs, ts);
    else if (dtype == DType::BF16) few_tokens_dtype<DType::BF16>(xp, group, in, W, r0, r1, o, rs, ts);
    else few_tokens_dtype<DType::F32>(xp, group, in, W, r0, r1, o, rs, ts);
  }
}

AVX512 void axpy_avx512(float a, const float* x, float* y, size_t n) {
  const __m512 scale = _mm512_set1_ps(a);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(scale, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
  if (i < n) {
    const __mmask16 mask = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, mask, _mm512_fmadd_ps(scale, _mm512_maskz_loadu_ps(mask, x + i), _mm512_maskz_loadu_ps(mask, y + i)));
  }
}

// Up to 6 rows × 4 vectors of 16 tokens: 24 zmm accumulators, 4 loads and 6 broadcasts per 24 FMAs.
template <int R, int V>
AVX512 void tile_avx512_fixed(const float* Xt, size_t npad, size_t in, const float* const* w, float* result, bool accumulate) {
  __m512 acc[R][V];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < V; v++) acc[r][v] = accumulate ? _mm512_loadu_ps(result + r * 64 + 16 * v) : _mm512_setzero_ps();
  for (size_t i = 0; i < in; i++) {
    __m512 x[V];
    for (int v = 0; v < V; v++) x[v] = _mm512_loadu_ps(Xt + i * npad + 16 * v);
    for (int r = 0; r < R; r++) {
      const __m512 b = _mm512_set1_ps(w[r][i]);
      for (int v = 0; v < V; v++) acc[r][v] = _mm512_fmadd_ps(x[v], b, acc[r][v]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < V; v++) _mm512_storeu_ps(result + r * 64 + 16 * v, acc[r][v]);
}

template <int R>
AVX512 void tile_avx512_rows(const float* Xt, size_t npad, size_t in, const float* const* w, int vectors, float* result, bool accumulate) {
  switch (vectors) {
    case 1: return tile_avx512_fixed<R, 1>(Xt, npad, in, w, result, accumulate);
    case 2: return tile_avx512_fixed<R, 2>(Xt, npad, in, w, result, accumulate);
    case 3: return tile_avx512_fixed<R, 3>(Xt, npad, in, w, result, accumulate);
    default: return tile_avx512_fixed<R, 4>(Xt, npad, in, w, result, accumulate);
  }
}

AVX512 void tile_avx512(const float* Xt, size_t npad, size_t in, const float* const* w, int rows, int vectors, float* result, bool accumulate) {
  switch (rows) {
    case 1: return tile_avx512_rows<1>(Xt, npad, in, w, vectors, result, accumulate);
    case 2: return tile_avx512_rows<2>(Xt, npad, in, w, vectors, result, accumulate);
    case 3: return tile_avx512_rows<3>(Xt, npad, in, w, vectors, result, accumulate);
    case 4: return tile_avx512_rows<4>(Xt, npad, in, w, vectors, result, accumulate);
    case 5: return tile_avx512_rows<5>(Xt, npad, in, w, vectors, result, accumulate);
    default: return tile_avx512_rows<6>(Xt, npad, in, w, vectors, result, accumulate);
  }
}
#endif  // OLMOE_X86

Kernels choose_kernels() {
#ifdef OLMOE_X86
  if (cpu().level == Simd::Avx512) return {"avx512", widen_avx512, dot_avx512, dot_widen_avx512, axpy_avx512, tile_avx512, 6, 16, 64, few_tokens_avx512};
  if (cpu().level == Simd::Avx2) return {"avx2", widen_avx2, dot_avx2, dot_widen_avx2, axpy_avx2, tile_avx2, 4, 8, 16, nullptr};
#endif
  return {"scalar", widen_scalar, dot_scalar, dot_widen_scalar, axpy_scalar, tile_scalar, 4, 8, 64, nullptr};
}

}  // namespace

const Kernels& kernels() {
  static const Kernels chosen = choose_kernels();
  return chosen;
}

// Rows widened together: a whole work item (kRowBlock), so that each token block of the transposed activations is
// read from L3 once per item rather than once per 24 rows (48 × 2048 floats = 384 KiB beside a 512 KiB token block
// in L2; full-size F16, 512 tokens: attention projections 1.49 → 1.37 s, experts 4.57 → 4.30 s per forward).
constexpr size_t kRowSub = kRowBlock;
// Features per slice of the tiles (gemm_tiles): 128 × 64 tokens of activations = 32 KiB, within L1.
constexpr size_t kFeatureSlice = 128;

// Widen or dequantize n values of a weight row.
void widen_any(const Kernels& k, const void* src, DType dtype, size_t n, float* dst) {
  if (is_quantized(dtype)) dequantize_row(dtype, static_cast<const uint8_t*>(src), n, dst);
  else k.widen(src, dtype, n, dst);
}

void widen_row(DType dtype, const void* src, size_t n, float* dst) { widen_any(kernels(), src, dtype, n, dst); }

const char* simd_level() { return kernels().name; }

size_t min_tile_tokens(DType dtype) {
  if (integer_gemm(dtype)) return SIZE_MAX;  // integer dot products at any token count (qgemm.h)
  if (is_quantized(dtype)) return kMinTileTokensQuantized;
  return kernels().few_tokens ? kMinTileTokensFew : kMinTileTokens;
}

void transpose_tokens(const float* X, size_t x_stride, size_t n, size_t in, float* Xt, size_t npad) {
  constexpr size_t kChunk = 16;
  for (size_t tb = 0; tb < npad; tb += kTokenBlock) {
    const size_t width = block_width(npad, tb / kTokenBlock);
    float* block = Xt + tb * in;
    for (size_t i0 = 0; i0 < in; i0 += kChunk) {
      const size_t i1 = std::min(in, i0 + kChunk);
      for (size_t t = 0; t < width; t++) {
        const float* row = X + (tb + t) * x_stride;
        const bool real = tb + t < n;
        for (size_t i = i0; i < i1; i++) block[i * width + t] = real ? row[i] : 0.0f;
      }
    }
  }
}

const uint8_t* quantize_rows(DType dtype, const float* X, size_t n, size_t in, std::vector<uint8_t>& buffer) {
  const size_t stride = q8_row_bytes(dtype, in);
  uint8_t* Xq = scratch(buffer, n * stride);
  for (size_t j = 0; j < n; j++) quantize_q8(dtype, X + j * in, in, Xq + j * stride);
  return Xq;
}

const float* rounded_rows(DType dtype, const float* X, size_t n, size_t in, std::vector<float>& buffer) {
  if (!is_quantized(dtype)) return X;
  float* copy = scratch(buffer, n * in);
  std::memcpy(copy, X, n * in * sizeof(float));
  for (size_t j = 0; j < n; j++) round_to_q8(dtype, copy + j * in, in, 1);
  return copy;
}

void gemm_qdot(const uint8_t* Xq, size_t act_stride, size_t n, size_t in, const void* W, DType dtype, size_t r0, size_t r1, float* out, size_t rs,
               size_t ts) {
  const size_t bytes_per_row = row_bytes(dtype, in);
  qgemm_rows({dtype, Xq, act_stride, n, static_cast<const uint8_t*>(W) + r0 * bytes_per_row, bytes_per_row, r1 - r0, in, out + r0 * rs, rs, ts});
}

void gemm_dot(const float* X, size_t n, size_t in, const void* W, DType dtype, size_t r0, size_t r1, float* out, size_t rs, size_t ts) {
  if (is_quantized(dtype)) {  // callers with many row ranges quantize once and call gemm_qdot themselves
    thread_local std::vector<uint8_t> buffer;
    return gemm_qdot(quantize_rows(dtype, X, n, in, buffer), q8_row_bytes(dtype, in), n, in, W, dtype, r0, r1, out, rs, ts);
  }
  const Kernels& k = kernels();
  if (k.few_tokens && (n >= 2 || r1 - r0 >= kFewTokensMinRows)) return k.few_tokens(X, n, in, W, dtype, r0, r1, out, rs, ts);
  const size_t bytes_per_row = row_bytes(dtype, in);
  for (size_t r = r0; r < r1; r++) {
    const void* row = static_cast<const char*>(W) + r * bytes_per_row;
    for (size_t j = 0; j < n; j++) out[r * rs + j * ts] = k.dot_widen(X + j * in, row, dtype, in);
  }
}

namespace {

// Sums of a row block × token block (result[r·64 + j]) to where `out` keeps row rb + r, token tb + j. Row-major
// outputs are written token by token (`rows` consecutive floats each), not row by row (one store per token, each in
// another cache line and, for outputs 1,024 floats or more wide, another page).
void store_block(const float* result, size_t rows, size_t tokens, const Output& out, size_t rb, size_t tb) {
  if (!out.blocked) {
    for (size_t j = 0; j < tokens; j++) {
      float* dst = out.data + (tb + j) * out.stride + rb;
      for (size_t r = 0; r < rows; r++) dst[r] = result[r * 64 + j];
    }
    return;
  }
  for (size_t r = 0; r < rows; r++) {
    auto [dst, step] = out.run(rb + r, tb);
    for (size_t j = 0; j < tokens; j++) dst[j * step] = result[r * 64 + j];
  }
}

}  // namespace

void gemm_tiles(const float* Xt, size_t npad, size_t n, size_t in, const void* W, DType dtype, size_t r0, size_t r1, const Output& out) {
  const Kernels& k = kernels();
  const size_t bytes_per_row = row_bytes(dtype, in);
  thread_local std::vector<float> widened;
  widened.resize(kRowSub * in);
  alignas(64) float result[kRowSub * 64];  // [row of the block][token of the token block]
  for (size_t rb = r0; rb < r1; rb += kRowSub) {
    const size_t rows = std::min(kRowSub, r1 - rb);
    const float* w[kRowSub];
    for (size_t r = 0; r < rows; r++) {
      const void* row = static_cast<const char*>(W) + (rb + r) * bytes_per_row;
      if (dtype == DType::F32) {
        w[r] = static_cast<const float*>(row);
      } else {
        widen_any(k, row, dtype, in, widened.data() + r * in);
        w[r] = widened.data() + r * in;
      }
    }
    for (size_t tb = 0; tb < n; tb += kTokenBlock) {
      const size_t width = block_width(npad, tb / kTokenBlock), te = std::min(n, tb + kTokenBlock);
      const float* block = Xt + tb * in;
      // Features in slices of kFeatureSlice: the slice of the token block (32 KiB) stays in L1 while every tile of
      // the row block passes over it; each tile carries its sums in `result` from one slice to the next.
      for (size_t i0 = 0; i0 < in; i0 += kFeatureSlice) {
        const size_t slice = std::min(kFeatureSlice, in - i0);
        const float* ws[kRowSub];
        for (size_t r = 0; r < rows; r++) ws[r] = w[r] + i0;
        for (size_t g = 0; g < rows; g += k.tile_rows) {
          const int tile_rows = static_cast<int>(std::min<size_t>(k.tile_rows, rows - g));
          for (size_t t0 = tb; t0 < te; t0 += k.tile_tokens) {
            const int vectors = static_cast<int>((std::min(k.tile_tokens, te - t0) + k.lanes - 1) / k.lanes);
            k.tile(block + i0 * width + (t0 - tb), width, slice, ws + g, tile_rows, vectors, result + g * 64 + (t0 - tb), i0 > 0);
          }
        }
      }
      store_block(result, rows, te - tb, out, rb, tb);
    }
  }
}

void gemm_rows(const float* X, size_t n, size_t in_dim, const void* W, DType dtype, size_t row_begin, size_t row_end, float* out,
               size_t out_stride) {
  if (n < min_tile_tokens(dtype)) return gemm_dot(X, n, in_dim, W, dtype, row_begin, row_end, out, 1, out_stride);
  const size_t npad = padded_tokens(n);
  thread_local std::vector<float> buffer, rounded;
  float* Xt = scratch(buffer, npad * in_dim);
  transpose_tokens(rounded_rows(dtype, X, n, in_dim, rounded), in_dim, n, in_dim, Xt, npad);
  gemm_tiles(Xt, npad, n, in_dim, W, dtype, row_begin, row_end, Output{out, out_stride});
}

namespace {

// Rows [0, out_dim) of each product in work items of `rows` rows, all of them one job of the pool:
// fn(product, r0, r1) for the part of each product in a chunk of items.
template <typename Fn>
void product_items(const Product* products, size_t count, size_t rows, const Fn& fn) {
  size_t first[kMostProducts], total = 0;  // each product's first work item
  for (size_t i = 0; i < count; i++) first[i] = total, total += (products[i].out_dim + rows - 1) / rows;
  pool().parallel_for(total, [&](size_t b0, size_t b1) {
    for (size_t i = 0; i < count; i++) {
      const size_t end = i + 1 < count ? first[i + 1] : total, from = std::max(b0, first[i]), to = std::min(b1, end);
      if (from < to) fn(products[i], (from - first[i]) * rows, std::min(products[i].out_dim, (to - first[i]) * rows));
    }
  });
}

// transpose_tokens of rows t < n of X, its token blocks spread over the pool.
void transpose_parallel(const float* X, size_t n, size_t in, float* Xt, size_t npad) {
  pool().parallel_for((npad + kTokenBlock - 1) / kTokenBlock, [&](size_t b0, size_t b1) {
    const size_t t0 = b0 * kTokenBlock, t1 = std::min(npad, b1 * kTokenBlock);
    transpose_tokens(X + t0 * in, in, n > t0 ? std::min(n, t1) - t0 : 0, in, Xt + t0 * in, t1 - t0);
  });
}

}  // namespace

namespace {

// matmuls of products that share their input (shared_input with the first's dtype, `dtype`), at most kMostProducts.
void shared_matmuls(const float* x, size_t tokens, size_t in_dim, DType dtype, const Product* products, size_t count) {
  thread_local std::vector<float> buffer, rounded;  // per calling JS thread (workers only read them during the call)
  if (tokens < min_tile_tokens(dtype) && is_quantized(dtype)) {
    // The input quantized once; rows per work item as the experts' (kStreamRowBlock): runs long enough for the
    // prefetchers to ramp up.
    thread_local std::vector<uint8_t> quantized;
    const uint8_t* Xq = quantize_rows(dtype, x, tokens, in_dim, quantized);
    const size_t stride = q8_row_bytes(dtype, in_dim);
    return product_items(products, count, kStreamRowBlock, [&](const Product& p, size_t r0, size_t r1) {
      gemm_qdot(Xq, stride, tokens, in_dim, p.weight, p.dtype, r0, r1, p.out, 1, p.out_dim);
    });
  }
  if (tokens < min_tile_tokens(dtype)) {
    // Items of kRowBlock rows, fewer where the products are short: OLMoE's router (64 float rows) split 48 + 16 left
    // one thread streaming three quarters of it; halves of 32 rows (Kernels::few_tokens' four streams each) took its
    // decode product from 242 to 197 µs a token (Q4_K_M OLMoE-1B-7B, 2 threads, in-process A/B over 5 pairs of runs);
    // quarters of 16 rows took longer (274).
    size_t total = 0;
    for (size_t i = 0; i < count; i++) total += products[i].out_dim;
    const size_t threads = static_cast<size_t>(pool().threads());
    const size_t rows = std::max(kFewTokensMinRows, std::min(kRowBlock, (total + threads - 1) / threads));
    return product_items(products, count, rows, [&](const Product& p, size_t r0, size_t r1) {
      gemm_dot(x, tokens, in_dim, p.weight, p.dtype, r0, r1, p.out, 1, p.out_dim);
    });
  }
  // Tiles: the input transposed once for all products (the attention's q, k and v).
  const size_t npad = padded_tokens(tokens);
  float* Xt = scratch(buffer, npad * in_dim);
  transpose_parallel(rounded_rows(dtype, x, tokens, in_dim, rounded), tokens, in_dim, Xt, npad);
  product_items(products, count, kRowBlock, [&](const Product& p, size_t r0, size_t r1) {
    gemm_tiles(Xt, npad, tokens, in_dim, p.weight, p.dtype, r0, r1, Output{p.out, p.out_dim});
  });
}

}  // namespace

bool shared_input(DType a, DType b) { return a == b || (k_quant(a) && k_quant(b) && min_tile_tokens(a) == min_tile_tokens(b)); }

void matmuls(const float* x, size_t tokens, size_t in_dim, const Product* products, size_t count) {
  // Sets of products that share their input, each in the order given, at most kMostProducts to a job.
  bool done[64] = {};
  for (size_t base = 0; base < count; base += 64) {
    const size_t n = std::min<size_t>(64, count - base);
    std::fill(done, done + n, false);
    for (size_t i = 0; i < n; i++) {
      if (done[i]) continue;
      Product set[kMostProducts];
      size_t size = 0;
      for (size_t j = i; j < n && size < kMostProducts; j++)
        if (!done[j] && shared_input(products[base + i].dtype, products[base + j].dtype)) set[size++] = products[base + j], done[j] = true;
      shared_matmuls(x, tokens, in_dim, set[0].dtype, set, size);
    }
  }
}

void matmul(const float* x, size_t tokens, size_t in_dim, const void* W, DType dtype, size_t out_dim, float* out) {
  const Product product{W, out_dim, out, dtype};
  matmuls(x, tokens, in_dim, &product, 1);
}

}  // namespace olmoe
