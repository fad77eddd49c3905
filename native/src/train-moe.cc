// Router and grouped SwiGLU experts for training (spec §3.6, paper eq. 1), forward and backward. Assignments are
// grouped by expert (a stable counting sort, kept for the backward); each expert's rows are gathered and multiplied
// on the training GEMM, the products split over the pool; per-token sums visit the token's experts in ascending id.
// Dimension legend: T tokens, D hidden, E experts, K top-k, C tokens per expert, A assignments, F expert width,
// n rows of one expert.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "gemm.h"
#include "pool.h"
#include "train-gemm.h"
#include "train-ops.h"
#include "train-parallel.h"
#include "train-vector.h"

namespace olmoe {

namespace {

// ---------------------------------------------------------------- router
void softmax_row(const float* logits, size_t width, float* out) {
  double max = -INFINITY, total = 0;
  for (size_t i = 0; i < width; i++) max = std::max(max, static_cast<double>(logits[i]));
  for (size_t i = 0; i < width; i++) total += std::exp(logits[i] - max);
  for (size_t i = 0; i < width; i++) out[i] = static_cast<float>(std::exp(logits[i] - max) / total);
}

// Indices of the `count` largest of `values` (stride apart), largest first, equal values by ascending index.
void top_indices(const float* values, size_t n, size_t stride, size_t count, int32_t* out, std::vector<int32_t>& scratch) {
  scratch.resize(n);
  std::iota(scratch.begin(), scratch.end(), 0);
  std::partial_sort(scratch.begin(), scratch.begin() + count, scratch.end(),
                    [&](int32_t a, int32_t b) { return values[a * stride] > values[b * stride] || (values[a * stride] == values[b * stride] && a < b); });
  std::copy(scratch.begin(), scratch.begin() + count, out);
}

}  // namespace

void router_forward(const RouterArgs& a) {
  const size_t T = a.tokens, E = a.experts;
  pool().parallel_for(T, [&](size_t t0, size_t t1) {
    std::vector<int32_t> scratch;
    for (size_t t = t0; t < t1; t++) {
      softmax_row(a.logits + t * E, E, a.probs + t * E);
      if (a.expert_choice) continue;
      const size_t K = a.top_k;
      top_indices(a.probs + t * E, E, 1, K, a.expert_ids + t * K, scratch);
      double total = 0;
      for (size_t k = 0; k < K; k++) {
        a.token_ids[t * K + k] = static_cast<int32_t>(t);
        a.weights[t * K + k] = a.probs[t * E + a.expert_ids[t * K + k]];
        total += a.weights[t * K + k];
      }
      if (a.norm_topk)
        for (size_t k = 0; k < K; k++) a.weights[t * K + k] = static_cast<float>(a.weights[t * K + k] / total);
    }
  });
  if (!a.expert_choice) return;
  const size_t C = a.capacity;
  pool().parallel_for(E, [&](size_t e0, size_t e1) {
    std::vector<int32_t> scratch;
    for (size_t e = e0; e < e1; e++) {
      top_indices(a.probs + e, T, E, C, a.token_ids + e * C, scratch);
      for (size_t c = 0; c < C; c++) {
        a.expert_ids[e * C + c] = static_cast<int32_t>(e);
        a.weights[e * C + c] = a.probs[a.token_ids[e * C + c] * E + e];
      }
    }
  });
}

void router_backward(const RouterArgs& a, const float* d_probs, const float* d_weights, float* d_logits, bool fresh) {
  const size_t T = a.tokens, E = a.experts, A = a.expert_choice ? E * a.capacity : T * a.top_k;
  std::vector<double> dp(T * E, 0.0);
  if (d_probs)
    for (size_t i = 0; i < T * E; i++) dp[i] = d_probs[i];
  if (d_weights) {
    const bool renormalized = a.norm_topk && !a.expert_choice;
    for (size_t i = 0; i < A; i++) {
      const size_t t = a.token_ids[i];
      double grad = d_weights[i];
      if (renormalized) {  // w_j = p_j / S: ∂L/∂p_i = (dw_i − Σ_j dw_j · w_j) / S
        const size_t K = a.top_k, first = t * K;
        double sum = 0, dot = 0;
        for (size_t j = 0; j < K; j++) sum += a.probs[t * E + a.expert_ids[first + j]];
        for (size_t j = 0; j < K; j++) dot += d_weights[first + j] * (a.probs[t * E + a.expert_ids[first + j]] / sum);
        grad = (d_weights[i] - dot) / sum;
      }
      dp[t * E + a.expert_ids[i]] += grad;
    }
  }
  pool().parallel_for(T, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; t++) {
      const float* p = a.probs + t * E;
      const double* g = dp.data() + t * E;
      double dot = 0;
      for (size_t e = 0; e < E; e++) dot += g[e] * p[e];
      for (size_t e = 0; e < E; e++) d_logits[t * E + e] = (fresh ? 0.0f : d_logits[t * E + e]) + static_cast<float>(p[e] * (g[e] - dot));
    }
  });
}

// ---------------------------------------------------------------- experts
namespace {

struct Groups {
  std::vector<size_t> first, count;  // per expert: first grouped position, rows
  std::vector<size_t> token_first;   // per token: first entry in by_token (T + 1 entries)
  std::vector<int32_t> by_token;     // grouped positions of each token, ascending (= ascending expert)
};

// Stable counting sort of the assignments by expert → a.order; and each token's grouped positions.
Groups group(const ExpertTrainArgs& a) {
  Groups g;
  g.count.assign(a.experts, 0);
  for (size_t i = 0; i < a.assignments; i++) g.count[a.expert_ids[i]]++;
  g.first.assign(a.experts, 0);
  for (size_t e = 1; e < a.experts; e++) g.first[e] = g.first[e - 1] + g.count[e - 1];
  std::vector<size_t> next = g.first;
  for (size_t i = 0; i < a.assignments; i++) a.order[next[a.expert_ids[i]]++] = static_cast<int32_t>(i);
  g.token_first.assign(a.tokens + 1, 0);
  for (size_t i = 0; i < a.assignments; i++) g.token_first[a.token_ids[i] + 1]++;
  for (size_t t = 0; t < a.tokens; t++) g.token_first[t + 1] += g.token_first[t];
  g.by_token.resize(a.assignments);
  std::vector<size_t> fill(g.token_first.begin(), g.token_first.end() - 1);
  for (size_t pos = 0; pos < a.assignments; pos++) g.by_token[fill[a.token_ids[a.order[pos]]]++] = static_cast<int32_t>(pos);
  return g;
}

// Every assignment's token row of x, in grouped order: rows [A, D].
void gather_rows(const ExpertTrainArgs& a, float* rows) {
  pool().parallel_for(a.assignments, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; i++) std::memcpy(rows + i * a.hidden, a.x + static_cast<size_t>(a.token_ids[a.order[i]]) * a.hidden, a.hidden * sizeof(float));
  });
}

// C (+)= op(A) · op(B) in the experts' precision (bf16 products when the call asked for them).
TrainGemmArgs product(const ExpertTrainArgs& a, bool trans_a, bool trans_b, size_t m, size_t n, size_t k, const float* A, const float* B, float* C, bool accumulate) {
  return gemm_args(trans_a, trans_b, m, n, k, A, B, C, accumulate, a.bf16);
}

// One product per expert that has rows (make(e, first, n)), all in one batch: a grouped GEMM.
template <typename Make>
void per_expert(const Groups& g, size_t experts, const Make& make) {
  std::vector<TrainGemmArgs> products;
  for (size_t e = 0; e < experts; e++)
    if (g.count[e] > 0) make(products, e, g.first[e], g.count[e]);
  train_gemm_batch(products.data(), products.size());
}

// fn(begin, count) over chunks of [0, n), on the pool.
template <typename Fn>
void in_chunks(size_t n, const Fn& fn) {
  constexpr size_t kChunk = 1 << 13;
  pool().parallel_for((n + kChunk - 1) / kChunk, [&](size_t c0, size_t c1) {
    const size_t begin = c0 * kChunk, end = std::min(n, c1 * kChunk);
    fn(begin, end - begin);
  });
}

// h = silu(gate) ⊙ up
void swiglu(const float* gate, const float* up, float* h, size_t n) {
  in_chunks(n, [&](size_t begin, size_t count) { vector_kernels().swiglu(gate + begin, up + begin, h + begin, count); });
}

}  // namespace

void experts_forward(const ExpertTrainArgs& a, float* out) {
  const size_t D = a.hidden, F = a.ffn, A = a.assignments;
  const Groups g = group(a);
  thread_local std::vector<float> x_buffer, h_buffer;
  float* rows = scratch(x_buffer, A * D);
  float* h = scratch(h_buffer, A * F);
  gather_rows(a, rows);
  per_expert(g, a.experts, [&](std::vector<TrainGemmArgs>& ps, size_t e, size_t first, size_t n) {
    ps.push_back(product(a, false, true, n, F, D, rows + first * D, a.gate[e], a.gate_pre + first * F, false));  // [n, F] = x · gateᵀ
    ps.push_back(product(a, false, true, n, F, D, rows + first * D, a.up[e], a.up_pre + first * F, false));
  });
  swiglu(a.gate_pre, a.up_pre, h, A * F);
  per_expert(g, a.experts, [&](std::vector<TrainGemmArgs>& ps, size_t e, size_t first, size_t n) {
    ps.push_back(product(a, false, true, n, D, F, h + first * F, a.down[e], a.y + first * D, false));  // [n, D] = h · downᵀ
  });
  const VectorKernels& v = vector_kernels();
  pool().parallel_for(a.tokens, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; t++) {
      float* o = out + t * D;
      std::fill(o, o + D, 0.0f);
      for (size_t j = g.token_first[t]; j < g.token_first[t + 1]; j++) {
        const size_t pos = g.by_token[j];
        v.axpy(a.weights[a.order[pos]], a.y + pos * D, o, D);
      }
    }
  });
}

// Per expert, with dY = w·dOut rows: dDown += dYᵀ·h; dh = dY·down; dg = dh ⊙ up ⊙ silu'(gate); du = dh ⊙ silu(gate);
// dGate += dgᵀ·x; dUp += duᵀ·x; dx rows = dg·gate + du·up, summed per token in ascending expert id. The products of
// all experts run as one grouped GEMM per stage.
void experts_backward(const ExpertTrainArgs& a, const float* dy, const ExpertGrads& grads) {
  const size_t D = a.hidden, F = a.ffn, A = a.assignments;
  const Groups g = group(a);
  const VectorKernels& v = vector_kernels();
  thread_local std::vector<float> dy_buffer, h_buffer, dh_buffer, x_buffer, dx_buffer;
  float* d_rows = scratch(dy_buffer, A * D);
  pool().parallel_for(A, [&](size_t p0, size_t p1) {
    for (size_t pos = p0; pos < p1; pos++) {
      const size_t i = a.order[pos];
      const float* d = dy + static_cast<size_t>(a.token_ids[i]) * D;
      if (grads.d_weights) grads.d_weights[i] = (grads.d_weights_fresh ? 0.0f : grads.d_weights[i]) + v.dot(d, a.y + pos * D, D);
      std::fill(d_rows + pos * D, d_rows + (pos + 1) * D, 0.0f);
      v.axpy(a.weights[i], d, d_rows + pos * D, D);
    }
  });
  float* h = scratch(h_buffer, A * F);
  float* dh = scratch(dh_buffer, A * F);
  swiglu(a.gate_pre, a.up_pre, h, A * F);
  per_expert(g, a.experts, [&](std::vector<TrainGemmArgs>& ps, size_t e, size_t first, size_t n) {
    ps.push_back(product(a, false, false, n, F, D, d_rows + first * D, a.down[e], dh + first * F, false));  // dh [n, F] = dY · down [D, F]
    if (grads.d_down) ps.push_back(product(a, true, false, D, F, n, d_rows + first * D, h + first * F, grads.d_down[e], true));  // dDown += dYᵀ · h
  });
  in_chunks(A * F, [&](size_t begin, size_t count) { v.swiglu_backward(a.gate_pre + begin, a.up_pre + begin, dh + begin, h + begin, count); });  // dh → dg, h → du
  float* rows = scratch(x_buffer, A * D);
  float* dx_grouped = grads.dx ? scratch(dx_buffer, A * D) : nullptr;
  if (grads.d_gate || grads.d_up || dx_grouped) gather_rows(a, rows);
  per_expert(g, a.experts, [&](std::vector<TrainGemmArgs>& ps, size_t e, size_t first, size_t n) {
    if (grads.d_gate) ps.push_back(product(a, true, false, F, D, n, dh + first * F, rows + first * D, grads.d_gate[e], true));  // dGate += dgᵀ · x
    if (grads.d_up) ps.push_back(product(a, true, false, F, D, n, h + first * F, rows + first * D, grads.d_up[e], true));
    if (dx_grouped) ps.push_back(product(a, false, false, n, D, F, dh + first * F, a.gate[e], dx_grouped + first * D, false));  // dg · gate [F, D]
  });
  if (!dx_grouped) return;
  per_expert(g, a.experts, [&](std::vector<TrainGemmArgs>& ps, size_t e, size_t first, size_t n) {
    ps.push_back(product(a, false, false, n, D, F, h + first * F, a.up[e], dx_grouped + first * D, true));  // += du · up
  });
  pool().parallel_for(a.tokens, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; t++) {
      if (grads.dx_fresh) std::fill(grads.dx + t * D, grads.dx + (t + 1) * D, 0.0f);
      for (size_t j = g.token_first[t]; j < g.token_first[t + 1]; j++) v.axpy(1.0f, dx_grouped + static_cast<size_t>(g.by_token[j]) * D, grads.dx + t * D, D);
    }
  });
}

}  // namespace olmoe
