// Several tokens against one quantized weight row: each block is dequantized once into registers and multiplied
// with every token's activations. Batched decode (a few tokens from different sequences, or the few tokens an
// expert receives) is bound by dequantization, not memory, so this divides its cost by the number of tokens.
#include "multidot.h"

#include <cstring>

#include "gemm.h"

#if defined(__x86_64__)
#define OLMOE_X86 1
#include "quant-blocks.h"
#endif

namespace olmoe {

namespace {

#ifdef OLMOE_X86
#define AVX512 OLMOE_AVX512

// The 32 weights of one block as two vectors (quant-blocks.h), and the block's size in bytes.
struct Q4_0 {
  static constexpr size_t kBytes = 18;
  AVX512 static inline void load(const uint8_t* w, __m512& low, __m512& high) { q4_0_values(w, low, high); }
};

struct Q8_0 {
  static constexpr size_t kBytes = 34;
  AVX512 static inline void load(const uint8_t* w, __m512& low, __m512& high) { q8_0_values(w, low, high); }
};

// N tokens (rows of X, stride `in`) · one row of blocks; two accumulators per token (low and high halves).
template <int N, typename Block>
AVX512 void dot_tokens_n(const float* X, size_t in, const uint8_t* w, float* out, size_t ts) {
  __m512 low_sum[N], high_sum[N];
  for (int j = 0; j < N; j++) low_sum[j] = high_sum[j] = _mm512_setzero_ps();
  for (size_t i = 0; i < in; i += 32, w += Block::kBytes) {
    __m512 low, high;
    Block::load(w, low, high);
    for (int j = 0; j < N; j++) {
      const float* x = X + j * in + i;
      low_sum[j] = _mm512_fmadd_ps(low, _mm512_loadu_ps(x), low_sum[j]);
      high_sum[j] = _mm512_fmadd_ps(high, _mm512_loadu_ps(x + 16), high_sum[j]);
    }
  }
  for (int j = 0; j < N; j++) out[j * ts] = _mm512_reduce_add_ps(_mm512_add_ps(low_sum[j], high_sum[j]));
}

// R rows × N tokens: each x vector loaded once serves R rows (keeps activations of several tokens from
// streaming through L2 once per row). One accumulator per (row, token).
template <int R, int N, typename Block>
AVX512 void dot_rows_tokens_rn(const float* X, size_t in, const uint8_t* w, size_t row_bytes, float* out, size_t rs, size_t ts) {
  __m512 sum[R][N];
  for (int r = 0; r < R; r++)
    for (int j = 0; j < N; j++) sum[r][j] = _mm512_setzero_ps();
  for (size_t i = 0, b = 0; i < in; i += 32, b += Block::kBytes) {
    __m512 low[R], high[R];
    for (int r = 0; r < R; r++) Block::load(w + r * row_bytes + b, low[r], high[r]);
    for (int j = 0; j < N; j++) {
      const __m512 x0 = _mm512_loadu_ps(X + j * in + i), x1 = _mm512_loadu_ps(X + j * in + i + 16);
      for (int r = 0; r < R; r++) sum[r][j] = _mm512_fmadd_ps(high[r], x1, _mm512_fmadd_ps(low[r], x0, sum[r][j]));
    }
  }
  for (int r = 0; r < R; r++)
    for (int j = 0; j < N; j++) out[r * rs + j * ts] = _mm512_reduce_add_ps(sum[r][j]);
}

template <int R, typename Block>
AVX512 void dot_rows_tokens_r(const float* X, size_t n, size_t in, const uint8_t* w, size_t row_bytes, float* out, size_t rs, size_t ts) {
  size_t j = 0;
  for (; j + 4 <= n; j += 4) dot_rows_tokens_rn<R, 4, Block>(X + j * in, in, w, row_bytes, out + j * ts, rs, ts);
  switch (n - j) {
    case 3: return dot_rows_tokens_rn<R, 3, Block>(X + j * in, in, w, row_bytes, out + j * ts, rs, ts);
    case 2: return dot_rows_tokens_rn<R, 2, Block>(X + j * in, in, w, row_bytes, out + j * ts, rs, ts);
    case 1: return dot_rows_tokens_rn<R, 1, Block>(X + j * in, in, w, row_bytes, out + j * ts, rs, ts);
    default: return;
  }
}

template <typename Block>
AVX512 void dot_rows_tokens_block(const float* X, size_t n, size_t in, const uint8_t* W, size_t rows, size_t row_bytes, float* out, size_t rs, size_t ts) {
  size_t r = 0;
  for (; r + 4 <= rows; r += 4) dot_rows_tokens_r<4, Block>(X, n, in, W + r * row_bytes, row_bytes, out + r * rs, rs, ts);
  for (; r < rows; r++) dot_rows_tokens_r<1, Block>(X, n, in, W + r * row_bytes, row_bytes, out + r * rs, rs, ts);
}

template <typename Block>
AVX512 void dot_tokens_block(const float* X, size_t n, size_t in, const uint8_t* w, float* out, size_t ts) {
  size_t j = 0;
  for (; j + 8 <= n; j += 8) dot_tokens_n<8, Block>(X + j * in, in, w, out + j * ts, ts);
  switch (n - j) {
    case 7: return dot_tokens_n<7, Block>(X + j * in, in, w, out + j * ts, ts);
    case 6: return dot_tokens_n<6, Block>(X + j * in, in, w, out + j * ts, ts);
    case 5: return dot_tokens_n<5, Block>(X + j * in, in, w, out + j * ts, ts);
    case 4: return dot_tokens_n<4, Block>(X + j * in, in, w, out + j * ts, ts);
    case 3: return dot_tokens_n<3, Block>(X + j * in, in, w, out + j * ts, ts);
    case 2: return dot_tokens_n<2, Block>(X + j * in, in, w, out + j * ts, ts);
    case 1: return dot_tokens_n<1, Block>(X + j * in, in, w, out + j * ts, ts);
    default: return;
  }
}
#endif

}  // namespace

static bool fused(DType dtype) {
  static const bool avx512 = std::strcmp(kernels().name, "avx512") == 0;  // honours OLMOE_SIMD
  return avx512 && (dtype == DType::Q4_0 || dtype == DType::Q8_0);
}

size_t min_tile_tokens(DType dtype) { return fused(dtype) ? 16 : kMinTileTokens; }

bool dot_tokens(const float* X, size_t n, size_t in, const void* row, DType dtype, float* out, size_t ts) {
#ifdef OLMOE_X86
  if (!fused(dtype) || in % 32 != 0) return false;
  const auto* w = static_cast<const uint8_t*>(row);
  if (dtype == DType::Q4_0) return dot_tokens_block<Q4_0>(X, n, in, w, out, ts), true;
  if (dtype == DType::Q8_0) return dot_tokens_block<Q8_0>(X, n, in, w, out, ts), true;
#endif
  return false;
}

bool dot_rows_tokens(const float* X, size_t n, size_t in, const void* W, size_t rows, size_t row_bytes, DType dtype, float* out, size_t rs, size_t ts) {
#ifdef OLMOE_X86
  if (!fused(dtype) || in % 32 != 0) return false;
  const auto* w = static_cast<const uint8_t*>(W);
  if (dtype == DType::Q4_0) return dot_rows_tokens_block<Q4_0>(X, n, in, w, rows, row_bytes, out, rs, ts), true;
  if (dtype == DType::Q8_0) return dot_rows_tokens_block<Q8_0>(X, n, in, w, rows, row_bytes, out, rs, ts), true;
#endif
  return false;
}

}  // namespace olmoe
