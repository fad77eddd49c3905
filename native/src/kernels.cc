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

inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff, bits;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalize
      exponent = 127 - 15 + 1;
      while (!(mantissa & 0x400)) {
        mantissa <<= 1;
        exponent--;
      }
      bits = sign | (exponent << 23) | ((mantissa & 0x3ff) << 13);
    }
  } else if (exponent == 31) {
    bits = sign | 0x7f800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
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

// Outer-product panel kernel: out[t][c] = Σ_i X[t][i] · packed[i][c] for c < cols, packed panel width kPanelScalar.
constexpr size_t kPanelScalar = 16;

void panel_scalar(const float* X, size_t tokens, size_t in, const float* packed, float* out, size_t out_stride, size_t cols) {
  for (size_t t = 0; t < tokens; t++) {
    float acc[kPanelScalar] = {};
    for (size_t i = 0; i < in; i++)
      for (size_t c = 0; c < kPanelScalar; c++) acc[c] += X[t * in + i] * packed[i * kPanelScalar + c];
    for (size_t c = 0; c < cols; c++) out[t * out_stride + c] = acc[c];
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

// A tile of TB tokens × 16 outputs: 2·TB accumulators, one broadcast of X[t][i] feeds two FMAs (panel width 16).
template <int TB>
AVX2 void tile_avx2(const float* X, size_t in, const float* packed, float* out, size_t out_stride, size_t cols) {
  __m256 acc[TB][2];
  for (auto& row : acc) row[0] = row[1] = _mm256_setzero_ps();
  for (size_t i = 0; i < in; i++) {
    const __m256 b0 = _mm256_loadu_ps(packed + i * 16), b1 = _mm256_loadu_ps(packed + i * 16 + 8);
    for (int a = 0; a < TB; a++) {
      const __m256 x = _mm256_broadcast_ss(X + a * in + i);
      acc[a][0] = _mm256_fmadd_ps(x, b0, acc[a][0]);
      acc[a][1] = _mm256_fmadd_ps(x, b1, acc[a][1]);
    }
  }
  for (int a = 0; a < TB; a++) {
    alignas(32) float row[16];
    _mm256_store_ps(row, acc[a][0]);
    _mm256_store_ps(row + 8, acc[a][1]);
    for (size_t c = 0; c < cols; c++) out[a * out_stride + c] = row[c];
  }
}

AVX2 void panel_avx2(const float* X, size_t tokens, size_t in, const float* packed, float* out, size_t out_stride, size_t cols) {
  size_t t = 0;
  for (; t + 6 <= tokens; t += 6) tile_avx2<6>(X + t * in, in, packed, out + t * out_stride, out_stride, cols);
  const float* x = X + t * in;
  float* o = out + t * out_stride;
  switch (tokens - t) {
    case 5: tile_avx2<5>(x, in, packed, o, out_stride, cols); break;
    case 4: tile_avx2<4>(x, in, packed, o, out_stride, cols); break;
    case 3: tile_avx2<3>(x, in, packed, o, out_stride, cols); break;
    case 2: tile_avx2<2>(x, in, packed, o, out_stride, cols); break;
    case 1: tile_avx2<1>(x, in, packed, o, out_stride, cols); break;
    default: break;
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

// A tile of TB tokens × 32 outputs: 2·TB zmm accumulators (panel width 32).
template <int TB>
AVX512 void tile_avx512(const float* X, size_t in, const float* packed, float* out, size_t out_stride, __mmask16 low, __mmask16 high) {
  __m512 acc[TB][2];
  for (auto& row : acc) row[0] = row[1] = _mm512_setzero_ps();
  for (size_t i = 0; i < in; i++) {
    const __m512 b0 = _mm512_loadu_ps(packed + i * 32), b1 = _mm512_loadu_ps(packed + i * 32 + 16);
    for (int a = 0; a < TB; a++) {
      const __m512 x = _mm512_set1_ps(X[a * in + i]);
      acc[a][0] = _mm512_fmadd_ps(x, b0, acc[a][0]);
      acc[a][1] = _mm512_fmadd_ps(x, b1, acc[a][1]);
    }
  }
  for (int a = 0; a < TB; a++) {
    _mm512_mask_storeu_ps(out + a * out_stride, low, acc[a][0]);
    _mm512_mask_storeu_ps(out + a * out_stride + 16, high, acc[a][1]);
  }
}

AVX512 void panel_avx512(const float* X, size_t tokens, size_t in, const float* packed, float* out, size_t out_stride, size_t cols) {
  const __mmask16 low = cols >= 16 ? 0xffff : tail_mask(cols), high = cols >= 32 ? 0xffff : cols > 16 ? tail_mask(cols - 16) : 0;
  size_t t = 0;
  for (; t + 12 <= tokens; t += 12) tile_avx512<12>(X + t * in, in, packed, out + t * out_stride, out_stride, low, high);
  const float* x = X + t * in;
  float* o = out + t * out_stride;
  switch (tokens - t) {
    case 11: tile_avx512<11>(x, in, packed, o, out_stride, low, high); break;
    case 10: tile_avx512<10>(x, in, packed, o, out_stride, low, high); break;
    case 9: tile_avx512<9>(x, in, packed, o, out_stride, low, high); break;
    case 8: tile_avx512<8>(x, in, packed, o, out_stride, low, high); break;
    case 7: tile_avx512<7>(x, in, packed, o, out_stride, low, high); break;
    case 6: tile_avx512<6>(x, in, packed, o, out_stride, low, high); break;
    case 5: tile_avx512<5>(x, in, packed, o, out_stride, low, high); break;
    case 4: tile_avx512<4>(x, in, packed, o, out_stride, low, high); break;
    case 3: tile_avx512<3>(x, in, packed, o, out_stride, low, high); break;
    case 2: tile_avx512<2>(x, in, packed, o, out_stride, low, high); break;
    case 1: tile_avx512<1>(x, in, packed, o, out_stride, low, high); break;
    default: break;
  }
}
#endif  // OLMOE_X86

struct Kernels {
  const char* name;
  void (*widen)(const void*, DType, size_t, float*);
  float (*dot)(const float*, const float*, size_t);
  float (*dot_widen)(const float*, const void*, DType, size_t);
  // out[t][c] = X[t] · packed[·][c] for a panel of `panel` outputs packed input-major (packed[i * panel + c]).
  void (*panel_gemm)(const float*, size_t, size_t, const float*, float*, size_t, size_t);
  size_t panel;
};

Kernels choose_kernels() {
  const char* forced = std::getenv("OLMOE_SIMD");
  std::string want = forced ? forced : "";
#ifdef OLMOE_X86
  __builtin_cpu_init();
  bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (avx512 && (want.empty() || want == "avx512")) return {"avx512", widen_avx512, dot_avx512, dot_widen_avx512, panel_avx512, 32};
  if (avx2 && want != "scalar") return {"avx2", widen_avx2, dot_avx2, dot_widen_avx2, panel_avx2, 16};
#endif
  return {"scalar", widen_scalar, dot_scalar, dot_widen_scalar, panel_scalar, kPanelScalar};
}

const Kernels& kernels() {
  static const Kernels chosen = choose_kernels();
  return chosen;
}

// Below this many tokens, packing a weight panel costs more than it saves: rows are streamed per token instead.
constexpr size_t kPanelMinTokens = 14;
constexpr size_t kRowBlock = 32;  // rows per parallel work item: a whole number of panels of every instruction set

// Widen or dequantize n values of a weight row; dot of x with a weight row of any dtype.
void widen_any(const Kernels& k, const void* src, DType dtype, size_t n, float* dst) {
  if (is_quantized(dtype)) dequantize_row(dtype, static_cast<const uint8_t*>(src), n, dst);
  else k.widen(src, dtype, n, dst);
}

float dot_any(const Kernels& k, const float* x, const void* w, DType dtype, size_t n) {
  if (is_quantized(dtype)) return dot_quantized(x, static_cast<const uint8_t*>(w), dtype, n, k.dot);
  return k.dot_widen(x, w, dtype, n);
}

}  // namespace

const char* simd_level() { return kernels().name; }

namespace {

// Widen rows [r0, r0 + cols) of W and store them input-major: packed[i * panel + c] = W[r0 + c][i]; unused columns 0.
// Rows are widened 16 inputs at a time into an L1-resident block, which is then written out transposed, so both
// the reads of W and the writes of the panel are sequential.
void pack_panel(const Kernels& k, const void* W, DType dtype, size_t in, size_t r0, size_t cols, size_t panel, float* packed) {
  constexpr size_t kMaxChunk = 256;
  const size_t chunk = std::max<size_t>(16, block_elements(dtype)), bytes_per_row = row_bytes(dtype, in);
  alignas(64) static thread_local float block[32][kMaxChunk];
  for (size_t i0 = 0; i0 < in; i0 += chunk) {
    const size_t width = std::min(chunk, in - i0);
    for (size_t c = 0; c < cols; c++) widen_any(k, static_cast<const char*>(W) + (r0 + c) * bytes_per_row + row_bytes(dtype, i0), dtype, width, block[c]);
    for (size_t ii = 0; ii < width; ii++) {
      float* dst = packed + (i0 + ii) * panel;
      for (size_t c = 0; c < cols; c++) dst[c] = block[c][ii];
      for (size_t c = cols; c < panel; c++) dst[c] = 0.0f;
    }
  }
}

}  // namespace

void gemm_rows(const float* X, size_t n, size_t in_dim, const void* W, DType dtype, size_t row_begin, size_t row_end, float* out,
               size_t out_stride) {
  const Kernels& k = kernels();
  const size_t bytes_per_row = row_bytes(dtype, in_dim);
  if (n < kPanelMinTokens) {  // decode: stream each weight row once, widening in registers (it stays in L1 across the few tokens)
    for (size_t r = row_begin; r < row_end; r++)
      for (size_t j = 0; j < n; j++) out[j * out_stride + r] = dot_any(k, X + j * in_dim, static_cast<const char*>(W) + r * bytes_per_row, dtype, in_dim);
    return;
  }
  thread_local std::vector<float> packed;
  packed.resize(k.panel * in_dim);
  for (size_t r0 = row_begin; r0 < row_end; r0 += k.panel) {
    const size_t cols = std::min(k.panel, row_end - r0);
    pack_panel(k, W, dtype, in_dim, r0, cols, k.panel, packed.data());
    k.panel_gemm(X, n, in_dim, packed.data(), out + r0, out_stride, cols);
  }
}

void matmul(const float* x, size_t tokens, size_t in_dim, const void* W, DType dtype, size_t out_dim, float* out) {
  const size_t blocks = (out_dim + kRowBlock - 1) / kRowBlock;
  pool().parallel_for(blocks, [&](size_t b0, size_t b1) {
    gemm_rows(x, tokens, in_dim, W, dtype, b0 * kRowBlock, std::min(out_dim, b1 * kRowBlock), out, out_dim);
  });
}

namespace {

// Tokens routed to one expert: `first` is the offset of its rows in the grouped buffers.
struct ExpertGroup {
  int32_t expert;
  size_t first, count;
};

struct WorkItem {
  size_t group, row_begin, row_end;
};

std::vector<WorkItem> row_items(const std::vector<ExpertGroup>& groups, size_t rows) {
  std::vector<WorkItem> items;
  for (size_t g = 0; g < groups.size(); g++)
    for (size_t r = 0; r < rows; r += kRowBlock) items.push_back({g, r, std::min(rows, r + kRowBlock)});
  return items;
}

inline float silu(float z) { return z / (1.0f + std::exp(-z)); }

}  // namespace

void experts(const ExpertArgs& a) {
  const size_t slots = a.tokens * a.top_k, D = a.hidden, F = a.ffn;
  // Slots ordered by (expert, token): each expert's tokens are contiguous rows of the grouped buffers.
  std::vector<size_t> order(slots);
  for (size_t s = 0; s < slots; s++) order[s] = s;
  std::stable_sort(order.begin(), order.end(), [&](size_t l, size_t r) { return a.expert_ids[l] < a.expert_ids[r]; });
  std::vector<ExpertGroup> groups;
  for (size_t i = 0; i < slots; i++) {
    int32_t e = a.expert_ids[order[i]];
    if (groups.empty() || groups.back().expert != e) groups.push_back({e, i, 0});
    groups.back().count++;
  }
  std::vector<float> xs(slots * D), gate(slots * F), up(slots * F), ys(slots * D);
  for (size_t i = 0; i < slots; i++) std::memcpy(&xs[i * D], a.x + (order[i] / a.top_k) * D, D * sizeof(float));
  // Phase 1: gate and up projections and SwiGLU, parallel over (expert, row block).
  auto first = row_items(groups, F);
  pool().parallel_for(first.size(), [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) {
      const ExpertGroup& g = groups[first[i].group];
      const float* x = &xs[g.first * D];
      gemm_rows(x, g.count, D, a.gate[g.expert], a.dtype, first[i].row_begin, first[i].row_end, &gate[g.first * F], F);
      gemm_rows(x, g.count, D, a.up[g.expert], a.dtype, first[i].row_begin, first[i].row_end, &up[g.first * F], F);
      for (size_t j = 0; j < g.count; j++)
        for (size_t r = first[i].row_begin; r < first[i].row_end; r++) {
          size_t at = (g.first + j) * F + r;
          gate[at] = silu(gate[at]) * up[at];
        }
    }
  });
  // Phase 2: down projection.
  auto second = row_items(groups, D);
  pool().parallel_for(second.size(), [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) {
      const ExpertGroup& g = groups[second[i].group];
      gemm_rows(&gate[g.first * F], g.count, F, a.down[g.expert], a.dtype, second[i].row_begin, second[i].row_end, &ys[g.first * D], D);
    }
  });
  // Phase 3: weighted sum per token, visiting its experts in ascending id (the grouped order).
  std::vector<size_t> position(slots);
  for (size_t i = 0; i < slots; i++) position[order[i]] = i;
  pool().parallel_for(a.tokens, [&](size_t t0, size_t t1) {
    std::vector<size_t> mine(a.top_k);
    for (size_t t = t0; t < t1; t++) {
      for (size_t k = 0; k < a.top_k; k++) mine[k] = position[t * a.top_k + k];
      std::sort(mine.begin(), mine.end());
      float* out = a.out + t * D;
      std::fill(out, out + D, 0.0f);
      for (size_t i : mine) {
        const float w = a.weights[order[i]];
        const float* y = &ys[i * D];
        for (size_t d = 0; d < D; d++) out[d] += y[d] * w;
      }
    }
  });
}

void attention(const AttentionArgs& a) {
  const Kernels& k = kernels();
  const size_t width = a.kv_heads * a.head_dim, group = a.heads / a.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
  pool().parallel_for(a.heads * a.tokens, [&](size_t i0, size_t i1) {
    std::vector<float> scores(a.start + a.tokens);
    for (size_t item = i0; item < i1; item++) {
      const size_t h = item / a.tokens, t = item % a.tokens, positions = a.start + t + 1, kv = h / group;
      const float* q = a.q + (t * a.heads + h) * a.head_dim;
      float max = -INFINITY;
      for (size_t s = 0; s < positions; s++) {
        scores[s] = k.dot(q, a.keys + s * width + kv * a.head_dim, a.head_dim) * scale;
        max = std::max(max, scores[s]);
      }
      float total = 0;
      for (size_t s = 0; s < positions; s++) total += scores[s] = std::exp(scores[s] - max);
      float* out = a.out + (t * a.heads + h) * a.head_dim;
      std::fill(out, out + a.head_dim, 0.0f);
      for (size_t s = 0; s < positions; s++) {
        const float p = scores[s] / total;
        const float* v = a.values + s * width + kv * a.head_dim;
        for (size_t d = 0; d < a.head_dim; d++) out[d] += p * v[d];
      }
    }
  });
}

}  // namespace olmoe
