// The optimizer step (PyTorch's AdamW, clip_grad_norm_'s factor applied to the gradients first) and the global sum of
// squares for clipping. Each element of AdamW is computed in double and rounded once when stored, as the reference
// backend does.
#include <cmath>
#include <string>
#include <vector>

#include "kernels.h"
#include "pool.h"
#include "train-ops.h"
#include "train-vector.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define OLMOE_X86 1
#endif

namespace olmoe {

namespace {
constexpr size_t kChunk = 1 << 14;  // elements per work item

struct Span {
  size_t param, begin, end;
};

std::vector<Span> spans(const size_t* sizes, size_t count) {
  std::vector<Span> out;
  for (size_t p = 0; p < count; p++)
    for (size_t b = 0; b < sizes[p]; b += kChunk) out.push_back({p, b, std::min(sizes[p], b + kChunk)});
  return out;
}
}  // namespace

void adamw_step(const AdamWTensor* params, size_t count, const AdamWHyper& h) {
  std::vector<size_t> sizes(count);
  for (size_t p = 0; p < count; p++) sizes[p] = params[p].size;
  const std::vector<Span> work = spans(sizes.data(), count);
  const double correction1 = 1 - std::pow(h.beta1, h.step), sqrt_correction2 = std::sqrt(1 - std::pow(h.beta2, h.step));
  const double step_size = h.lr / correction1;
  const VectorKernels& vk = vector_kernels();
  pool().parallel_for(work.size(), [&](size_t w0, size_t w1) {
    for (size_t w = w0; w < w1; w++) {
      const AdamWTensor& p = params[work[w].param];
      const AdamWConstants c{h.beta1, h.beta2, h.eps, p.decay ? 1 - h.lr * h.weight_decay : 1, step_size, sqrt_correction2, h.grad_scale};
      const size_t at = work[w].begin, n = work[w].end - at;
      vk.adamw(p.value + at, p.grad + at, p.m + at, p.v + at, n, c);
    }
  });
}

double sum_of_squares(const float* const* arrays, const size_t* sizes, size_t count) {
  const std::vector<Span> work = spans(sizes, count);
  std::vector<double> partial(work.size(), 0.0);
  pool().parallel_for(work.size(), [&](size_t w0, size_t w1) {
    for (size_t w = w0; w < w1; w++) partial[w] = vector_kernels().sum_squares(arrays[work[w].param] + work[w].begin, work[w].end - work[w].begin);
  });
  double total = 0;
  for (double p : partial) total += p;  // in a fixed order: the same bits for any thread count
  return total;
}

}  // namespace olmoe
