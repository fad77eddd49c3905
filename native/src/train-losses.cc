// The training losses (spec §3.8): cross-entropy over the vocabulary (vectorized exp, train-vector.inc), the load-balancing loss and the router z-loss, forward and backward. Sums over rows go through fixed
// chunks of rows added in order, so the result does not depend on the thread count.
// Dimension legend: T tokens, V vocab, E experts.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels.h"
#include "pool.h"
#include "train-ops.h"
#include "train-vector.h"


namespace olmoe {

namespace {

constexpr size_t kRowChunk = 16;  // rows per partial sum

// Σ over rows of row_value(t) in double, by fixed chunks of rows (thread-count independent).
template <typename Fn>
double sum_rows(size_t rows, const Fn& row_value) {
  const size_t chunks = (rows + kRowChunk - 1) / kRowChunk;
  std::vector<double> partial(chunks, 0.0);
  pool().parallel_for(chunks, [&](size_t c0, size_t c1) {
    for (size_t c = c0; c < c1; c++)
      for (size_t t = c * kRowChunk; t < std::min(rows, (c + 1) * kRowChunk); t++) partial[c] += row_value(t);
  });
  double total = 0;
  for (double p : partial) total += p;
  return total;
}

float log_sum_exp(const float* row, size_t n) {
  const VectorKernels& v = vector_kernels();
  const float max = v.max(row, n);
  return max + std::log(v.sum_exp(row, n, max));
}

}  // namespace

double cross_entropy_forward(const float* logits, size_t tokens, size_t vocab, const int32_t* targets, float* lse) {
  return sum_rows(tokens, [&](size_t t) {
    const float* row = logits + t * vocab;
    lse[t] = log_sum_exp(row, vocab);
    return targets[t] < 0 ? 0.0 : static_cast<double>(lse[t]) - row[targets[t]];
  });
}

void cross_entropy_backward(const float* logits, size_t tokens, size_t vocab, const int32_t* targets, const float* lse, float scale, const float* row_weights, float* dlogits, bool fresh) {
  const VectorKernels& v = vector_kernels();
  pool().parallel_for(tokens, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; t++) {
      if (fresh) std::fill(dlogits + t * vocab, dlogits + (t + 1) * vocab, 0.0f);
      const float row_scale = row_weights ? scale * row_weights[t] : scale;
      if (targets[t] < 0 || row_scale == 0.0f) continue;
      v.add_exp(logits + t * vocab, vocab, lse[t], row_scale, dlogits + t * vocab);
      dlogits[t * vocab + targets[t]] -= row_scale;
    }
  });
}

double load_balancing_forward(const float* probs, size_t tokens, size_t experts, const double* counts, double scale) {
  const double total = sum_rows(tokens, [&](size_t t) {
    double row = 0;
    for (size_t e = 0; e < experts; e++) row += counts[e] * probs[t * experts + e];
    return row;
  });
  return scale * total / static_cast<double>(tokens);
}

void load_balancing_backward(size_t tokens, size_t experts, const double* counts, double factor, float* dprobs, bool fresh) {
  pool().parallel_for(tokens, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; t++)
      for (size_t e = 0; e < experts; e++) dprobs[t * experts + e] = (fresh ? 0.0f : dprobs[t * experts + e]) + static_cast<float>(factor * counts[e]);
  });
}

namespace {
double row_log_sum_exp(const float* row, size_t n) {
  double max = -INFINITY, total = 0;
  for (size_t i = 0; i < n; i++) max = std::max(max, static_cast<double>(row[i]));
  for (size_t i = 0; i < n; i++) total += std::exp(row[i] - max);
  return max + std::log(total);
}
}  // namespace

double router_z_forward(const float* logits, size_t tokens, size_t experts, double scale) {
  return scale * sum_rows(tokens, [&](size_t t) {
    const double lse = row_log_sum_exp(logits + t * experts, experts);
    return lse * lse;
  });
}

void router_z_backward(const float* logits, size_t tokens, size_t experts, double factor, float* dlogits, bool fresh) {
  pool().parallel_for(tokens, [&](size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; t++) {
      const float* row = logits + t * experts;
      const double lse = row_log_sum_exp(row, experts);
      for (size_t e = 0; e < experts; e++)
        dlogits[t * experts + e] = (fresh ? 0.0f : dlogits[t * experts + e]) + static_cast<float>(factor * 2 * lse * std::exp(row[e] - lse));
    }
  });
}

}  // namespace olmoe
