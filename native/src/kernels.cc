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

#if defined(__x86_64__)
#include <immintrin.h>
#define OLMOE_X86 1
#endif

namespace olmoe {

size_t dtype_bytes(DType dtype) { return dtype == DType::F32 ? 4 : 2; }

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

void micro_scalar(const float* const* x, const float* const* w, size_t n, float* out) {
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 4; b++) out[a * 4 + b] = dot_scalar(x[a], w[b], n);
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

AVX2 void micro_avx2(const float* const* x, const float* const* w, size_t n, float* out) {
  __m256 acc[4][4];
  for (auto& row : acc)
    for (auto& v : row) v = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 wv[4];
    for (int b = 0; b < 4; b++) wv[b] = _mm256_loadu_ps(w[b] + i);
    for (int a = 0; a < 4; a++) {
      __m256 xv = _mm256_loadu_ps(x[a] + i);
      for (int b = 0; b < 4; b++) acc[a][b] = _mm256_fmadd_ps(xv, wv[b], acc[a][b]);
    }
  }
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 4; b++) {
      float sum = hsum8(acc[a][b]);
      for (size_t k = i; k < n; k++) sum += x[a][k] * w[b][k];
      out[a * 4 + b] = sum;
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

AVX512 inline void micro_step(__m512 (&acc)[4][4], const float* const* x, const float* const* w, size_t at, __mmask16 mask) {
  __m512 wv[4];
  for (int b = 0; b < 4; b++) wv[b] = _mm512_maskz_loadu_ps(mask, w[b] + at);
  for (int a = 0; a < 4; a++) {
    __m512 xv = _mm512_maskz_loadu_ps(mask, x[a] + at);
    for (int b = 0; b < 4; b++) acc[a][b] = _mm512_fmadd_ps(xv, wv[b], acc[a][b]);
  }
}

AVX512 void micro_avx512(const float* const* x, const float* const* w, size_t n, float* out) {
  __m512 acc[4][4];
  for (auto& row : acc)
    for (auto& v : row) v = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) micro_step(acc, x, w, i, 0xffff);
  if (i < n) micro_step(acc, x, w, i, tail_mask(n - i));
  for (int a = 0; a < 4; a++)
    for (int b = 0; b < 4; b++) out[a * 4 + b] = _mm512_reduce_add_ps(acc[a][b]);
}
#endif  // OLMOE_X86

struct Kernels {
  const char* name;
  void (*widen)(const void*, DType, size_t, float*);
  float (*dot)(const float*, const float*, size_t);
  float (*dot_widen)(const float*, const void*, DType, size_t);
  void (*micro)(const float* const*, const float* const*, size_t, float*);
};

Kernels choose_kernels() {
  const char* forced = std::getenv("OLMOE_SIMD");
  std::string want = forced ? forced : "";
#ifdef OLMOE_X86
  __builtin_cpu_init();
  bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (avx512 && (want.empty() || want == "avx512")) return {"avx512", widen_avx512, dot_avx512, dot_widen_avx512, micro_avx512};
  if (avx2 && want != "scalar") return {"avx2", widen_avx2, dot_avx2, dot_widen_avx2, micro_avx2};
#endif
  return {"scalar", widen_scalar, dot_scalar, dot_widen_scalar, micro_scalar};
}

const Kernels& kernels() {
  static const Kernels chosen = choose_kernels();
  return chosen;
}

constexpr size_t kRowBlock = 16;    // weight rows widened together (16 × 2048 floats = 128 KiB, fits L2)
constexpr size_t kTokenBlock = 64;  // tokens swept per widened block (64 × 2048 floats = 512 KiB)

}  // namespace

const char* simd_level() { return kernels().name; }

void gemm_rows(const float* X, size_t n, size_t in_dim, const void* W, DType dtype, size_t row_begin, size_t row_end, float* out,
               size_t out_stride) {
  const Kernels& k = kernels();
  const size_t row_bytes = in_dim * dtype_bytes(dtype);
  auto row = [&](size_t r) { return static_cast<const char*>(W) + r * row_bytes; };
  if (n == 1) {  // decode: stream each weight row once, widening in registers
    for (size_t r = row_begin; r < row_end; r++) out[r] = k.dot_widen(X, row(r), dtype, in_dim);
    return;
  }
  thread_local std::vector<float> widened;
  widened.resize(kRowBlock * in_dim);
  for (size_t r0 = row_begin; r0 < row_end; r0 += kRowBlock) {
    const size_t rows = std::min(kRowBlock, row_end - r0);
    const float* w[kRowBlock];
    for (size_t b = 0; b < rows; b++) {
      if (dtype == DType::F32) {
        w[b] = reinterpret_cast<const float*>(row(r0 + b));
      } else {
        k.widen(row(r0 + b), dtype, in_dim, widened.data() + b * in_dim);
        w[b] = widened.data() + b * in_dim;
      }
    }
    for (size_t j0 = 0; j0 < n; j0 += kTokenBlock) {
      const size_t j1 = std::min(n, j0 + kTokenBlock);
      size_t b = 0;
      for (; b + 4 <= rows; b += 4) {
        size_t j = j0;
        for (; j + 4 <= j1; j += 4) {
          const float* x[4] = {X + j * in_dim, X + (j + 1) * in_dim, X + (j + 2) * in_dim, X + (j + 3) * in_dim};
          float acc[16];
          k.micro(x, w + b, in_dim, acc);
          for (int a = 0; a < 4; a++)
            for (int c = 0; c < 4; c++) out[(j + a) * out_stride + r0 + b + c] = acc[a * 4 + c];
        }
        for (; j < j1; j++)
          for (int c = 0; c < 4; c++) out[j * out_stride + r0 + b + c] = k.dot(X + j * in_dim, w[b + c], in_dim);
      }
      for (; b < rows; b++)
        for (size_t j = j0; j < j1; j++) out[j * out_stride + r0 + b] = k.dot(X + j * in_dim, w[b], in_dim);
    }
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
