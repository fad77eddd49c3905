// Causal attention over the KV cache, in blocks (FlashAttention's online softmax, Dao et al. 2022 §3.1): a work item
// is one head and up to kQueryBlock of its queries; it walks the visible positions in blocks of kKeyBlock, widening
// each block's keys and values from the cache's type (f32 read in place, f16 by F16C, q8_0 by blocks) once for all
// of its queries. Each query keeps its running maximum m, denominator ℓ and weighted sum o; a block that raises m
// rescales ℓ and o by exp(m_old − m_new). No score row longer than one block, no T×T matrix, for any prompt length.
// The twin is attendOneBlocked in src/backends/reference/attention.ts (same blocks of positions).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "gemm.h"
#include "kv-cache.h"
#include "pool.h"
#include "quant-blocks.h"
#include "simd.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define OLMOE_X86 1
#endif

namespace olmoe {

namespace {

constexpr size_t kKeyBlock = 64;    // KEY_BLOCK of the reference twin
constexpr size_t kQueryBlock = 16;  // queries of one head per work item: each widened block serves all of them

// p_j = exp(s_j − max) in place for j < n; returns Σ p_j.
float exp_shifted_scalar(float* scores, size_t n, float max) {
  float total = 0;
  for (size_t j = 0; j < n; j++) total += scores[j] = std::exp(scores[j] - max);
  return total;
}

#ifdef OLMOE_X86
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))

// exp(x) for float32 lanes: x = n·ln2 + r, |r| ≤ ln2/2, exp(r) by the Cephes polynomial, scaled by 2^n (≈1 ulp).
AVX512 inline __m512 exp512(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f)), _mm512_set1_ps(-87.3365447504019f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

AVX512 float exp_shifted_avx512(float* scores, size_t n, float highest) {
  const __m512 max = _mm512_set1_ps(highest);
  __m512 total = _mm512_setzero_ps();
  for (size_t s = 0; s < n; s += 16) {
    const __mmask16 mask = n - s >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << (n - s)) - 1);
    const __m512 p = _mm512_maskz_mov_ps(mask, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, scores + s), max)));
    _mm512_mask_storeu_ps(scores + s, mask, p);
    total = _mm512_add_ps(total, p);
  }
  return _mm512_reduce_add_ps(total);
}

#define AVX2 __attribute__((target("avx2,fma,f16c")))

// exp512 on 8 lanes. 2^n is applied as two powers of two built from exponent bits (n = 128 at the top of the range
// has no float of its own), each product exact until the last rounds: the same value as vscalefps.
AVX2 inline __m256 exp256(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-87.3365447504019f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_cvtps_epi32(n), bias = _mm256_set1_epi32(127), half = _mm256_srai_epi32(e, 1);
  const __m256 first = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
  const __m256 second = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(e, half), bias), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, first), second);
}

AVX2 inline float hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

AVX2 float exp_shifted_avx2(float* scores, size_t n, float highest) {
  const __m256 max = _mm256_set1_ps(highest);
  __m256 total = _mm256_setzero_ps();
  size_t s = 0;
  for (; s + 8 <= n; s += 8) {
    const __m256 p = exp256(_mm256_sub_ps(_mm256_loadu_ps(scores + s), max));
    _mm256_storeu_ps(scores + s, p);
    total = _mm256_add_ps(total, p);
  }
  float rest = 0;
  for (; s < n; s++) rest += scores[s] = std::exp(scores[s] - highest);
  return hsum256(total) + rest;
}
#endif

float exp_shifted(float* scores, size_t n, float max) {
#ifdef OLMOE_X86
  if (std::strcmp(kernels().name, "avx512") == 0) return exp_shifted_avx512(scores, n, max);
  if (std::strcmp(kernels().name, "avx2") == 0) return exp_shifted_avx2(scores, n, max);
#endif
  return exp_shifted_scalar(scores, n, max);
}

// Keys and values of one kv head at positions [s0, s0 + n): rows `stride` floats apart.
struct KeyValueBlock {
  const float* keys;
  const float* values;
  size_t stride;
};

struct Scratch {
  std::vector<float> keys, values, queries, sums, scores;
  std::vector<size_t> heads;  // the sliced decode kernel's per-head byte offsets
};

KeyValueBlock load_block(const AttentionArgs& a, size_t kv, size_t s0, size_t n, Scratch& scratch_space) {
  const size_t width = a.kv_heads * a.head_dim, Hd = a.head_dim;
  if (a.kv_type == DType::F32) {
    const size_t at = s0 * width + kv * Hd;
    return {static_cast<const float*>(a.keys) + at, static_cast<const float*>(a.values) + at, width};
  }
  float* keys = scratch(scratch_space.keys, kKeyBlock * Hd);
  float* values = scratch(scratch_space.values, kKeyBlock * Hd);
  const size_t row_bytes = kv_row_bytes(a.kv_type, width);
  const auto* key_rows = static_cast<const uint8_t*>(a.keys) + s0 * row_bytes;
  const auto* value_rows = static_cast<const uint8_t*>(a.values) + s0 * row_bytes;
  for (size_t j = 0; j < n; j++) {
    kv_load(a.kv_type, key_rows + j * row_bytes, kv * Hd, Hd, keys + j * Hd);
    kv_load(a.kv_type, value_rows + j * row_bytes, kv * Hd, Hd, values + j * Hd);
  }
  return {keys, values, Hd};
}

// One query's running softmax state: maximum m, denominator ℓ, weighted sum o [Hd].
struct Running {
  float max = -INFINITY, total = 0;
  float* sum;
};

// Fold `n` positions of a block into one query's state (its scaled query q).
void fold_block(const Kernels& k, const float* q, const KeyValueBlock& block, size_t n, size_t Hd, float* scores, Running& state) {
  float block_max = -INFINITY;
  for (size_t j = 0; j < n; j++) block_max = std::max(block_max, scores[j] = k.dot(q, block.keys + j * block.stride, Hd));
  const float max = std::max(state.max, block_max);
  if (state.max != max) {
    const float rescale = state.max == -INFINITY ? 0.0f : std::exp(state.max - max);
    state.total *= rescale;
    for (size_t d = 0; d < Hd; d++) state.sum[d] *= rescale;
    state.max = max;
  }
  state.total += exp_shifted(scores, n, max);
  for (size_t j = 0; j < n; j++) k.axpy(scores[j], block.values + j * block.stride, state.sum, Hd);
}

using ItemKernel = void (*)(const AttentionArgs&, size_t, size_t, size_t, Scratch&);
using DecodeKernel = void (*)(const AttentionArgs&);

// Queries [t0, t1) of head h over their visible positions [0, start + t] each.
void attend_item(const AttentionArgs& a, size_t h, size_t t0, size_t t1, Scratch& scratch_space) {
  const Kernels& k = kernels();
  const size_t Hd = a.head_dim, nq = t1 - t0, kv = h / (a.heads / a.kv_heads);
  const float scale = 1.0f / std::sqrt(static_cast<float>(Hd));
  float* queries = scratch(scratch_space.queries, nq * Hd);
  float* sums = scratch(scratch_space.sums, nq * Hd);
  float* scores = scratch(scratch_space.scores, kKeyBlock);
  Running states[kQueryBlock];
  for (size_t i = 0; i < nq; i++) {
    const float* q = a.q + ((t0 + i) * a.heads + h) * Hd;
    for (size_t d = 0; d < Hd; d++) queries[i * Hd + d] = q[d] * scale;
    states[i].sum = sums + i * Hd;
    std::fill(states[i].sum, states[i].sum + Hd, 0.0f);
  }
  const size_t positions = a.start + t1;  // the last query sees them all
  for (size_t s0 = 0; s0 < positions; s0 += kKeyBlock) {
    const size_t n = std::min(kKeyBlock, positions - s0);
    const KeyValueBlock block = load_block(a, kv, s0, n, scratch_space);
    for (size_t i = 0; i < nq; i++) {
      const size_t visible_end = a.start + t0 + i + 1;  // query t0 + i sees positions < visible_end
      if (visible_end > s0) fold_block(k, queries + i * Hd, block, std::min(n, visible_end - s0), Hd, scores, states[i]);
    }
  }
  for (size_t i = 0; i < nq; i++) {
    float* out = a.out + ((t0 + i) * a.heads + h) * Hd;
    const float inverse = 1.0f / states[i].total;
    for (size_t d = 0; d < Hd; d++) out[d] = states[i].sum[d] * inverse;
  }
}

#ifdef OLMOE_X86
// ---------------------------------------------------------------- AVX-512, head dim 16·C (C = 4, 8, 16)
// Loaders of one head's Hd = 16·C values of a stored row into C vectors (p: the head's first byte in the row).
// dot: Σ_c q[c]·v[c] as one vector (its lanes still to be summed); axpy: acc[c] += p·v[c]. Widened rows use load; the
// q8_0 row folds each block's scale into the sum (dot) or into p (axpy) instead of multiplying every value by it.
template <typename Row>
struct WidenedRow {
  template <int C>
  AVX512 static __m512 dot(const __m512* q, const uint8_t* p) {
    __m512 v[C];
    Row::template load<C>(p, v);
    __m512 sum = _mm512_mul_ps(q[0], v[0]);
    for (int c = 1; c < C; c++) sum = _mm512_fmadd_ps(q[c], v[c], sum);
    return sum;
  }
  template <int C>
  AVX512 static void axpy(float weight, const uint8_t* p, __m512* acc) {
    __m512 v[C];
    Row::template load<C>(p, v);
    const __m512 w = _mm512_set1_ps(weight);
    for (int c = 0; c < C; c++) acc[c] = _mm512_fmadd_ps(w, v[c], acc[c]);
  }
};
struct RowF32 : WidenedRow<RowF32> {
  template <int C>
  AVX512 static void load(const uint8_t* p, __m512* v) {
    for (int c = 0; c < C; c++) v[c] = _mm512_loadu_ps(reinterpret_cast<const float*>(p) + 16 * c);
  }
  static size_t head_offset(size_t kv, size_t Hd) { return kv * Hd * 4; }
};
struct RowF16 : WidenedRow<RowF16> {
  template <int C>
  AVX512 static void load(const uint8_t* p, __m512* v) {
    for (int c = 0; c < C; c++) v[c] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p) + c));
  }
  static size_t head_offset(size_t kv, size_t Hd) { return kv * Hd * 2; }
};
struct RowQ8 {  // Hd a multiple of 64: a head is whole q8_0 blocks
  template <int C>
  AVX512 static void load(const uint8_t* p, __m512* v) {
    for (int c = 0; c < C; c += 2) q8_0_values(p + c / 2 * 34, v[c], v[c + 1]);
  }
  template <int C>
  AVX512 static __m512 dot(const __m512* q, const uint8_t* p) {
    __m512 sum = _mm512_setzero_ps();
    for (int c = 0; c < C; c += 2) {
      __m512 low, high;
      q8_0_codes(p + c / 2 * 34, low, high);
      const __m512 block = _mm512_fmadd_ps(q[c + 1], high, _mm512_mul_ps(q[c], low));
      sum = _mm512_fmadd_ps(block, _mm512_set1_ps(f16_scale(p + c / 2 * 34)), sum);
    }
    return sum;
  }
  template <int C>
  AVX512 static void axpy(float weight, const uint8_t* p, __m512* acc) {
    for (int c = 0; c < C; c += 2) {
      __m512 low, high;
      q8_0_codes(p + c / 2 * 34, low, high);
      const __m512 w = _mm512_set1_ps(weight * f16_scale(p + c / 2 * 34));
      acc[c] = _mm512_fmadd_ps(w, low, acc[c]);
      acc[c + 1] = _mm512_fmadd_ps(w, high, acc[c + 1]);
    }
  }
  static size_t head_offset(size_t kv, size_t Hd) { return kv * Hd / 32 * 34; }
};

// Positions ahead whose head bytes are prefetched: each row of a head lies a whole cache row (Hkv·Hd values) after the
// previous one, a new 4 KiB page for OLMoE-1B-7B's f16 rows, where the hardware's stream prefetchers stop.
constexpr size_t kPrefetchAhead = 8;

// Every cache line of [p, p + bytes) into L1 (a head's bytes here, a whole row in the sliced kernel below); nothing
// where P is false (stream_prefetch(), simd.h).
template <bool P>
AVX512 inline void prefetch_lines(const uint8_t* p, size_t bytes) {
  if (!P) return;
  for (size_t b = 0; b < bytes; b += 64) _mm_prefetch(reinterpret_cast<const char*>(p + b), _MM_HINT_T0);
}

// One query (decode): the query and the running weighted sum in registers, keys and values widened as they are read.
template <int C, typename Row, bool P>
AVX512 void attend_query_avx512(const AttentionArgs& a, size_t h, size_t t, float* scores) {
  constexpr size_t Hd = 16 * C;
  const size_t kv = h / (a.heads / a.kv_heads), row_bytes = kv_row_bytes(a.kv_type, a.kv_heads * Hd);
  const size_t head_bytes = kv_row_bytes(a.kv_type, Hd), offset = Row::head_offset(kv, Hd);
  const uint8_t* keys = static_cast<const uint8_t*>(a.keys) + offset;
  const uint8_t* values = static_cast<const uint8_t*>(a.values) + offset;
  const float* q = a.q + (t * a.heads + h) * Hd;
  const __m512 scale = _mm512_set1_ps(1.0f / std::sqrt(static_cast<float>(Hd)));
  __m512 query[C], acc[C], row[C];
  for (int c = 0; c < C; c++) query[c] = _mm512_mul_ps(_mm512_loadu_ps(q + 16 * c), scale), acc[c] = _mm512_setzero_ps();
  float max = -INFINITY, total = 0;
  const size_t positions = a.start + t + 1;
  for (size_t s0 = 0; s0 < positions; s0 += kKeyBlock) {
    const size_t n = std::min(kKeyBlock, positions - s0);
    float block_max = -INFINITY;
    for (size_t j = 0; j < n; j++) {
      if (s0 + j + kPrefetchAhead < positions) prefetch_lines<P>(keys + (s0 + j + kPrefetchAhead) * row_bytes, head_bytes);
      Row::template load<C>(keys + (s0 + j) * row_bytes, row);
      __m512 dot = _mm512_mul_ps(query[0], row[0]);
      for (int c = 1; c < C; c++) dot = _mm512_fmadd_ps(query[c], row[c], dot);
      block_max = std::max(block_max, scores[j] = _mm512_reduce_add_ps(dot));
    }
    if (block_max > max) {
      const __m512 rescale = _mm512_set1_ps(max == -INFINITY ? 0.0f : std::exp(max - block_max));
      total *= _mm512_cvtss_f32(rescale);
      for (int c = 0; c < C; c++) acc[c] = _mm512_mul_ps(acc[c], rescale);
      max = block_max;
    }
    total += exp_shifted_avx512(scores, n, max);
    for (size_t j = 0; j < n; j++) {
      if (s0 + j + kPrefetchAhead < positions) prefetch_lines<P>(values + (s0 + j + kPrefetchAhead) * row_bytes, head_bytes);
      Row::template load<C>(values + (s0 + j) * row_bytes, row);
      const __m512 p = _mm512_set1_ps(scores[j]);
      for (int c = 0; c < C; c++) acc[c] = _mm512_fmadd_ps(p, row[c], acc[c]);
    }
  }
  float* out = a.out + (t * a.heads + h) * Hd;
  const __m512 inverse = _mm512_set1_ps(1.0f / total);
  for (int c = 0; c < C; c++) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(acc[c], inverse));
}

// Up to 16 queries of one head (prefill), one per vector lane: scores of a block of keys are 16-lane vectors (one per
// key: no horizontal sums), the running maximum and denominator are vectors, and the weighted sums o_i (rows of
// `sums`) take each query's probabilities as broadcasts over the block's widened values.
template <int C, typename Row>
AVX512 void attend_queries_avx512(const AttentionArgs& a, size_t h, size_t t0, size_t t1, Scratch& space) {
  constexpr size_t Hd = 16 * C;
  const size_t nq = t1 - t0, kv = h / (a.heads / a.kv_heads), row_bytes = kv_row_bytes(a.kv_type, a.kv_heads * Hd);
  const size_t offset = Row::head_offset(kv, Hd);
  float* queries = scratch(space.queries, Hd * 16);     // [Hd][16 lanes], scaled
  float* sums = scratch(space.sums, 16 * Hd);           // [query][Hd]
  float* probs = scratch(space.scores, kKeyBlock * 16);  // [key][16 lanes]
  float* keys = scratch(space.keys, kKeyBlock * Hd);
  float* values = scratch(space.values, kKeyBlock * Hd);
  const float scale = 1.0f / std::sqrt(static_cast<float>(Hd));
  for (size_t d = 0; d < Hd; d++)
    for (size_t i = 0; i < 16; i++) queries[d * 16 + i] = i < nq ? a.q[((t0 + i) * a.heads + h) * Hd + d] * scale : 0.0f;
  std::fill(sums, sums + 16 * Hd, 0.0f);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i last_visible = _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int>(a.start + t0)));  // query lane i sees s ≤ start + t0 + i
  __m512 max = _mm512_set1_ps(-INFINITY), total = _mm512_setzero_ps();
  alignas(64) float rescales[16];
  const size_t positions = a.start + t1;
  for (size_t s0 = 0; s0 < positions; s0 += kKeyBlock) {
    const size_t n = std::min(kKeyBlock, positions - s0);
    __m512 row[C];
    for (size_t j = 0; j < n; j++) {  // widen the block once for all 16 queries
      Row::template load<C>(static_cast<const uint8_t*>(a.keys) + (s0 + j) * row_bytes + offset, row);
      for (int c = 0; c < C; c++) _mm512_storeu_ps(keys + j * Hd + 16 * c, row[c]);
      Row::template load<C>(static_cast<const uint8_t*>(a.values) + (s0 + j) * row_bytes + offset, row);
      for (int c = 0; c < C; c++) _mm512_storeu_ps(values + j * Hd + 16 * c, row[c]);
    }
    __m512 block_max = _mm512_set1_ps(-INFINITY);
    for (size_t j = 0; j < n; j += 4) {  // four keys at a time: four independent FMA chains
      __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
      const size_t m = std::min<size_t>(4, n - j);
      for (size_t d = 0; d < Hd; d++) {
        const __m512 qd = _mm512_loadu_ps(queries + d * 16);
        for (size_t u = 0; u < 4; u++) acc[u] = _mm512_fmadd_ps(qd, _mm512_set1_ps(keys[(j + (u < m ? u : 0)) * Hd + d]), acc[u]);
      }
      for (size_t u = 0; u < m; u++) {
        const __mmask16 visible = _mm512_cmple_epi32_mask(_mm512_set1_epi32(static_cast<int>(s0 + j + u)), last_visible);
        const __m512 score = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), visible, acc[u]);
        _mm512_storeu_ps(probs + (j + u) * 16, score);
        block_max = _mm512_max_ps(block_max, score);
      }
    }
    const __m512 new_max = _mm512_max_ps(max, block_max);
    // exp(m_old − m_new): 0 where nothing was seen yet (m_old = −∞), 1 where the block did not raise the maximum.
    const __mmask16 seen = _mm512_cmp_ps_mask(max, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
    const __m512 rescale = _mm512_maskz_mov_ps(seen, exp512(_mm512_sub_ps(max, new_max)));
    total = _mm512_mul_ps(total, rescale);
    max = new_max;
    for (size_t j = 0; j < n; j++) {
      const __m512 score = _mm512_loadu_ps(probs + j * 16);
      const __mmask16 finite = _mm512_cmp_ps_mask(score, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
      const __m512 p = _mm512_maskz_mov_ps(finite, exp512(_mm512_sub_ps(score, max)));
      _mm512_storeu_ps(probs + j * 16, p);
      total = _mm512_add_ps(total, p);
    }
    _mm512_store_ps(rescales, rescale);
    for (size_t i = 0; i < nq; i++) {
      __m512 acc[C];
      const __m512 r = _mm512_set1_ps(rescales[i]);
      for (int c = 0; c < C; c++) acc[c] = _mm512_mul_ps(_mm512_loadu_ps(sums + i * Hd + 16 * c), r);
      const size_t visible = std::min(n, a.start + t0 + i + 1 > s0 ? a.start + t0 + i + 1 - s0 : 0);
      for (size_t j = 0; j < visible; j++) {
        const __m512 p = _mm512_set1_ps(probs[j * 16 + i]);
        for (int c = 0; c < C; c++) acc[c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(values + j * Hd + 16 * c), acc[c]);
      }
      for (int c = 0; c < C; c++) _mm512_storeu_ps(sums + i * Hd + 16 * c, acc[c]);
    }
  }
  alignas(64) float totals[16];
  _mm512_store_ps(totals, total);
  for (size_t i = 0; i < nq; i++) {
    float* out = a.out + ((t0 + i) * a.heads + h) * Hd;
    const __m512 inverse = _mm512_set1_ps(1.0f / totals[i]);
    for (int c = 0; c < C; c++) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(_mm512_loadu_ps(sums + i * Hd + 16 * c), inverse));
  }
}

template <int C, typename Row, bool P>
AVX512 void attend_item_avx512(const AttentionArgs& a, size_t h, size_t t0, size_t t1, Scratch& space) {
  if (t1 - t0 == 1) return attend_query_avx512<C, Row, P>(a, h, t0, scratch(space.scores, kKeyBlock * 16));
  attend_queries_avx512<C, Row>(a, h, t0, t1, space);
}

// Lane i of the result: the sum of the lanes of vector(i), i < 16 — 16 horizontal sums at once by a transpose-and-add
// tree (45 shuffles and adds where 16 separate reductions take ~130 and a scalar store each). The vectors are asked
// for in order and folded in as they come, four at a time, so few are live at once: with all 16 held (and a head's
// query and key row) the registers spilled, and the decode slices ran 10–15 % slower.
template <typename Vector>
AVX512 inline __m512 sum_lanes16(Vector vector) {
  auto pair = [&](size_t i) AVX512 {
    const __m512 a = vector(i), b = vector(i + 1);
    return _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
  };
  auto quad = [&](size_t i) AVX512 {
    const __m512 a = pair(i), b = pair(i + 2);
    return _mm512_add_ps(_mm512_shuffle_ps(a, b, _MM_SHUFFLE(1, 0, 1, 0)), _mm512_shuffle_ps(a, b, _MM_SHUFFLE(3, 2, 3, 2)));
  };
  auto half = [&](size_t i) AVX512 {
    const __m512 a = quad(i), b = quad(i + 4);
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(a, b, _MM_SHUFFLE(3, 1, 3, 1)));
  };
  const __m512 low = half(0), high = half(8);
  return _mm512_add_ps(_mm512_shuffle_f32x4(low, high, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(low, high, _MM_SHUFFLE(3, 1, 3, 1)));
}

// The weighted sums of the heads a position raised (bit i of `raised`: head first + i) times their factors[i]: a few
// times per head and slice, as scores seldom set a new maximum.
inline void rescale_raised(float* sums, size_t Hd, size_t first, unsigned raised, const float* factors) {
  for (unsigned bits = raised; bits; bits &= bits - 1) {
    float* sum = sums + (first + __builtin_ctz(bits)) * Hd;
    const float factor = factors[__builtin_ctz(bits)];
    for (size_t d = 0; d < Hd; d++) sum[d] *= factor;
  }
}

// Rows ahead whose lines are prefetched where P (stream_prefetch(), simd.h): each row is a new 4 KiB page (OLMoE-1B-7B,
// f16), where the hardware's stream prefetchers start over; one prefetched line per row left the per-head items at
// ~13 GB/s cold.
constexpr size_t kRowsAhead = 4;

// One query (decode) at long contexts, positions [p0, p1) for every head, in one pass: at each position the key row
// (all kv heads, one contiguous run) gives the scores of every head, and the value row right after it goes into every
// head's weighted sum. Heads go in lanes, 16 to a vector: a position's scores of 16 heads are one vector (sum_lanes16),
// and the running maxima, the exponentials and the denominators are vector operations across heads. A position that
// raises a head's maximum rescales that head's sum and denominator first (a few times per head: scores seldom set a
// new maximum). The weighted sums ([heads][Hd], 8 KiB for OLMoE-1B-7B) stay in L1 between positions.
//
// One pass instead of two per block of positions (the block's key rows, then its value rows head by head): the value
// pass read each value row in 16 runs of 256 B, one head at a time, 4 KiB apart, and without software prefetch (Zen 4)
// they came from memory in that order. On the AMD EPYC Zen 4, 16 layers × 2,048 positions, f16, 2 threads,
// alternating in one process: 698–700 µs a layer → 503–518 in a slow phase (read bandwidth ~35 GB/s: 24 → 33 GB/s,
// about the speed of loads alone); on transparent huge pages in a fast phase (~58 GB/s) 637 → 375 µs.
// Per head the running maximum, denominator and weighted sum go to `state` ([heads][2 + Hd]); slices merge by their
// maxima. `queries`: [heads][Hd], already scaled by 1/√Hd.
template <int C, typename Row, bool P>
AVX512 __attribute__((flatten)) void attend_slice_avx512(const AttentionArgs& a, const float* queries, size_t p0, size_t p1, float* state, Scratch& space) {
  constexpr size_t Hd = 16 * C;
  const size_t H = a.heads, group = a.heads / a.kv_heads, row_bytes = kv_row_bytes(a.kv_type, a.kv_heads * Hd);
  const size_t lanes = (H + 15) / 16;  // vectors of 16 heads
  const size_t share = (row_bytes + 64 * H - 1) / (64 * H) * 64;  // bytes of a row each head prefetches, whole lines
  const uint8_t* keys = static_cast<const uint8_t*>(a.keys);
  const uint8_t* values = static_cast<const uint8_t*>(a.values);
  float* sums = aligned_scratch(space.sums, H * Hd);  // [head][Hd], in L1
  // [lane][16 heads] each: running maxima, denominators, the next position's scores, this position's weights
  float* maxima = aligned_scratch(space.scores, 4 * 16 * lanes);
  float* totals = maxima + 16 * lanes;
  float* scores = totals + 16 * lanes;
  float* weights = scores + 16 * lanes;
  // Per head, once per slice: its bytes in a row, and the part [from, to) of each row it prefetches. Worked out per
  // head and position (a division, clamps, a lane test), this scalar work took ~2/3 of the key pass's instructions.
  size_t* head_at = scratch(space.heads, 3 * H);
  size_t* prefetch_from = head_at + H;
  size_t* prefetch_to = head_at + 2 * H;
  for (size_t h = 0; h < H; h++) {
    head_at[h] = Row::head_offset(h / group, Hd);
    prefetch_from[h] = std::min(h * share, row_bytes), prefetch_to[h] = std::min((h + 1) * share, row_bytes);
  }
  std::fill(sums, sums + H * Hd, 0.0f);
  std::fill(maxima, maxima + 16 * lanes, -INFINITY);
  std::fill(totals, totals + 16 * lanes, 0.0f);
  // Every head's score at position s into `scores`; the rows kRowsAhead on (the slice's last near its end: already in
  // cache) prefetched a share per head between the heads' dot products, where P: the whole rows at once (128 lines)
  // filled the core's miss buffers, and the dot products waited.
  const auto score_position = [&](size_t s) AVX512 {
    const uint8_t* krow = keys + s * row_bytes;
    const size_t ahead = std::min(kRowsAhead, p1 - 1 - s) * row_bytes;
    const auto head_score = [&](size_t h) AVX512 {
      prefetch_lines<P>(krow + ahead + prefetch_from[h], prefetch_to[h] - prefetch_from[h]);
      prefetch_lines<P>(values + s * row_bytes + ahead + prefetch_from[h], prefetch_to[h] - prefetch_from[h]);
      __m512 q[C];
      for (int c = 0; c < C; c++) q[c] = _mm512_loadu_ps(queries + h * Hd + 16 * c);
      return Row::template dot<C>(q, krow + head_at[h]);
    };
    for (size_t l = 0; l < lanes; l++) {
      const size_t first = 16 * l, count = std::min<size_t>(16, H - first);
      _mm512_store_ps(scores + first, count == 16 ? sum_lanes16([&](size_t i) AVX512 { return head_score(first + i); })
                                                  : sum_lanes16([&](size_t i) AVX512 { return i < count ? head_score(first + i) : _mm512_setzero_ps(); }));
    }
  };
  // Software-pipelined: position s's weights, then position s + 1's scores, then s's values into the sums. The scores
  // of s + 1 do not wait on s, and s's value pass finds its weights long computed: in cache (2 threads, 128 positions,
  // f16) 17.9 → 15.7–16.2 µs a layer, where the order scores → weights → values of one position waited on the
  // exponentials at every position. From DRAM both run at the speed of the memory.
  score_position(p0);
  for (size_t s = p0; s < p1; s++) {
    for (size_t l = 0; l < lanes; l++) {
      const size_t first = 16 * l, count = std::min<size_t>(16, H - first);
      const __m512 score = _mm512_load_ps(scores + first);
      __m512 max = _mm512_load_ps(maxima + first), total = _mm512_load_ps(totals + first);
      const __mmask16 raised = _mm512_cmp_ps_mask(score, max, _CMP_GT_OQ) & static_cast<__mmask16>((1u << count) - 1);
      if (raised) {  // exp(m_old − m_new) for the raised heads: 0 where nothing was seen yet (m_old = −∞)
        const __m512 highest = _mm512_mask_mov_ps(max, raised, score);
        const __mmask16 seen = _mm512_cmp_ps_mask(max, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
        const __m512 rescale = _mm512_mask_mov_ps(_mm512_set1_ps(1.0f), raised, _mm512_maskz_mov_ps(seen, exp512(_mm512_sub_ps(max, highest))));
        total = _mm512_mul_ps(total, rescale);
        alignas(64) float factors[16];
        _mm512_store_ps(factors, rescale);
        rescale_raised(sums, Hd, first, raised, factors);
        max = highest;
        _mm512_store_ps(maxima + first, max);
      }
      const __m512 p = exp512(_mm512_sub_ps(score, max));
      _mm512_store_ps(totals + first, _mm512_add_ps(total, p));
      _mm512_store_ps(weights + first, p);
    }
    if (s + 1 < p1) score_position(s + 1);
    const uint8_t* vrow = values + s * row_bytes;
    for (size_t h = 0; h < H; h++) {
      float* sum = sums + h * Hd;
      __m512 acc[C];
      for (int c = 0; c < C; c++) acc[c] = _mm512_load_ps(sum + 16 * c);
      Row::template axpy<C>(weights[h], vrow + head_at[h], acc);
      for (int c = 0; c < C; c++) _mm512_store_ps(sum + 16 * c, acc[c]);
    }
  }
  for (size_t h = 0; h < H; h++) {
    float* st = state + h * (2 + Hd);
    st[0] = maxima[h], st[1] = totals[h];
    std::copy(sums + h * Hd, sums + (h + 1) * Hd, st + 2);
  }
}

// Decode splits positions across threads (attend_slice_avx512) instead of heads once every thread gets a slice of at
// least kSlicePositions, and from kSliceMinPositions on. In-model (OLMoE-1B-7B Q4_0, 2 threads, f16 cache) the slices
// took 0.70 ms per token at 64 positions where the per-head items took 0.84, 1.1 against 1.5 at 120, 1.6 against 2.2 at 200.
constexpr size_t kSliceMinPositions = 64;
constexpr size_t kSlicePositions = 32;

using SliceKernel = void (*)(const AttentionArgs&, const float*, size_t, size_t, float*, Scratch&);
using MergeKernel = void (*)(const AttentionArgs&, const float*, size_t);

// Positions split into slices across threads (a slice kernel: attend_slice_avx512 or attend_slice_avx2), then each
// head's slices merged by their maxima (merge: o = Σ_i e^(m_i − M) o_i / Σ_i e^(m_i − M) ℓ_i over the slices' states).
template <size_t Hd>
void attend_in_slices(const AttentionArgs& a, SliceKernel slice, MergeKernel merge) {
  const size_t H = a.heads, positions = a.start + 1;
  const size_t slices = std::max<size_t>(1, std::min(2 * static_cast<size_t>(pool().threads()), positions / kSlicePositions));
  thread_local std::vector<float> query_buffer, state_buffer;
  float* queries = scratch(query_buffer, H * Hd);
  float* states = scratch(state_buffer, slices * H * (2 + Hd));
  const float scale = 1.0f / std::sqrt(static_cast<float>(Hd));
  for (size_t i = 0; i < H * Hd; i++) queries[i] = a.q[i] * scale;
  pool().parallel_for(slices, [&](size_t i0, size_t i1) {
    thread_local Scratch space;
    for (size_t i = i0; i < i1; i++) slice(a, queries, positions * i / slices, positions * (i + 1) / slices, states + i * H * (2 + Hd), space);
  });
  merge(a, states, slices);
}

// The weight e^(m_i − M) of each of head h's slices (weights[i]) and their denominator Σ_i e^(m_i − M) ℓ_i.
template <size_t Hd>
float slice_weights(const float* states, size_t H, size_t h, size_t slices, float* weights) {
  float highest = -INFINITY;
  for (size_t i = 0; i < slices; i++) highest = std::max(highest, states[(i * H + h) * (2 + Hd)]);
  float total = 0;
  for (size_t i = 0; i < slices; i++) {
    const float* st = states + (i * H + h) * (2 + Hd);
    weights[i] = st[0] == -INFINITY ? 0.0f : std::exp(st[0] - highest);
    total += weights[i] * st[1];
  }
  return total;
}

template <int C>
AVX512 void merge_slices_avx512(const AttentionArgs& a, const float* states, size_t slices) {
  constexpr size_t Hd = 16 * C;
  thread_local std::vector<float> weight_buffer;
  float* weights = scratch(weight_buffer, slices);
  for (size_t h = 0; h < a.heads; h++) {
    const float total = slice_weights<Hd>(states, a.heads, h, slices, weights);
    __m512 acc[C];
    for (int c = 0; c < C; c++) acc[c] = _mm512_setzero_ps();
    for (size_t i = 0; i < slices; i++)
      for (int c = 0; c < C; c++) acc[c] = _mm512_fmadd_ps(_mm512_set1_ps(weights[i]), _mm512_loadu_ps(states + (i * a.heads + h) * (2 + Hd) + 2 + 16 * c), acc[c]);
    for (int c = 0; c < C; c++) _mm512_storeu_ps(a.out + h * Hd + 16 * c, _mm512_mul_ps(acc[c], _mm512_set1_ps(1.0f / total)));
  }
}

template <int C, typename Row, bool P>
void attend_decode_sliced(const AttentionArgs& a) {
  attend_in_slices<16 * C>(a, attend_slice_avx512<C, Row, P>, merge_slices_avx512<C>);
}

// ---------------------------------------------------------------- AVX2, head dim 8·C (C = 8, 16, 32)
// The one-pass decode slices of attend_slice_avx512 on 8-lane vectors (heads 8 to a vector). AVX2 has 16 vector
// registers: a head's query stays in memory (FMA memory operands) and its weighted sum is updated in L1.
// Row::at(p, c): values 8c..8c+7 of a head's stored row as floats.
struct Row8F32 {
  AVX2 static __m256 at(const uint8_t* p, int c) { return _mm256_loadu_ps(reinterpret_cast<const float*>(p) + 8 * c); }
  static size_t head_offset(size_t kv, size_t Hd) { return kv * Hd * 4; }
};
struct Row8F16 {
  AVX2 static __m256 at(const uint8_t* p, int c) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p) + c)); }
  static size_t head_offset(size_t kv, size_t Hd) { return kv * Hd * 2; }
};
struct Row8Q8 {  // Hd a multiple of 64: a head is whole q8_0 blocks of 34 bytes, four vectors each
  AVX2 static __m256 at(const uint8_t* p, int c) {
    const uint8_t* block = p + c / 4 * 34;
    uint16_t bits;
    std::memcpy(&bits, block, 2);
    const __m256 codes = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + 8 * (c % 4)))));
    return _mm256_mul_ps(codes, _mm256_set1_ps(_cvtsh_ss(bits)));
  }
  static size_t head_offset(size_t kv, size_t Hd) { return kv * Hd / 32 * 34; }
};

// Σ q·v over a head (lanes still to be summed), two FMA chains.
template <int C, typename Row>
AVX2 inline __m256 dot8(const float* q, const uint8_t* p) {
  __m256 even = _mm256_mul_ps(_mm256_loadu_ps(q), Row::at(p, 0)), odd = _mm256_mul_ps(_mm256_loadu_ps(q + 8), Row::at(p, 1));
  for (int c = 2; c < C; c += 2) {
    even = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c), Row::at(p, c), even);
    odd = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c + 8), Row::at(p, c + 1), odd);
  }
  return _mm256_add_ps(even, odd);
}

// Lane i of the result: the sum of the lanes of vector(i), i < 8 (sum_lanes16 on 8 lanes: pairwise horizontal adds).
template <typename Vector>
AVX2 inline __m256 sum_lanes8(Vector vector) {
  const __m256 a = _mm256_hadd_ps(vector(0), vector(1)), b = _mm256_hadd_ps(vector(2), vector(3));
  const __m256 c = _mm256_hadd_ps(vector(4), vector(5)), d = _mm256_hadd_ps(vector(6), vector(7));
  const __m256 low = _mm256_hadd_ps(a, b), high = _mm256_hadd_ps(c, d);  // [v0..v3 | v0..v3 upper halves], [v4..v7 | …]
  return _mm256_add_ps(_mm256_permute2f128_ps(low, high, 0x20), _mm256_permute2f128_ps(low, high, 0x31));
}

AVX2 inline void prefetch_lines_avx2(bool on, const uint8_t* p, size_t bytes) {
  if (!on) return;
  for (size_t b = 0; b < bytes; b += 64) _mm_prefetch(reinterpret_cast<const char*>(p + b), _MM_HINT_T0);
}

// attend_slice_avx512's contract and order (scores of every head at a position, then its values into every head's sum).
template <int C, typename Row, bool P>
AVX2 void attend_slice_avx2(const AttentionArgs& a, const float* queries, size_t p0, size_t p1, float* state, Scratch& space) {
  constexpr size_t Hd = 8 * C;
  const size_t H = a.heads, group = a.heads / a.kv_heads, row_bytes = kv_row_bytes(a.kv_type, a.kv_heads * Hd);
  const size_t lanes = (H + 7) / 8;  // vectors of 8 heads
  const size_t share = (row_bytes + 64 * H - 1) / (64 * H) * 64;
  const uint8_t* keys = static_cast<const uint8_t*>(a.keys);
  const uint8_t* values = static_cast<const uint8_t*>(a.values);
  float* sums = aligned_scratch(space.sums, H * Hd);
  float* maxima = aligned_scratch(space.scores, 4 * 8 * lanes);
  float* totals = maxima + 8 * lanes;
  float* weights = totals + 8 * lanes;
  size_t* head_at = scratch(space.heads, 3 * H);
  size_t* prefetch_from = head_at + H;
  size_t* prefetch_to = head_at + 2 * H;
  for (size_t h = 0; h < H; h++) {
    head_at[h] = Row::head_offset(h / group, Hd);
    prefetch_from[h] = std::min(h * share, row_bytes), prefetch_to[h] = std::min((h + 1) * share, row_bytes);
  }
  std::fill(sums, sums + H * Hd, 0.0f);
  std::fill(maxima, maxima + 8 * lanes, -INFINITY);
  std::fill(totals, totals + 8 * lanes, 0.0f);
  for (size_t s = p0; s < p1; s++) {
    const uint8_t* krow = keys + s * row_bytes;
    const uint8_t* vrow = values + s * row_bytes;
    const size_t ahead = std::min(kRowsAhead, p1 - 1 - s) * row_bytes;
    for (size_t l = 0; l < lanes; l++) {
      const size_t first = 8 * l, count = std::min<size_t>(8, H - first);
      const __m256 score = sum_lanes8([&](size_t i) AVX2 {
        if (i >= count) return _mm256_setzero_ps();
        const size_t h = first + i;
        prefetch_lines_avx2(P, krow + ahead + prefetch_from[h], prefetch_to[h] - prefetch_from[h]);
        prefetch_lines_avx2(P, vrow + ahead + prefetch_from[h], prefetch_to[h] - prefetch_from[h]);
        return dot8<C, Row>(queries + h * Hd, krow + head_at[h]);
      });
      __m256 max = _mm256_load_ps(maxima + first), total = _mm256_load_ps(totals + first);
      const __m256 above = _mm256_cmp_ps(score, max, _CMP_GT_OQ);
      const unsigned raised = static_cast<unsigned>(_mm256_movemask_ps(above)) & ((1u << count) - 1);
      if (raised) {  // exp(m_old − m_new) for the raised heads: 0 where nothing was seen yet (m_old = −∞)
        const __m256 highest = _mm256_blendv_ps(max, score, above);
        const __m256 seen = _mm256_cmp_ps(max, _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ);
        const __m256 rescale = _mm256_blendv_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(seen, exp256(_mm256_sub_ps(max, highest))), above);
        total = _mm256_mul_ps(total, rescale);
        alignas(32) float factors[8];
        _mm256_store_ps(factors, rescale);
        rescale_raised(sums, Hd, first, raised, factors);
        max = highest;
        _mm256_store_ps(maxima + first, max);
      }
      const __m256 p = exp256(_mm256_sub_ps(score, max));
      _mm256_store_ps(totals + first, _mm256_add_ps(total, p));
      _mm256_store_ps(weights + first, p);
    }
    for (size_t h = 0; h < H; h++) {
      float* sum = sums + h * Hd;
      const __m256 w = _mm256_set1_ps(weights[h]);
      for (int c = 0; c < C; c++) _mm256_store_ps(sum + 8 * c, _mm256_fmadd_ps(w, Row::at(vrow + head_at[h], c), _mm256_load_ps(sum + 8 * c)));
    }
  }
  for (size_t h = 0; h < H; h++) {
    float* st = state + h * (2 + Hd);
    st[0] = maxima[h], st[1] = totals[h];
    std::copy(sums + h * Hd, sums + (h + 1) * Hd, st + 2);
  }
}

template <int C>
AVX2 void merge_slices_avx2(const AttentionArgs& a, const float* states, size_t slices) {
  constexpr size_t Hd = 8 * C;
  thread_local std::vector<float> weight_buffer;
  float* weights = scratch(weight_buffer, slices);
  for (size_t h = 0; h < a.heads; h++) {
    const float total = slice_weights<Hd>(states, a.heads, h, slices, weights);
    for (int c = 0; c < C; c++) {
      __m256 acc = _mm256_setzero_ps();
      for (size_t i = 0; i < slices; i++) acc = _mm256_fmadd_ps(_mm256_set1_ps(weights[i]), _mm256_loadu_ps(states + (i * a.heads + h) * (2 + Hd) + 2 + 8 * c), acc);
      _mm256_storeu_ps(a.out + h * Hd + 8 * c, _mm256_mul_ps(acc, _mm256_set1_ps(1.0f / total)));
    }
  }
}

template <int C, typename Row, bool P>
void attend_decode_sliced_avx2(const AttentionArgs& a) {
  attend_in_slices<8 * C>(a, attend_slice_avx2<C, Row, P>, merge_slices_avx2<C>);
}

template <int C, bool P>
DecodeKernel decode_kernel_avx2_for(DType type) {
  switch (type) {
    case DType::F32: return attend_decode_sliced_avx2<C, Row8F32, P>;
    case DType::F16: return attend_decode_sliced_avx2<C, Row8F16, P>;
    default: return attend_decode_sliced_avx2<C, Row8Q8, P>;
  }
}

template <int C, bool P>
DecodeKernel decode_kernel_for(DType type) {
  switch (type) {
    case DType::F32: return attend_decode_sliced<C, RowF32, P>;
    case DType::F16: return attend_decode_sliced<C, RowF16, P>;
    default: return attend_decode_sliced<C, RowQ8, P>;
  }
}

template <int C, bool P>
ItemKernel item_kernel_for(DType type) {
  switch (type) {
    case DType::F32: return attend_item_avx512<C, RowF32, P>;
    case DType::F16: return attend_item_avx512<C, RowF16, P>;
    default: return attend_item_avx512<C, RowQ8, P>;
  }
}

// for_head_dim(hd, pick): pick(std::integral_constant<int, C>) for the AVX-512 head dims 16·C = 64, 128, 256, else
// null (other head dims, or no AVX-512).
template <typename Pick>
auto for_head_dim(size_t head_dim, Pick pick) -> decltype(pick(std::integral_constant<int, 4>{})) {
  if (std::strcmp(kernels().name, "avx512") != 0) return nullptr;
  switch (head_dim) {
    case 64: return pick(std::integral_constant<int, 4>{});
    case 128: return pick(std::integral_constant<int, 8>{});
    case 256: return pick(std::integral_constant<int, 16>{});
    default: return nullptr;
  }
}
#endif

// The AVX-512 kernels for head dims 64, 128, 256; the portable one (kernels()' dot and axpy) otherwise.
//
// Both kinds of kernel prefetch their cache rows in software where stream_prefetch() says so (simd.h), for every
// cache type. On the AMD EPYC Zen 4 that turns it off; there the one-pass slices, 16 layers × 2,048 positions from DRAM
// (2 threads, both ways alternating in one process, read bandwidth ~35 GB/s), took 517–520 µs a layer over f16 rows
// without the prefetches against 730–743 with, and 274–277 over q8_0 rows against 419–429. (The two-pass slices before
// them were faster with the prefetches over q8_0 rows, which then kept them on everywhere.)
ItemKernel item_kernel(const AttentionArgs& a) {
#ifdef OLMOE_X86
  const bool p = stream_prefetch();
  if (const ItemKernel k = for_head_dim(a.head_dim, [&](auto c) { return p ? item_kernel_for<decltype(c)::value, true>(a.kv_type) : item_kernel_for<decltype(c)::value, false>(a.kv_type); })) return k;
#endif
  return attend_item;
}

// The sliced decode kernel for this call, or null (prefill, short contexts, other head dims or SIMD levels).
DecodeKernel decode_kernel(const AttentionArgs& a) {
#ifdef OLMOE_X86
  const size_t slice_from = std::max(kSliceMinPositions, kSlicePositions * static_cast<size_t>(pool().threads()));
  const bool p = stream_prefetch();
  if (a.tokens != 1 || a.start + 1 < slice_from) return nullptr;
  if (std::strcmp(kernels().name, "avx2") == 0) {
    switch (a.head_dim) {
      case 64: return p ? decode_kernel_avx2_for<8, true>(a.kv_type) : decode_kernel_avx2_for<8, false>(a.kv_type);
      case 128: return p ? decode_kernel_avx2_for<16, true>(a.kv_type) : decode_kernel_avx2_for<16, false>(a.kv_type);
      case 256: return p ? decode_kernel_avx2_for<32, true>(a.kv_type) : decode_kernel_avx2_for<32, false>(a.kv_type);
      default: return nullptr;
    }
  }
  return for_head_dim(a.head_dim, [&](auto c) { return p ? decode_kernel_for<decltype(c)::value, true>(a.kv_type) : decode_kernel_for<decltype(c)::value, false>(a.kv_type); });
#endif
  return nullptr;
}

}  // namespace

void attention(const AttentionArgs& a) {
  if (const DecodeKernel sliced = decode_kernel(a)) return sliced(a);
  const size_t query_blocks = (a.tokens + kQueryBlock - 1) / kQueryBlock;
  const ItemKernel kernel = item_kernel(a);
  pool().parallel_for(a.heads * query_blocks, [&](size_t i0, size_t i1) {
    thread_local Scratch scratch_space;
    for (size_t item = i0; item < i1; item++) {
      const size_t h = item / query_blocks, t0 = item % query_blocks * kQueryBlock;
      kernel(a, h, t0, std::min(a.tokens, t0 + kQueryBlock), scratch_space);
    }
  });
}

}  // namespace olmoe
