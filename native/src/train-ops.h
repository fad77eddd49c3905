// Training kernels of the native backend: the backward of every op the model uses, the losses and the optimizer
// step, float32 on the thread pool (src/core/training.ts describes each op). Gradients are ADDED into the
// accumulators given (a null accumulator is not computed), or written when the accumulator is `fresh` (allocated
// for this op and not yet holding any value: the kernel writes every element, so it needs no zeroing first). Every reduction runs in a fixed order that does not
// depend on the thread count, so a run resumed with the same threads repeats its bits.
// Dimension legend: T tokens, N row width, D hidden, E experts, A assignments, F expert width, V vocab,
// H query heads, Hkv key/value heads, Hd head dim, S sequence length.
#pragma once
#include <cstddef>
#include <cstdint>

namespace olmoe {

// ---------------------------------------------------------------- rows (train-rows.cc)
// dx += s·(dy⊙w) − x·s³·((dy⊙w)·x)/N per row, s = 1/√(mean(x²) + eps); dw += Σ_rows dy ⊙ x·s.
void rmsnorm_backward(const float* x, const float* weight, const float* dy, size_t rows, size_t width, float eps, float* dx, bool dx_fresh, float* dw);
// NeoX rotation of x [T, heads·Hd] by +angle (forward) or −angle (`inverse`: the gradient), written into out or,
// with `accumulate`, added.
void rope_rotate(const float* x, size_t tokens, size_t heads, size_t head_dim, const int32_t* positions, const float* inv_freq, bool inverse, bool accumulate,
                 float* out);
// y += factor · x, or y = factor · x when `fresh`
void axpy_parallel(float factor, const float* x, float* y, size_t n, bool fresh = false);
// out = a + b
void add_parallel(const float* a, const float* b, float* out, size_t n);
// table[ids[t]] += dy[t] (rows of width N); repeated ids sum in token order.
void embedding_backward(const int32_t* ids, size_t tokens, const float* dy, size_t width, float* dtable);

// ---------------------------------------------------------------- router and experts (train-moe.cc)
struct RouterArgs {
  const float* logits;  // [T, E]
  size_t tokens, experts, top_k;
  bool norm_topk, expert_choice;
  size_t capacity;      // expert choice: tokens per expert (≤ T)
  float* probs;         // [T, E] out
  int32_t* expert_ids;  // [A] out
  int32_t* token_ids;   // [A] out
  float* weights;       // [A] out
};
// Softmax over E, then token choice (each token's top-K, probability descending, ties to the lower index: a = t·K + k)
// or expert choice (each expert's top-C tokens: a = e·C + c).
void router_forward(const RouterArgs& a);
// dLogits += softmax backward of (dProbs + the scatter of dWeights through the gather and optional renormalization).
void router_backward(const RouterArgs& a, const float* d_probs, const float* d_weights, float* d_logits, bool fresh);

struct ExpertTrainArgs {
  const float* x;  // [T, D]
  size_t tokens, hidden, ffn, assignments, experts;
  const float* const* gate;  // E × [F, D]
  const float* const* up;    // E × [F, D]
  const float* const* down;  // E × [D, F]
  const int32_t* expert_ids;  // [A]
  const int32_t* token_ids;   // [A]
  const float* weights;       // [A]
  // Kept by the forward for the backward, in grouped order (assignments sorted by expert, stable):
  int32_t* order;    // [A] grouped position → assignment
  float* gate_pre;   // [A, F]
  float* up_pre;     // [A, F]
  float* y;          // [A, D] expert outputs before weighting
  bool bf16 = false;  // every product in bf16 mixed precision (train-gemm.h)
};
// out [T, D] = Σ_a w_a · y_a into token_a, per token in ascending expert id (HF's index_add_ order).
void experts_forward(const ExpertTrainArgs& a, float* out);
struct ExpertGrads {
  float* dx;                 // [T, D] or null
  bool dx_fresh;
  float* d_weights;          // [A] or null
  bool d_weights_fresh;
  float* const* d_gate;      // E × [F, D] or null
  float* const* d_up;
  float* const* d_down;
};
void experts_backward(const ExpertTrainArgs& a, const float* dy, const ExpertGrads& g);

// ---------------------------------------------------------------- attention without a cache (train-attention.cc)
struct TrainAttentionArgs {
  const float* q;  // [T, H·Hd]
  const float* k;  // [T, Hkv·Hd]
  const float* v;  // [T, Hkv·Hd]
  const int32_t* lengths;  // per sequence; rows are the sequences one after the other
  size_t sequences, heads, kv_heads, head_dim;
  float* lse;  // [T, H] log-sum-exp of each query row's scaled scores (kept for the backward)
};
void attention_forward(const TrainAttentionArgs& a, float* out);
struct AttentionGrads {
  float *dq, *dk, *dv;
  bool dq_fresh, dk_fresh, dv_fresh;
};
void attention_backward(const TrainAttentionArgs& a, const float* out, const float* d_out, const AttentionGrads& g);

// ---------------------------------------------------------------- losses (train-losses.cc)
// Σ over counted rows of lse − logit[target] (targets < 0 skipped); lse [T] kept. Returns the sum (double).
double cross_entropy_forward(const float* logits, size_t tokens, size_t vocab, const int32_t* targets, float* lse);
// dlogits += scale · w_t · (softmax − onehot) on counted rows; row_weights w [T] may be null (all 1): the weighted
// cross-entropy of sequence-level losses (DPO, KTO) shares the kernel.
void cross_entropy_backward(const float* logits, size_t tokens, size_t vocab, const int32_t* targets, const float* lse, float scale, const float* row_weights, float* dlogits, bool fresh);
double load_balancing_forward(const float* probs, size_t tokens, size_t experts, const double* counts, double scale);
void load_balancing_backward(size_t tokens, size_t experts, const double* counts, double factor, float* dprobs, bool fresh);
double router_z_forward(const float* logits, size_t tokens, size_t experts, double scale);
void router_z_backward(const float* logits, size_t tokens, size_t experts, double factor, float* dlogits, bool fresh);

// ---------------------------------------------------------------- optimizer (train-optim.cc)
struct AdamWTensor {
  float* value;
  const float* grad;
  float* m;
  float* v;
  size_t size;
  bool decay;
};
struct AdamWHyper {
  double lr, beta1, beta2, eps, weight_decay, grad_scale;
  double step;
};
void adamw_step(const AdamWTensor* params, size_t count, const AdamWHyper& h);
double sum_of_squares(const float* const* arrays, const size_t* sizes, size_t count);

// ---------------------------------------------------------------- machine peak (train-optim.cc)
// FP32 FMA throughput of the pool's threads over about `seconds`, in GFLOP/s (the bench's yardstick).

}  // namespace olmoe
