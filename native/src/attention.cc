// Causal attention over the KV cache, in blocks (FlashAttention's online softmax, Dao et al. 2022 §3.1): a work item
// is one head and up to kQueryBlock of its queries; it walks the visible positions in blocks of kKeyBlock, widening
// each block's keys and values from the cache's type (f32 read in place, f16 by F16C, q8_0 by blocks) once for all
// of its queries. Each query keeps its running maximum m, denominator ℓ and weighted sum o; a block that raises m
// rescales ℓ and o by exp(m_old − m_new). No score row longer than one block, no T×T matrix, for any prompt length.
// The twin is attendOneBlocked in src/backends/reference/attention.ts (same blocks of positions).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "gemm.h"
#include "kv-cache.h"
#include "pool.h"

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
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

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
#endif

float exp_shifted(float* scores, size_t n, float max) {
#ifdef OLMOE_X86
  if (std::strcmp(kernels().name, "avx512") == 0) return exp_shifted_avx512(scores, n, max);
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

}  // namespace

void attention(const AttentionArgs& a) {
  const size_t query_blocks = (a.tokens + kQueryBlock - 1) / kQueryBlock;
  pool().parallel_for(a.heads * query_blocks, [&](size_t i0, size_t i1) {
    thread_local Scratch scratch_space;
    for (size_t item = i0; item < i1; item++) {
      const size_t h = item / query_blocks, t0 = item % query_blocks * kQueryBlock;
      attend_item(a, h, t0, std::min(a.tokens, t0 + kQueryBlock), scratch_space);
    }
  });
}

}  // namespace olmoe
