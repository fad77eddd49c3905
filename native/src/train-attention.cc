// Causal attention of training (no KV cache: each sequence attends to its own tokens), forward and backward, in
// blocks of queries as FlashAttention does (Dao et al. 2022): the forward keeps each query row's log-sum-exp, the
// backward recomputes the probabilities from it. Products run on the training GEMM directly on the strided heads.
// Forward items: (sequence, head, query block); backward items: (sequence, kv head), which own their dK and dV.
// Dimension legend: S sequence length, H query heads, Hkv key/value heads, Hd head dim, Bq queries per block.
#include <algorithm>
#include <cmath>
#include <vector>

#include "gemm.h"
#include "train-gemm.h"
#include "train-ops.h"
#include "train-parallel.h"
#include "train-vector.h"

namespace olmoe {

namespace {

constexpr size_t kQueryBlock = 64;

struct Layout {
  std::vector<size_t> row0;  // first row of each sequence
  size_t width, kv_width, group;
  float scale;
};

Layout layout(const TrainAttentionArgs& a) {
  Layout l;
  l.row0.resize(a.sequences + 1, 0);
  for (size_t s = 0; s < a.sequences; s++) l.row0[s + 1] = l.row0[s] + static_cast<size_t>(a.lengths[s]);
  l.width = a.heads * a.head_dim;
  l.kv_width = a.kv_heads * a.head_dim;
  l.group = a.heads / a.kv_heads;
  l.scale = 1.0f / std::sqrt(static_cast<float>(a.head_dim));
  return l;
}

// C (+)= op(A) · op(B), serial (the caller is one work item), with row strides.
void product(bool trans_a, bool trans_b, size_t m, size_t n, size_t k, const float* A, size_t lda, const float* B, size_t ldb, float* C, size_t ldc,
             bool accumulate) {
  TrainGemmArgs g = gemm_args(trans_a, trans_b, m, n, k, A, B, C, accumulate);
  g.serial = true;
  g.lda = lda;
  g.ldb = ldb;
  g.ldc = ldc;
  train_gemm(g);
}

// One query block of one head: its scores against keys [0, keys) → probabilities P [rows, keys] in place.
// Query i (absolute q0 + i) sees keys ≤ q0 + i. With `lse` null the log-sum-exp is computed (and stored in
// lse_out); else P = exp(scale·S − lse).
void probabilities(float* p, size_t rows, size_t keys, size_t q0, float scale, const float* lse, float* lse_out, size_t lse_stride) {
  const VectorKernels& v = vector_kernels();
  for (size_t i = 0; i < rows; i++) {
    float* row = p + i * keys;
    const size_t visible = q0 + i + 1;
    if (lse) {
      v.exp_in_place(row, visible, scale, lse[i * lse_stride]);
    } else {
      const float max = v.max(row, visible) * scale;  // scale > 0
      const float total = v.exp_in_place(row, visible, scale, max);
      lse_out[i * lse_stride] = max + std::log(total);
      v.scale(row, visible, 1.0f / total);
    }
    std::fill(row + visible, row + keys, 0.0f);
  }
}

}  // namespace

void attention_forward(const TrainAttentionArgs& a, float* out) {
  const Layout l = layout(a);
  const size_t Hd = a.head_dim;
  std::vector<size_t> items;  // (sequence, head, block) packed
  for (size_t s = 0; s < a.sequences; s++)
    for (size_t h = 0; h < a.heads; h++)
      for (size_t q0 = 0; q0 < static_cast<size_t>(a.lengths[s]); q0 += kQueryBlock) items.push_back((s * a.heads + h) * (1u << 20) + q0);
  // Largest blocks (last queries see the most keys) first, so the last items claimed are short.
  std::stable_sort(items.begin(), items.end(), [](size_t x, size_t y) { return (x & 0xfffff) > (y & 0xfffff); });
  parallel_items(items.size(), [&](size_t index) {
    const size_t item = items[index], q0 = item & 0xfffff, s = (item >> 20) / a.heads, h = (item >> 20) % a.heads;
    const size_t length = a.lengths[s], rows = std::min(kQueryBlock, length - q0), keys = q0 + rows, g = h / l.group;
    const size_t r0 = l.row0[s];
    thread_local std::vector<float> buffer;
    float* p = scratch(buffer, rows * keys);
    const float* q = a.q + (r0 + q0) * l.width + h * Hd;
    product(false, true, rows, keys, Hd, q, l.width, a.k + r0 * l.kv_width + g * Hd, l.kv_width, p, keys, false);  // S = Q · Kᵀ
    float* lse = a.lse + (r0 + q0) * a.heads + h;
    probabilities(p, rows, keys, q0, l.scale, nullptr, lse, a.heads);
    product(false, false, rows, Hd, keys, p, keys, a.v + r0 * l.kv_width + g * Hd, l.kv_width, out + (r0 + q0) * l.width + h * Hd, l.width, false);
  });
}

// dV += Pᵀ·dO; dP = dO·Vᵀ; dS = P ⊙ (dP − rowsum(dO ⊙ O)) · scale; dQ += dS·K; dK += dSᵀ·Q.
void attention_backward(const TrainAttentionArgs& a, const float* out, const float* d_out, const AttentionGrads& grads) {
  float *dq = grads.dq, *dk = grads.dk, *dv = grads.dv;
  const Layout l = layout(a);
  const size_t Hd = a.head_dim;
  parallel_items(a.sequences * a.kv_heads, [&](size_t item) {
    const size_t s = item / a.kv_heads, g = item % a.kv_heads, length = a.lengths[s], r0 = l.row0[s];
    const float* k = a.k + r0 * l.kv_width + g * Hd;
    const float* v = a.v + r0 * l.kv_width + g * Hd;
    float* dk_g = dk + r0 * l.kv_width + g * Hd;
    float* dv_g = dv + r0 * l.kv_width + g * Hd;
    thread_local std::vector<float> p_buffer, dp_buffer;
    // Fresh gradients: this item owns its sequence's rows of dK, dV (kv head g) and dQ (g's query heads).
    for (size_t r = 0; r < length; r++) {
      if (grads.dk_fresh) std::fill(dk_g + r * l.kv_width, dk_g + r * l.kv_width + Hd, 0.0f);
      if (grads.dv_fresh) std::fill(dv_g + r * l.kv_width, dv_g + r * l.kv_width + Hd, 0.0f);
      if (grads.dq_fresh) {
        float* row = dq + (r0 + r) * l.width + g * l.group * Hd;
        std::fill(row, row + l.group * Hd, 0.0f);
      }
    }
    for (size_t h = g * l.group; h < (g + 1) * l.group; h++) {
      for (size_t q0 = 0; q0 < length; q0 += kQueryBlock) {
        const size_t rows = std::min(kQueryBlock, length - q0), keys = q0 + rows, at = (r0 + q0) * l.width + h * Hd;
        float* p = scratch(p_buffer, rows * keys);
        float* dp = scratch(dp_buffer, rows * keys);
        const float* q = a.q + at;
        product(false, true, rows, keys, Hd, q, l.width, k, l.kv_width, p, keys, false);
        probabilities(p, rows, keys, q0, l.scale, a.lse + (r0 + q0) * a.heads + h, nullptr, a.heads);
        product(true, false, keys, Hd, rows, p, keys, d_out + at, l.width, dv_g, l.kv_width, true);  // dV += Pᵀ · dO
        product(false, true, rows, keys, Hd, d_out + at, l.width, v, l.kv_width, dp, keys, false);   // dP = dO · Vᵀ
        const VectorKernels& vk = vector_kernels();
        for (size_t i = 0; i < rows; i++) {
          const float delta = vk.dot(out + at + i * l.width, d_out + at + i * l.width, Hd);  // rowsum(dO ⊙ O) = Σ_j P·dP
          vk.softmax_backward(p + i * keys, dp + i * keys, keys, delta, l.scale);
        }
        product(false, false, rows, Hd, keys, dp, keys, k, l.kv_width, dq + at, l.width, true);     // dQ += dS · K
        product(true, false, keys, Hd, rows, dp, keys, q, l.width, dk_g, l.kv_width, true);        // dK += dSᵀ · Q
      }
    }
  });
}

}  // namespace olmoe
