// A decode step's native work, recorded once and run again for later tokens without JavaScript between the ops
// (the CUDA-graph idea; src/backends/native/index.ts recordStep/replayStep). While a plan records, each recordable op
// (matmul, matmuls, experts, rmsnorm, add, rope, router, KV store, attention) runs as usual and keeps a copy
// of its resolved arguments. A run `shift` positions after the recorded one moves what depends on the position: the
// rope positions, the KV cache row a store writes, the attention's cache length. Everything else (weights, the
// activations, the cache's storage) must be the same memory as when recorded; the TypeScript side keeps it alive,
// owned by the plan, and records anew when the cache's storage moves.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

namespace olmoe {

using PlanStep = std::function<void(ptrdiff_t shift)>;

// What a step is, for a profile of a run (planRun with a profile): its kind, and the bytes of weights and KV cache it
// reads (or, for a KV store, writes) when run `shift` positions on: bytes + shift · bytes_per_shift.
struct StepCost {
  const char* kind;
  double bytes = 0;
  double bytes_per_shift = 0;
};

struct StepPlan {
  std::vector<PlanStep> steps;
  std::vector<StepCost> costs;  // one per step
  // The shifts every step can take: a KV row and an attention's cache inside their buffers, positions ≥ 0.
  ptrdiff_t shift_min = std::numeric_limits<ptrdiff_t>::min() / 2;
  ptrdiff_t shift_max = std::numeric_limits<ptrdiff_t>::max() / 2;

  // Shifts s with low ≤ s ≤ high only.
  void bound(ptrdiff_t low, ptrdiff_t high) {
    if (low > shift_min) shift_min = low;
    if (high < shift_max) shift_max = high;
  }
};

// The plan recording on this thread, else null.
inline StepPlan*& recording_plan() {
  thread_local StepPlan* plan = nullptr;
  return plan;
}

// Keeps `step` in the plan recording on this thread, if any, with what it costs.
template <typename Step>
void record_step(const StepCost& cost, Step&& step) {
  if (StepPlan* plan = recording_plan()) {
    plan->steps.emplace_back(std::forward<Step>(step));
    plan->costs.push_back(cost);
  }
}

// Runs `step` for the position it was called with and, while a plan records, keeps it.
template <typename Step>
void run_step(const StepCost& cost, Step&& step) {
  record_step(cost, step);
  step(0);
}

}  // namespace olmoe
