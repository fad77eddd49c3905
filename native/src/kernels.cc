// Kernels with runtime dispatch: AVX-512 (F+BW+VL) → AVX2+FMA+F16C → scalar. Each instruction set provides four
// primitives (widen a weight row, dot, fused widen-dot, a 4×4 register-blocked dot); the GEMM, expert and attention
// drivers are written once on top of them.
#include "kernels.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "pool.h"
#include "quant.h"
#include "half.h"
#include "gemm.h"
#include "multidot.h"

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
void tile_scalar(const float* Xt, size_t npad, size_t in, const float* const* w, int rows, int vectors, float* result) {
  const int tokens = vectors * 8;
  for (int r = 0; r < rows; r++)
    for (int t = 0; t < tokens; t++) {
      float sum = 0;
      for (size_t i = 0; i < in; i++) sum += Xt[i * npad + t] * w[r][i];
      result[r * 64 + t] = sum;
    }
}

#ifdef OLMOE_X86
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
  for (; i + 16 <= n; i += 16) {
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
AVX2 void tile_avx2_fixed(const float* Xt, size_t npad, size_t in, const float* const* w, float* result) {
  __m256 acc[R][V];
  for (auto& row : acc)
    for (auto& v : row) v = _mm256_setzero_ps();
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
AVX2 void tile_avx2_rows(const float* Xt, size_t npad, size_t in, const float* const* w, int vectors, float* result) {
  if (vectors == 1) tile_avx2_fixed<R, 1>(Xt, npad, in, w, result);
  else tile_avx2_fixed<R, 2>(Xt, npad, in, w, result);
}

AVX2 void tile_avx2(const float* Xt, size_t npad, size_t in, const float* const* w, int rows, int vectors, float* result) {
  switch (rows) {
    case 1: return tile_avx2_rows<1>(Xt, npad, in, w, vectors, result);
    case 2: return tile_avx2_rows<2>(Xt, npad, in, w, vectors, result);
    case 3: return tile_avx2_rows<3>(Xt, npad, in, w, vectors, result);
    default: return tile_avx2_rows<4>(Xt, npad, in, w, vectors, result);
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
  for (; i + 64 <= n; i += 64) {
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
AVX512 void tile_avx512_fixed(const float* Xt, size_t npad, size_t in, const float* const* w, float* result) {
  __m512 acc[R][V];
  for (auto& row : acc)
    for (auto& v : row) v = _mm512_setzero_ps();
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
AVX512 void tile_avx512_rows(const float* Xt, size_t npad, size_t in, const float* const* w, int vectors, float* result) {
  switch (vectors) {
    case 1: return tile_avx512_fixed<R, 1>(Xt, npad, in, w, result);
    case 2: return tile_avx512_fixed<R, 2>(Xt, npad, in, w, result);
    case 3: return tile_avx512_fixed<R, 3>(Xt, npad, in, w, result);
    default: return tile_avx512_fixed<R, 4>(Xt, npad, in, w, result);
  }
}

AVX512 void tile_avx512(const float* Xt, size_t npad, size_t in, const float* const* w, int rows, int vectors, float* result) {
  switch (rows) {
    case 1: return tile_avx512_rows<1>(Xt, npad, in, w, vectors, result);
    case 2: return tile_avx512_rows<2>(Xt, npad, in, w, vectors, result);
    case 3: return tile_avx512_rows<3>(Xt, npad, in, w, vectors, result);
    case 4: return tile_avx512_rows<4>(Xt, npad, in, w, vectors, result);
    case 5: return tile_avx512_rows<5>(Xt, npad, in, w, vectors, result);
    default: return tile_avx512_rows<6>(Xt, npad, in, w, vectors, result);
  }
}
#endif  // OLMOE_X86

Kernels choose_kernels() {
  const char* forced = std::getenv("OLMOE_SIMD");
  std::string want = forced ? forced : "";
#ifdef OLMOE_X86
  __builtin_cpu_init();
  bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (avx512 && (want.empty() || want == "avx512")) return {"avx512", widen_avx512, dot_avx512, dot_widen_avx512, axpy_avx512, tile_avx512, 6, 16, 64};
  if (avx2 && want != "scalar") return {"avx2", widen_avx2, dot_avx2, dot_widen_avx2, axpy_avx2, tile_avx2, 4, 8, 16};
#endif
  return {"scalar", widen_scalar, dot_scalar, dot_widen_scalar, axpy_scalar, tile_scalar, 4, 8, 64};
}


}  // namespace

const Kernels& kernels() {
  static const Kernels chosen = choose_kernels();
  return chosen;
}

// From this many tokens on, activations are transposed once and multiplied by tiles (tokens in vector lanes);
// below it each weight row is streamed once per token (decode).
constexpr size_t kRowBlock = 48;   // rows per parallel work item
constexpr size_t kRowSub = 24;     // rows widened together (24 × 2048 floats = 192 KiB, fits L2 beside a token block)

// Widen or dequantize n values of a weight row; dot of x with a weight row of any dtype.
void widen_any(const Kernels& k, const void* src, DType dtype, size_t n, float* dst) {
  if (is_quantized(dtype)) dequantize_row(dtype, static_cast<const uint8_t*>(src), n, dst);
  else k.widen(src, dtype, n, dst);
}

float dot_any(const Kernels& k, const float* x, const void* w, DType dtype, size_t n) {
  if (is_quantized(dtype)) return dot_quantized(x, static_cast<const uint8_t*>(w), dtype, n, k.dot);
  return k.dot_widen(x, w, dtype, n);
}


const char* simd_level() { return kernels().name; }


float* scratch(std::vector<float>& buffer, size_t size) {
  if (buffer.size() < size) buffer.resize(size);
  return buffer.data();
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

void gemm_dot(const float* X, size_t n, size_t in, const void* W, DType dtype, size_t r0, size_t r1, float* out, size_t rs, size_t ts) {
  const Kernels& k = kernels();
  const size_t bytes_per_row = row_bytes(dtype, in);
  // several tokens: dequantize each block once for all of them, four rows per activation load
  if (n > 1 && dot_rows_tokens(X, n, in, static_cast<const char*>(W) + r0 * bytes_per_row, r1 - r0, bytes_per_row, dtype, out + r0 * rs, rs, ts)) return;
  if (is_quantized(dtype)) {
    const uint8_t* rows = static_cast<const uint8_t*>(W) + r0 * bytes_per_row;
    for (size_t j = 0; j < n; j++) dot_rows_quantized(X + j * in, rows, bytes_per_row, dtype, in, r1 - r0, out + r0 * rs + j * ts, rs, k.dot);
    return;
  }
  for (size_t r = r0; r < r1; r++) {
    const void* row = static_cast<const char*>(W) + r * bytes_per_row;
    for (size_t j = 0; j < n; j++) out[r * rs + j * ts] = dot_any(k, X + j * in, row, dtype, in);
  }
}

/** fn(run, length) over the stored runs of rows [r0, r1) × tokens [0, count) of a blocked-transposed buffer. */
template <typename Fn>
void for_each_blocked_run(float* data, size_t npad, size_t features, size_t r0, size_t r1, size_t count, Fn fn) {
  for (size_t tb = 0; tb < count; tb += kTokenBlock) {
    const size_t width = block_width(npad, tb / kTokenBlock), length = std::min(kTokenBlock, count - tb);
    for (size_t r = r0; r < r1; r++) fn(data + tb * features + r * width, length);
  }
}

void gemm_tiles(const float* Xt, size_t npad, size_t n, size_t in, const void* W, DType dtype, size_t r0, size_t r1, const Output& out) {
  const Kernels& k = kernels();
  const size_t bytes_per_row = row_bytes(dtype, in);
  thread_local std::vector<float> widened;
  widened.resize(kRowSub * in);
  alignas(64) float result[6 * 64];
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
      for (size_t g = 0; g < rows; g += k.tile_rows) {
        const int tile_rows = static_cast<int>(std::min<size_t>(k.tile_rows, rows - g));
        for (size_t t0 = tb; t0 < te; t0 += k.tile_tokens) {
          const size_t valid = std::min(k.tile_tokens, te - t0);
          const int vectors = static_cast<int>((valid + k.lanes - 1) / k.lanes);
          k.tile(block + (t0 - tb), width, in, w + g, tile_rows, vectors, result);
          for (int r = 0; r < tile_rows; r++) {
            auto [dst, step] = out.run(rb + g + r, t0);
            for (size_t j = 0; j < valid; j++) dst[j * step] = result[r * 64 + j];
          }
        }
      }
    }
  }
}

void gemm_rows(const float* X, size_t n, size_t in_dim, const void* W, DType dtype, size_t row_begin, size_t row_end, float* out,
               size_t out_stride) {
  if (n < min_tile_tokens(dtype)) return gemm_dot(X, n, in_dim, W, dtype, row_begin, row_end, out, 1, out_stride);
  const size_t npad = padded_tokens(n);
  thread_local std::vector<float> buffer;
  float* Xt = scratch(buffer, npad * in_dim);
  transpose_tokens(X, in_dim, n, in_dim, Xt, npad);
  gemm_tiles(Xt, npad, n, in_dim, W, dtype, row_begin, row_end, Output{out, out_stride});
}

void matmul(const float* x, size_t tokens, size_t in_dim, const void* W, DType dtype, size_t out_dim, float* out) {
  const size_t blocks = (out_dim + kRowBlock - 1) / kRowBlock;
  if (tokens < min_tile_tokens(dtype)) {
    pool().parallel_for(blocks, [&](size_t b0, size_t b1) {
      gemm_dot(x, tokens, in_dim, W, dtype, b0 * kRowBlock, std::min(out_dim, b1 * kRowBlock), out, 1, out_dim);
    });
    return;
  }
  const size_t npad = padded_tokens(tokens);
  thread_local std::vector<float> buffer;  // per calling JS thread (workers only read it during the call)
  float* Xt = scratch(buffer, npad * in_dim);
  transpose_tokens(x, in_dim, tokens, in_dim, Xt, npad);
  pool().parallel_for(blocks, [&](size_t b0, size_t b1) {
    gemm_tiles(Xt, npad, tokens, in_dim, W, dtype, b0 * kRowBlock, std::min(out_dim, b1 * kRowBlock), Output{out, out_dim});
  });
}

namespace {

// Tokens routed to one expert: rows [first, first + count) of the grouped slot order. Groups with enough tokens
// keep their activations transposed ([features][npad], tokens in lanes) for the tile kernels; small ones keep
// them row-major ([count][features]) for the streaming dot path.
struct ExpertGroup {
  int32_t expert;
  size_t first, count;
  bool tiled = false;
  size_t npad = 0;
  size_t hidden_at = 0, ffn_at = 0;  // offsets of this group's input and gate/up/h buffers
};

struct WorkItem {
  size_t group, row_begin, row_end;
};

// Rows per work item for groups on the streaming dot path (decode): the q4_0 kernel reads four runs of a
// quarter of the item's rows each, and the hardware prefetchers need runs of some length to ramp up (48-row items
// gave runs of 12 rows, 7–14 KB: the expert layer of bench/native/q4-bench.cc took 1.3 ms instead of 0.8 ms).
constexpr size_t kStreamRowBlock = 256;

std::vector<WorkItem> row_items(const std::vector<ExpertGroup>& groups, size_t rows) {
  std::vector<WorkItem> items;
  for (size_t g = 0; g < groups.size(); g++) {
    const size_t block = groups[g].tiled ? kRowBlock : kStreamRowBlock;
    for (size_t r = 0; r < rows; r += block) items.push_back({g, r, std::min(rows, r + block)});
  }
  return items;
}

inline float silu(float z) { return z / (1.0f + std::exp(-z)); }

std::vector<ExpertGroup> group_slots(const ExpertArgs& a, std::vector<size_t>& order) {
  const size_t slots = a.tokens * a.top_k;
  order.resize(slots);
  for (size_t s = 0; s < slots; s++) order[s] = s;
  std::stable_sort(order.begin(), order.end(), [&](size_t l, size_t r) { return a.expert_ids[l] < a.expert_ids[r]; });
  std::vector<ExpertGroup> groups;
  for (size_t i = 0; i < slots; i++) {
    const int32_t e = a.expert_ids[order[i]];
    if (groups.empty() || groups.back().expert != e) groups.push_back({e, i, 0});
    groups.back().count++;
  }
  size_t hidden_at = 0, ffn_at = 0;
  for (auto& g : groups) {
    g.tiled = g.count >= min_tile_tokens(a.dtype);
    g.npad = g.tiled ? padded_tokens(g.count) : g.count;
    g.hidden_at = hidden_at;
    g.ffn_at = ffn_at;
    hidden_at += g.npad * a.hidden;
    ffn_at += g.npad * a.ffn;
  }
  return groups;
}

}  // namespace

void experts(const ExpertArgs& a) {
  const size_t slots = a.tokens * a.top_k, D = a.hidden, F = a.ffn;
  std::vector<size_t> order;
  std::vector<ExpertGroup> groups = group_slots(a, order);
  const size_t hidden_total = groups.empty() ? 0 : groups.back().hidden_at + groups.back().npad * D;
  const size_t ffn_total = groups.empty() ? 0 : groups.back().ffn_at + groups.back().npad * F;
  thread_local std::vector<float> xs_buffer, gate_buffer, up_buffer, ys_buffer;  // per calling JS thread
  float* xs = scratch(xs_buffer, hidden_total);
  float* gate = scratch(gate_buffer, ffn_total);
  float* up = scratch(up_buffer, ffn_total);
  float* ys = scratch(ys_buffer, slots * D);
  // Phase 0: gather each group's token rows (transposed for tiled groups).
  pool().parallel_for(groups.size(), [&](size_t g0, size_t g1) {
    for (size_t gi = g0; gi < g1; gi++) {
      const ExpertGroup& g = groups[gi];
      thread_local std::vector<float> buffer;
      float* rows = g.tiled ? scratch(buffer, g.count * D) : &xs[g.hidden_at];
      for (size_t j = 0; j < g.count; j++) std::memcpy(rows + j * D, a.x + (order[g.first + j] / a.top_k) * D, D * sizeof(float));
      if (g.tiled) transpose_tokens(rows, D, g.count, D, &xs[g.hidden_at], g.npad);
    }
  });
  // Phase 1: gate and up projections and SwiGLU, parallel over (expert, row block); outputs in the group's layout.
  auto first = row_items(groups, F);
  pool().parallel_for(first.size(), [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) {
      const ExpertGroup& g = groups[first[i].group];
      const size_t r0 = first[i].row_begin, r1 = first[i].row_end;
      float* G = &gate[g.ffn_at];
      float* U = &up[g.ffn_at];
      for (const auto& [W, data] : {std::pair{a.gate[g.expert], G}, std::pair{a.up[g.expert], U}}) {
        if (g.tiled) gemm_tiles(&xs[g.hidden_at], g.npad, g.count, D, W, a.dtype, r0, r1, Output{data, 0, true, g.npad, F});
        else gemm_dot(&xs[g.hidden_at], g.count, D, W, a.dtype, r0, r1, data, 1, F);
      }
      const ptrdiff_t up_offset = U - G;
      auto swiglu = [up_offset](float* gate_run, size_t length, size_t step) {
        for (size_t j = 0; j < length; j++) gate_run[j * step] = silu(gate_run[j * step]) * gate_run[up_offset + j * step];
      };
      if (g.tiled) for_each_blocked_run(G, g.npad, F, r0, r1, g.count, [&](float* run, size_t length) { swiglu(run, length, 1); });
      else for (size_t r = r0; r < r1; r++) swiglu(G + r, g.count, F);
    }
  });
  // Phase 2: down projection into row-major outputs per slot.
  auto second = row_items(groups, D);
  pool().parallel_for(second.size(), [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) {
      const ExpertGroup& g = groups[second[i].group];
      const size_t r0 = second[i].row_begin, r1 = second[i].row_end;
      float* Y = &ys[g.first * D];
      if (g.tiled) gemm_tiles(&gate[g.ffn_at], g.npad, g.count, F, a.down[g.expert], a.dtype, r0, r1, Output{Y, D});
      else gemm_dot(&gate[g.ffn_at], g.count, F, a.down[g.expert], a.dtype, r0, r1, Y, 1, D);
    }
  });
  // Phase 3: weighted sum per token, visiting its experts in ascending id (the grouped order).
  const Kernels& k = kernels();
  std::vector<size_t> position(slots);
  for (size_t i = 0; i < slots; i++) position[order[i]] = i;
  pool().parallel_for(a.tokens, [&](size_t t0, size_t t1) {
    std::vector<size_t> mine(a.top_k);
    for (size_t t = t0; t < t1; t++) {
      for (size_t j = 0; j < a.top_k; j++) mine[j] = position[t * a.top_k + j];
      std::sort(mine.begin(), mine.end());
      float* out = a.out + t * D;
      std::fill(out, out + D, 0.0f);
      for (size_t i : mine) k.axpy(a.weights[order[i]], &ys[i * D], out, D);
    }
  });
}

}  // namespace olmoe
