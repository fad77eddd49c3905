// N-API surface of the training kernels (train-ops.h). The TypeScript side (src/backends/native/training.ts) checks
// shapes; here each array is checked to hold what the kernel will touch, so a wrong call is a RangeError, not a
// write past a buffer. Like the rest of the addon, calls are synchronous on the JS thread.
#include <napi.h>

#include <string>
#include <vector>

#include "train-gemm.h"
#include "step-plan.h"
#include "train-ops.h"

namespace olmoe {

namespace {

struct Args {
  const Napi::CallbackInfo& info;
  bool failed = false;

  size_t size(size_t i) const { return static_cast<size_t>(info[i].As<Napi::Number>().Int64Value()); }
  double number(size_t i) const { return info[i].As<Napi::Number>().DoubleValue(); }
  bool flag(size_t i) const { return info[i].As<Napi::Boolean>().Value(); }
  bool optional_flag(size_t i) const { return present(i) && info[i].ToBoolean().Value(); }
  bool present(size_t i) const { return i < info.Length() && !info[i].IsNull() && !info[i].IsUndefined(); }

  // A typed array argument of at least `count` elements of T (null when absent and `optional`).
  template <typename T>
  T* array(size_t i, size_t count, const char* name, bool optional = false) {
    if (failed) return nullptr;
    if (!present(i)) {
      if (!optional) fail(std::string(name) + " is missing");
      return nullptr;
    }
    auto a = info[i].As<Napi::TypedArray>();
    if (a.ElementLength() < count || a.ElementSize() != sizeof(T)) {
      fail(std::string(name) + ": expected " + std::to_string(count) + " elements of " + std::to_string(sizeof(T)) + " bytes, got " +
           std::to_string(a.ElementLength()) + " of " + std::to_string(a.ElementSize()));
      return nullptr;
    }
    return reinterpret_cast<T*>(static_cast<char*>(a.ArrayBuffer().Data()) + a.ByteOffset());
  }

  // A JS array of typed arrays, each of at least `count` floats (empty when absent and optional).
  std::vector<float*> arrays(size_t i, size_t length, size_t count, const char* name, bool optional = false) {
    std::vector<float*> out;
    if (failed) return out;
    if (!present(i)) {
      if (!optional) fail(std::string(name) + " is missing");
      return out;
    }
    auto list = info[i].As<Napi::Array>();
    if (list.Length() != length) {
      fail(std::string(name) + ": expected " + std::to_string(length) + " arrays, got " + std::to_string(list.Length()));
      return out;
    }
    for (uint32_t j = 0; j < length && !failed; j++) {
      auto a = list.Get(j).As<Napi::TypedArray>();
      if (a.ElementLength() < count || a.ElementSize() != 4) fail(std::string(name) + "[" + std::to_string(j) + "] is too short");
      else out.push_back(reinterpret_cast<float*>(static_cast<char*>(a.ArrayBuffer().Data()) + a.ByteOffset()));
    }
    return out;
  }

  void fail(const std::string& message) {
    if (failed) return;
    failed = true;
    Napi::RangeError::New(info.Env(), "olmoe native: " + message).ThrowAsJavaScriptException();
  }
};

Napi::Value Undefined(const Napi::CallbackInfo& info) { return info.Env().Undefined(); }

// rmsnormBackward(x, weight, dy, rows, width, eps, dx?, dw?, dxFresh)
Napi::Value RmsNormBackward(const Napi::CallbackInfo& info) {
  Args a{info};
  const size_t rows = a.size(3), width = a.size(4), n = rows * width;
  const float* x = a.array<float>(0, n, "x");
  const float* w = a.array<float>(1, width, "weight");
  const float* dy = a.array<float>(2, n, "dy");
  float* dx = a.array<float>(6, n, "dx", true);
  float* dw = a.array<float>(7, width, "dw", true);
  if (!a.failed) rmsnorm_backward(x, w, dy, rows, width, static_cast<float>(a.number(5)), dx, a.optional_flag(8), dw);
  return Undefined(info);
}

// matmulBackward(x, w, dy, tokens, inDim, outDim, dx?, dw?, dxFresh, bf16?): dx (+)= dy · w; dw += dyᵀ · x, one batch of
// products (bf16: in mixed precision).
Napi::Value MatmulBackward(const Napi::CallbackInfo& info) {
  Args a{info};
  const size_t tokens = a.size(3), in = a.size(4), out = a.size(5);
  const float* x = a.array<float>(0, tokens * in, "x");
  const float* w = a.array<float>(1, out * in, "w");
  const float* dy = a.array<float>(2, tokens * out, "dy");
  float* dx = a.array<float>(6, tokens * in, "dx", true);
  float* dw = a.array<float>(7, out * in, "dw", true);
  if (a.failed) return Undefined(info);
  TrainGemmArgs products[2];
  size_t count = 0;
  const bool bf16 = a.optional_flag(9);
  if (dx) products[count++] = gemm_args(false, false, tokens, in, out, dy, w, dx, !a.optional_flag(8), bf16);
  if (dw) products[count++] = gemm_args(true, false, out, in, tokens, dy, x, dw, true, bf16);
  train_gemm_batch(products, count);
  return Undefined(info);
}

// ropeRotate(x, tokens, heads, headDim, positions, invFreq, inverse, accumulate, out)
Napi::Value RopeRotate(const Napi::CallbackInfo& info) {
  Args a{info};
  const size_t tokens = a.size(1), heads = a.size(2), head_dim = a.size(3), n = tokens * heads * head_dim;
  const float* x = a.array<float>(0, n, "x");
  const int32_t* positions = a.array<int32_t>(4, tokens, "positions");
  const float* inv = a.array<float>(5, head_dim / 2, "invFreq");
  float* out = a.array<float>(8, n, "out");
  if (a.failed) return Undefined(info);
  const bool inverse = a.flag(6), accumulate = a.flag(7);
  if (StepPlan* plan = recording_plan()) {  // a later run: these positions + shift, each ≥ 0
    std::vector<int32_t> at(positions, positions + tokens);
    for (int32_t p : at) plan->bound(-static_cast<ptrdiff_t>(p), plan->shift_max);
    record_step({"rope"}, [=](ptrdiff_t shift) {
      std::vector<int32_t> moved(at);
      for (int32_t& p : moved) p = static_cast<int32_t>(p + shift);
      rope_rotate(x, tokens, heads, head_dim, moved.data(), inv, inverse, accumulate, out);
    });
  }
  rope_rotate(x, tokens, heads, head_dim, positions, inv, inverse, accumulate, out);
  return Undefined(info);
}

// axpy(factor, x, y, fresh?): y += factor · x (y = factor · x when fresh)
Napi::Value Axpy(const Napi::CallbackInfo& info) {
  Args a{info};
  const size_t n = info[1].As<Napi::TypedArray>().ElementLength();
  const float* x = a.array<float>(1, n, "x");
  float* y = a.array<float>(2, n, "y");
  if (!a.failed) axpy_parallel(static_cast<float>(a.number(0)), x, y, n, a.optional_flag(3));
  return Undefined(info);
}

// embeddingBackward(ids, dy, width, dtable, rows)
Napi::Value EmbeddingBackward(const Napi::CallbackInfo& info) {
  Args a{info};
  const size_t tokens = info[0].As<Napi::TypedArray>().ElementLength(), width = a.size(2), rows = a.size(4);
  const int32_t* ids = a.array<int32_t>(0, tokens, "ids");
  const float* dy = a.array<float>(1, tokens * width, "dy");
  float* table = a.array<float>(3, rows * width, "dtable");
  for (size_t t = 0; t < tokens && !a.failed; t++)
    if (ids[t] < 0 || static_cast<size_t>(ids[t]) >= rows) a.fail("id " + std::to_string(ids[t]) + " outside the table");
  if (!a.failed) embedding_backward(ids, tokens, dy, width, table);
  return Undefined(info);
}

// The router's configuration and arrays: (logits, tokens, experts, topK, normTopK, expertChoice, capacity, probs, expertIds, tokenIds, weights)
RouterArgs router_args(Args& a) {
  RouterArgs r{};
  r.tokens = a.size(1);
  r.experts = a.size(2);
  r.top_k = a.size(3);
  r.norm_topk = a.flag(4);
  r.expert_choice = a.flag(5);
  r.capacity = a.size(6);
  const size_t assignments = r.expert_choice ? r.experts * r.capacity : r.tokens * r.top_k;
  if ((r.expert_choice ? r.capacity > r.tokens : r.top_k > r.experts)) a.fail("top-k or capacity larger than what there is to choose from");
  r.logits = a.array<float>(0, r.tokens * r.experts, "logits");
  r.probs = a.array<float>(7, r.tokens * r.experts, "probs");
  r.expert_ids = a.array<int32_t>(8, assignments, "expertIds");
  r.token_ids = a.array<int32_t>(9, assignments, "tokenIds");
  r.weights = a.array<float>(10, assignments, "weights");
  return r;
}

Napi::Value RouterForward(const Napi::CallbackInfo& info) {
  Args a{info};
  const RouterArgs r = router_args(a);
  if (!a.failed) run_step({"router"}, [=](ptrdiff_t) { router_forward(r); });
  return Undefined(info);
}

// routerBackward(<router args>, dProbs?, dWeights?, dLogits, fresh)
Napi::Value RouterBackward(const Napi::CallbackInfo& info) {
  Args a{info};
  const RouterArgs r = router_args(a);
  const size_t assignments = r.expert_choice ? r.experts * r.capacity : r.tokens * r.top_k;
  const float* dp = a.array<float>(11, r.tokens * r.experts, "dProbs", true);
  const float* dw = a.array<float>(12, assignments, "dWeights", true);
  float* dl = a.array<float>(13, r.tokens * r.experts, "dLogits");
  if (!a.failed) router_backward(r, dp, dw, dl, a.optional_flag(14));
  return Undefined(info);
}

// (x, tokens, hidden, ffn, gates[], ups[], downs[], expertIds, tokenIds, weights, order, gatePre, upPre, y)
ExpertTrainArgs expert_args(Args& a, std::vector<float*>& gates, std::vector<float*>& ups, std::vector<float*>& downs) {
  ExpertTrainArgs e{};
  e.tokens = a.size(1);
  e.hidden = a.size(2);
  e.ffn = a.size(3);
  e.experts = a.present(4) ? a.info[4].As<Napi::Array>().Length() : 0;
  e.assignments = a.present(7) ? a.info[7].As<Napi::TypedArray>().ElementLength() : 0;
  const size_t A = e.assignments, D = e.hidden, F = e.ffn;
  gates = a.arrays(4, e.experts, F * D, "gates");
  ups = a.arrays(5, e.experts, F * D, "ups");
  downs = a.arrays(6, e.experts, D * F, "downs");
  e.gate = gates.data();
  e.up = ups.data();
  e.down = downs.data();
  e.x = a.array<float>(0, e.tokens * D, "x");
  e.expert_ids = a.array<int32_t>(7, A, "expertIds");
  e.token_ids = a.array<int32_t>(8, A, "tokenIds");
  e.weights = a.array<float>(9, A, "weights");
  e.order = a.array<int32_t>(10, A, "order");
  e.gate_pre = a.array<float>(11, A * F, "gatePre");
  e.up_pre = a.array<float>(12, A * F, "upPre");
  e.y = a.array<float>(13, A * D, "y");
  for (size_t i = 0; i < A && !a.failed; i++) {
    if (e.expert_ids[i] < 0 || static_cast<size_t>(e.expert_ids[i]) >= e.experts) a.fail("expert id " + std::to_string(e.expert_ids[i]) + " out of range");
    else if (e.token_ids[i] < 0 || static_cast<size_t>(e.token_ids[i]) >= e.tokens) a.fail("token id " + std::to_string(e.token_ids[i]) + " out of range");
  }
  return e;
}

Napi::Value ExpertsForward(const Napi::CallbackInfo& info) {
  Args a{info};
  std::vector<float*> gates, ups, downs;
  ExpertTrainArgs e = expert_args(a, gates, ups, downs);
  float* out = a.array<float>(14, e.tokens * e.hidden, "out");
  e.bf16 = a.optional_flag(15);
  if (!a.failed) experts_forward(e, out);
  return Undefined(info);
}

// expertsBackward(<expert args>, dy, dx?, dWeights?, dGates[]?, dUps[]?, dDowns[]?, dxFresh, dWeightsFresh)
Napi::Value ExpertsBackward(const Napi::CallbackInfo& info) {
  Args a{info};
  std::vector<float*> gates, ups, downs;
  ExpertTrainArgs e = expert_args(a, gates, ups, downs);
  const size_t D = e.hidden, F = e.ffn;
  const float* dy = a.array<float>(14, e.tokens * D, "dy");
  ExpertGrads g{};
  g.dx = a.array<float>(15, e.tokens * D, "dx", true);
  g.d_weights = a.array<float>(16, e.assignments, "dWeights", true);
  auto dg = a.arrays(17, e.experts, F * D, "dGates", true), du = a.arrays(18, e.experts, F * D, "dUps", true), dd = a.arrays(19, e.experts, D * F, "dDowns", true);
  g.d_gate = dg.empty() ? nullptr : dg.data();
  g.d_up = du.empty() ? nullptr : du.data();
  g.d_down = dd.empty() ? nullptr : dd.data();
  g.dx_fresh = a.optional_flag(20);
  g.d_weights_fresh = a.optional_flag(21);
  e.bf16 = a.optional_flag(22);
  if (!a.failed) experts_backward(e, dy, g);
  return Undefined(info);
}

// (q, k, v, lengths, heads, kvHeads, headDim, lse)
TrainAttentionArgs attention_args(Args& a, size_t& tokens) {
  TrainAttentionArgs t{};
  t.sequences = a.info[3].As<Napi::TypedArray>().ElementLength();
  t.lengths = a.array<int32_t>(3, t.sequences, "lengths");
  tokens = 0;
  for (size_t s = 0; s < t.sequences && !a.failed; s++) tokens += static_cast<size_t>(t.lengths[s]);
  t.heads = a.size(4);
  t.kv_heads = a.size(5);
  t.head_dim = a.size(6);
  if (t.kv_heads == 0 || t.heads % t.kv_heads != 0) a.fail("kv heads must divide heads");
  t.q = a.array<float>(0, tokens * t.heads * t.head_dim, "q");
  t.k = a.array<float>(1, tokens * t.kv_heads * t.head_dim, "k");
  t.v = a.array<float>(2, tokens * t.kv_heads * t.head_dim, "v");
  t.lse = a.array<float>(7, tokens * t.heads, "lse");
  return t;
}

Napi::Value AttentionForward(const Napi::CallbackInfo& info) {
  Args a{info};
  size_t tokens = 0;
  const TrainAttentionArgs t = attention_args(a, tokens);
  float* out = a.array<float>(8, tokens * t.heads * t.head_dim, "out");
  if (!a.failed) attention_forward(t, out);
  return Undefined(info);
}

// attentionBackward(<attention args>, out, dOut, dq, dk, dv, dqFresh, dkFresh, dvFresh)
Napi::Value AttentionBackward(const Napi::CallbackInfo& info) {
  Args a{info};
  size_t tokens = 0;
  const TrainAttentionArgs t = attention_args(a, tokens);
  const size_t n = tokens * t.heads * t.head_dim, kv = tokens * t.kv_heads * t.head_dim;
  const float* out = a.array<float>(8, n, "out");
  const float* d_out = a.array<float>(9, n, "dOut");
  float* dq = a.array<float>(10, n, "dq");
  float* dk = a.array<float>(11, kv, "dk");
  float* dv = a.array<float>(12, kv, "dv");
  if (!a.failed) attention_backward(t, out, d_out, AttentionGrads{dq, dk, dv, a.optional_flag(13), a.optional_flag(14), a.optional_flag(15)});
  return Undefined(info);
}

// Every target below the vocabulary (ignored targets are negative), else the call fails naming the first one outside.
void check_targets(Args& a, const int32_t* targets, size_t tokens, size_t vocab) {
  for (size_t t = 0; t < tokens && !a.failed; t++)
    if (targets[t] >= static_cast<int64_t>(vocab)) a.fail("target " + std::to_string(targets[t]) + " outside the vocabulary");
}

// crossEntropyForward(logits, tokens, vocab, targets, lse) → Σ over counted rows of lse − logit[target]
Napi::Value CrossEntropyForward(const Napi::CallbackInfo& info) {
  Args a{info};
  const size_t tokens = a.size(1), vocab = a.size(2);
  const float* logits = a.array<float>(0, tokens * vocab, "logits");
  const int32_t* targets = a.array<int32_t>(3, tokens, "targets");
  float* lse = a.array<float>(4, tokens, "lse");
  if (!a.failed) check_targets(a, targets, tokens, vocab);
  if (a.failed) return Undefined(info);
  return Napi::Number::New(info.Env(), cross_entropy_forward(logits, tokens, vocab, targets, lse));
}

// crossEntropyBackward(logits, tokens, vocab, targets, lse, scale, dlogits, fresh), and weighted (row t scaled by
// weights[t]): weightedCrossEntropyBackward(logits, tokens, vocab, targets, lse, scale, weights, dlogits, fresh)
Napi::Value cross_entropy_backward_binding(const Napi::CallbackInfo& info, bool weighted) {
  Args a{info};
  const size_t tokens = a.size(1), vocab = a.size(2);
  const float* logits = a.array<float>(0, tokens * vocab, "logits");
  const int32_t* targets = a.array<int32_t>(3, tokens, "targets");
  const float* lse = a.array<float>(4, tokens, "lse");
  const float* weights = weighted ? a.array<float>(6, tokens, "weights") : nullptr;
  const size_t at = weighted ? 7 : 6;  // dlogits, then the fresh flag
  float* d = a.array<float>(at, tokens * vocab, "dlogits");
  if (!a.failed) check_targets(a, targets, tokens, vocab);
  if (!a.failed) cross_entropy_backward(logits, tokens, vocab, targets, lse, static_cast<float>(a.number(5)), weights, d, a.optional_flag(at + 1));
  return Undefined(info);
}

Napi::Value CrossEntropyBackward(const Napi::CallbackInfo& info) { return cross_entropy_backward_binding(info, false); }
Napi::Value WeightedCrossEntropyBackward(const Napi::CallbackInfo& info) { return cross_entropy_backward_binding(info, true); }

// loadBalancingForward(probs, tokens, experts, counts, scale) → loss; loadBalancingBackward(tokens, experts, counts, factor, dprobs)
Napi::Value LoadBalancingForward(const Napi::CallbackInfo& info) {
  Args a{info};
  const size_t tokens = a.size(1), experts = a.size(2);
  const float* p = a.array<float>(0, tokens * experts, "probs");
  const double* counts = a.array<double>(3, experts, "counts");
  if (a.failed) return Undefined(info);
  return Napi::Number::New(info.Env(), load_balancing_forward(p, tokens, experts, counts, a.number(4)));
}

Napi::Value LoadBalancingBackward(const Napi::CallbackInfo& info) {
  Args a{info};
  const size_t tokens = a.size(0), experts = a.size(1);
  const double* counts = a.array<double>(2, experts, "counts");
  float* d = a.array<float>(4, tokens * experts, "dprobs");
  if (!a.failed) load_balancing_backward(tokens, experts, counts, a.number(3), d, a.optional_flag(5));
  return Undefined(info);
}

// routerZForward(logits, tokens, experts, scale) → loss; routerZBackward(logits, tokens, experts, factor, dlogits)
Napi::Value RouterZForward(const Napi::CallbackInfo& info) {
  Args a{info};
  const size_t tokens = a.size(1), experts = a.size(2);
  const float* logits = a.array<float>(0, tokens * experts, "logits");
  if (a.failed) return Undefined(info);
  return Napi::Number::New(info.Env(), router_z_forward(logits, tokens, experts, a.number(3)));
}

Napi::Value RouterZBackward(const Napi::CallbackInfo& info) {
  Args a{info};
  const size_t tokens = a.size(1), experts = a.size(2);
  const float* logits = a.array<float>(0, tokens * experts, "logits");
  float* d = a.array<float>(4, tokens * experts, "dlogits");
  if (!a.failed) router_z_backward(logits, tokens, experts, a.number(3), d, a.optional_flag(5));
  return Undefined(info);
}

// adamw(values[], grads[], ms[], vs[], decays (Uint8Array), lr, beta1, beta2, eps, weightDecay, step, gradScale)
Napi::Value AdamW(const Napi::CallbackInfo& info) {
  Args a{info};
  const size_t count = info[0].As<Napi::Array>().Length();
  const uint8_t* decays = a.array<uint8_t>(4, count, "decays");
  std::vector<AdamWTensor> params(count);
  auto list = [&](size_t i, size_t j) { return info[i].As<Napi::Array>().Get(static_cast<uint32_t>(j)).As<Napi::TypedArray>(); };
  for (size_t j = 0; j < count && !a.failed; j++) {
    const size_t size = list(0, j).ElementLength();
    for (size_t i = 1; i < 4; i++)
      if (list(i, j).ElementLength() != size) a.fail("adamw: param " + std::to_string(j) + " has arrays of different sizes");
    auto data = [&](size_t i) { return reinterpret_cast<float*>(static_cast<char*>(list(i, j).ArrayBuffer().Data()) + list(i, j).ByteOffset()); };
    if (!a.failed) params[j] = {data(0), data(1), data(2), data(3), size, decays[j] != 0};
  }
  if (a.failed) return Undefined(info);
  const AdamWHyper h{a.number(5), a.number(6), a.number(7), a.number(8), a.number(9), a.number(11), a.number(10)};
  adamw_step(params.data(), count, h);
  return Undefined(info);
}

// sumOfSquares(arrays[]) → Σ x²
Napi::Value SumOfSquares(const Napi::CallbackInfo& info) {
  auto list = info[0].As<Napi::Array>();
  std::vector<const float*> arrays;
  std::vector<size_t> sizes;
  for (uint32_t j = 0; j < list.Length(); j++) {
    auto t = list.Get(j).As<Napi::Float32Array>();
    arrays.push_back(t.Data());
    sizes.push_back(t.ElementLength());
  }
  return Napi::Number::New(info.Env(), sum_of_squares(arrays.data(), sizes.data(), arrays.size()));
}

// trainGemmBf16Kernel(): how this SIMD level computes bf16 products (train-gemm.h).
Napi::Value TrainGemmBf16Kernel(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), train_gemm_bf16_kernel()); }

// measureBf16Peak(repeats): FLOP/s of the bf16 kernel's instruction (AMX or vdpbf16ps) on the pool's threads (0: none).
Napi::Value MeasureBf16Peak(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), bf16_peak(static_cast<int>(info[0].As<Napi::Number>().Int32Value())));
}

// roundBf16(x, out): out[i] = x[i] rounded to the nearest bfloat16 (ties to even), the GEMM's operand rounding.
Napi::Value RoundBf16(const Napi::CallbackInfo& info) {
  Args a{info};
  const size_t n = info[0].As<Napi::TypedArray>().ElementLength();
  const float* x = a.array<float>(0, n, "x");
  float* out = a.array<float>(1, n, "out");
  if (!a.failed)
    for (size_t i = 0; i < n; i++) out[i] = round_bf16(x[i]);
  return Undefined(info);
}

}  // namespace

void register_training(Napi::Env env, Napi::Object exports) {
  const std::pair<const char*, Napi::Value (*)(const Napi::CallbackInfo&)> functions[] = {
      {"matmulBackward", MatmulBackward}, {"rmsnormBackward", RmsNormBackward}, {"ropeRotate", RopeRotate}, {"axpy", Axpy}, {"embeddingBackward", EmbeddingBackward},
      {"routerForward", RouterForward}, {"routerBackward", RouterBackward}, {"expertsForward", ExpertsForward}, {"expertsBackward", ExpertsBackward},
      {"attentionForward", AttentionForward}, {"attentionBackward", AttentionBackward}, {"crossEntropyForward", CrossEntropyForward},
      {"crossEntropyBackward", CrossEntropyBackward}, {"weightedCrossEntropyBackward", WeightedCrossEntropyBackward}, {"loadBalancingForward", LoadBalancingForward}, {"loadBalancingBackward", LoadBalancingBackward},
      {"routerZForward", RouterZForward}, {"routerZBackward", RouterZBackward}, {"adamw", AdamW}, {"sumOfSquares", SumOfSquares},
      {"trainGemmBf16Kernel", TrainGemmBf16Kernel}, {"roundBf16", RoundBf16}, {"measureBf16Peak", MeasureBf16Peak}
  };
  for (const auto& [name, fn] : functions) exports.Set(name, Napi::Function::New(env, fn));
}

}  // namespace olmoe
