// Causal attention over the KV cache. Decode (few queries): per (head, query) dot products and axpys.
// Prefill (many queries): per head two GEMMs on the tile kernels — scores[s][t] = K_s·Q_t with the queries in
// vector lanes, then out[t] = Σ_s P[s][t]·V_s — and a softmax vectorized across queries in between.
#include <cmath>
#include <cstring>
#include <vector>

#include "gemm.h"
#include "pool.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define OLMOE_X86 1
#endif

namespace olmoe {

namespace {

constexpr size_t kMinPrefillQueries = 16;

using QueryAttention = void (*)(const float*, const float*, const float*, size_t, size_t, float, float*, float*);
QueryAttention query_attention(size_t head_dim);

void attend_decode(const AttentionArgs& a) {
  const Kernels& k = kernels();
  const QueryAttention fast = query_attention(a.head_dim);
  const size_t width = a.kv_heads * a.head_dim, group = a.heads / a.kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
  pool().parallel_for(a.heads * a.tokens, [&](size_t i0, size_t i1) {
    thread_local std::vector<float> buffer;
    float* scores = scratch(buffer, a.start + a.tokens);
    for (size_t item = i0; item < i1; item++) {
      const size_t h = item / a.tokens, t = item % a.tokens, positions = a.start + t + 1, kv = h / group;
      const float* q = a.q + (t * a.heads + h) * a.head_dim;
      if (fast) {
        fast(q, a.keys + kv * a.head_dim, a.values + kv * a.head_dim, width, positions, scale, scores, a.out + (t * a.heads + h) * a.head_dim);
        continue;
      }
      float max = -INFINITY;
      for (size_t s = 0; s < positions; s++) {
        scores[s] = k.dot(q, a.keys + s * width + kv * a.head_dim, a.head_dim) * scale;
        max = std::max(max, scores[s]);
      }
      float total = 0;
      for (size_t s = 0; s < positions; s++) total += scores[s] = std::exp(scores[s] - max);
      float* out = a.out + (t * a.heads + h) * a.head_dim;
      std::fill(out, out + a.head_dim, 0.0f);
      for (size_t s = 0; s < positions; s++) k.axpy(scores[s] / total, a.values + s * width + kv * a.head_dim, out, a.head_dim);
    }
  });
}

// Softmax over keys s ≤ start + t of every query t, in place, on scores in token-blocked transposed layout
// (rows = keys, lanes = queries), scaled by `scale` first. Keys past a query's position get probability 0.
void softmax_columns_scalar(float* scores, size_t keys, size_t npad, size_t queries, size_t start, float scale) {
  for (size_t tb = 0; tb < queries; tb += kTokenBlock) {
    const size_t width = block_width(npad, tb / kTokenBlock);
    float* block = scores + tb * keys;
    for (size_t j = 0; j < std::min(kTokenBlock, queries - tb); j++) {
      const size_t limit = start + tb + j;  // last visible key
      float max = -INFINITY, total = 0;
      for (size_t s = 0; s <= limit; s++) max = std::max(max, block[s * width + j] * scale);
      for (size_t s = 0; s < keys; s++) {
        float& p = block[s * width + j];
        p = s <= limit ? std::exp(p * scale - max) : 0.0f;
        total += p;
      }
      for (size_t s = 0; s <= limit; s++) block[s * width + j] /= total;
    }
  }
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

// One query of one head over `positions` keys, head dim 16·C held in registers: scores by dot products, softmax
// with the vector exp, then Σ p_s·v_s accumulated in C registers.
template <int C>
AVX512 void attend_query_avx512(const float* q, const float* keys, const float* values, size_t width, size_t positions, float scale,
                                float* scores, float* out) {
  __m512 query[C];
  for (int c = 0; c < C; c++) query[c] = _mm512_mul_ps(_mm512_loadu_ps(q + 16 * c), _mm512_set1_ps(scale));
  __m512 max = _mm512_set1_ps(-INFINITY);
  for (size_t s = 0; s < positions; s++) {
    const float* k = keys + s * width;
    __m512 acc = _mm512_mul_ps(query[0], _mm512_loadu_ps(k));
    for (int c = 1; c < C; c++) acc = _mm512_fmadd_ps(query[c], _mm512_loadu_ps(k + 16 * c), acc);
    scores[s] = _mm512_reduce_add_ps(acc);
  }
  float highest = -INFINITY;
  for (size_t s = 0; s < positions; s++) highest = std::max(highest, scores[s]);
  max = _mm512_set1_ps(highest);
  __m512 total = _mm512_setzero_ps();
  size_t s = 0;
  for (; s + 16 <= positions; s += 16) {
    const __m512 p = exp512(_mm512_sub_ps(_mm512_loadu_ps(scores + s), max));
    _mm512_storeu_ps(scores + s, p);
    total = _mm512_add_ps(total, p);
  }
  if (s < positions) {
    const __mmask16 mask = static_cast<__mmask16>((1u << (positions - s)) - 1);
    const __m512 p = _mm512_maskz_mov_ps(mask, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, scores + s), max)));
    _mm512_mask_storeu_ps(scores + s, mask, p);
    total = _mm512_add_ps(total, p);
  }
  const float inverse = 1.0f / _mm512_reduce_add_ps(total);
  __m512 acc[C];
  for (int c = 0; c < C; c++) acc[c] = _mm512_setzero_ps();
  for (size_t j = 0; j < positions; j++) {
    const __m512 p = _mm512_set1_ps(scores[j]);
    const float* v = values + j * width;
    for (int c = 0; c < C; c++) acc[c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(v + 16 * c), acc[c]);
  }
  for (int c = 0; c < C; c++) _mm512_storeu_ps(out + 16 * c, _mm512_mul_ps(acc[c], _mm512_set1_ps(inverse)));
}

QueryAttention query_attention_avx512(size_t head_dim) {
  switch (head_dim) {
    case 64: return attend_query_avx512<4>;
    case 128: return attend_query_avx512<8>;
    case 256: return attend_query_avx512<16>;
    default: return nullptr;
  }
}

AVX512 void softmax_columns_avx512(float* scores, size_t keys, size_t npad, size_t queries, size_t start, float scale) {
  const __m512 scaling = _mm512_set1_ps(scale);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (size_t tb = 0; tb < queries; tb += kTokenBlock) {
    const size_t width = block_width(npad, tb / kTokenBlock);
    float* block = scores + tb * keys;
    for (size_t j0 = 0; j0 < width; j0 += 16) {
      // Query (tb + j0 + lane) sees key s when s ≤ start + tb + j0 + lane.
      const __m512i limit = _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int>(start + tb + j0)));
      __m512 max = _mm512_set1_ps(-INFINITY), total = _mm512_setzero_ps();
      for (size_t s = 0; s < keys; s++) {
        const __mmask16 visible = _mm512_cmple_epi32_mask(_mm512_set1_epi32(static_cast<int>(s)), limit);
        max = _mm512_mask_max_ps(max, visible, max, _mm512_mul_ps(_mm512_loadu_ps(block + s * width + j0), scaling));
      }
      for (size_t s = 0; s < keys; s++) {
        const __mmask16 visible = _mm512_cmple_epi32_mask(_mm512_set1_epi32(static_cast<int>(s)), limit);
        float* row = block + s * width + j0;
        const __m512 p = _mm512_maskz_mov_ps(visible, exp512(_mm512_fmsub_ps(_mm512_loadu_ps(row), scaling, max)));
        _mm512_storeu_ps(row, p);
        total = _mm512_add_ps(total, p);
      }
      const __m512 inverse = _mm512_div_ps(_mm512_set1_ps(1.0f), total);
      for (size_t s = 0; s < keys; s++) _mm512_storeu_ps(block + s * width + j0, _mm512_mul_ps(_mm512_loadu_ps(block + s * width + j0), inverse));
    }
  }
}
#endif

QueryAttention query_attention(size_t head_dim) {
#ifdef OLMOE_X86
  if (std::strcmp(kernels().name, "avx512") == 0) return query_attention_avx512(head_dim);
#endif
  return nullptr;
}

void softmax_columns(float* scores, size_t keys, size_t npad, size_t queries, size_t start, float scale) {
#ifdef OLMOE_X86
  if (std::strcmp(kernels().name, "avx512") == 0) return softmax_columns_avx512(scores, keys, npad, queries, start, scale);
#endif
  softmax_columns_scalar(scores, keys, npad, queries, start, scale);
}

void attend_prefill(const AttentionArgs& a) {
  const size_t width = a.kv_heads * a.head_dim, group = a.heads / a.kv_heads, Hd = a.head_dim, T = a.tokens;
  const size_t S = a.start + T, npad = padded_tokens(T);
  const float scale = 1.0f / std::sqrt(static_cast<float>(Hd));
  pool().parallel_for(a.heads, [&](size_t h0, size_t h1) {
    thread_local std::vector<float> query_buffer, key_buffer, value_buffer, score_buffer;
    float* Qt = scratch(query_buffer, npad * Hd);
    float* K = scratch(key_buffer, S * Hd);
    float* Vt = scratch(value_buffer, Hd * S);
    float* P = scratch(score_buffer, S * npad);
    for (size_t h = h0; h < h1; h++) {
      const size_t kv = h / group;
      transpose_tokens(a.q + h * Hd, a.heads * Hd, T, Hd, Qt, npad);
      for (size_t s = 0; s < S; s++) {
        std::memcpy(K + s * Hd, a.keys + s * width + kv * Hd, Hd * sizeof(float));
        for (size_t d = 0; d < Hd; d++) Vt[d * S + s] = a.values[s * width + kv * Hd + d];
      }
      gemm_tiles(Qt, npad, T, Hd, K, DType::F32, 0, S, Output{P, 0, true, npad, S});  // P[s][t] = K_s · Q_t
      softmax_columns(P, S, npad, T, a.start, scale);
      gemm_tiles(P, npad, T, S, Vt, DType::F32, 0, Hd, Output{a.out + h * Hd, a.heads * Hd});  // out[t] = Σ_s P[s][t] V_s
    }
  });
}

}  // namespace

void attention(const AttentionArgs& a) {
  if (a.tokens >= kMinPrefillQueries) attend_prefill(a);
  else attend_decode(a);
}

}  // namespace olmoe
