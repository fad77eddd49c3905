// Backward of the per-row ops (RMSNorm, RoPE, embedding gather) and the accumulation the tape uses, on the thread
// pool. Reductions over rows (the gain's and the table's gradients) run in fixed chunks or by column, never split by
// thread, so each element is summed in the same order whatever the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "pool.h"
#include "train-ops.h"
#include "train-vector.h"

namespace olmoe {

namespace {
// Columns per work item of a reduction over rows (the embedding table's gradient): a few cache lines.
constexpr size_t kColumnBlock = 64;
}  // namespace

// One pass over row chunks: each chunk's rows give their dx and a partial sum of dw; the partials are then added in
// chunk order (fixed chunks: the same bits for any thread count).
void rmsnorm_backward(const float* x, const float* weight, const float* dy, size_t rows, size_t width, float eps, float* dx, bool dx_fresh, float* dw) {
  constexpr size_t kRowChunk = 64;
  const VectorKernels& v = vector_kernels();
  const size_t chunks = (rows + kRowChunk - 1) / kRowChunk;
  thread_local std::vector<float> partial_buffer;
  if (dw && partial_buffer.size() < chunks * width) partial_buffer.resize(chunks * width);
  float* partial = partial_buffer.data();
  pool().parallel_for(chunks, [&](size_t c0, size_t c1) {
    for (size_t c = c0; c < c1; c++) {
      float* part = dw ? partial + c * width : nullptr;
      if (part) std::fill(part, part + width, 0.0f);
      for (size_t r = c * kRowChunk; r < std::min(rows, (c + 1) * kRowChunk); r++) {
        const float* in = x + r * width;
        const float* g = dy + r * width;
        double squares = 0, gx = 0;
        v.rmsnorm_sums(in, g, weight, width, &squares, &gx);
        const double s = 1.0 / std::sqrt(squares / width + eps);
        if (part) v.add_product(g, in, static_cast<float>(s), part, width);
        if (!dx) continue;
        if (dx_fresh) std::fill(dx + r * width, dx + (r + 1) * width, 0.0f);
        v.rmsnorm_dx(in, g, weight, width, static_cast<float>(s), static_cast<float>(s * s * s * gx / width), dx + r * width);
      }
    }
  });
  if (dw)
    for (size_t c = 0; c < chunks; c++) v.axpy(1.0f, partial + c * width, dw, width);
}

namespace {
// cos and sin of position · inv_freq[j] for positions [0, positions), float32 angle, cos and sin as PyTorch forms
// them (spec §3.5): every training batch (and prefill) revisits the same positions, so they are computed once.
struct RopeTable {
  std::vector<float> inv_freq, cosines, sines;
  size_t positions = 0;
};

constexpr size_t kMaxTablePositions = 1 << 16;  // beyond it (long contexts): angles computed per call

void angles(int32_t position, const float* inv_freq, size_t half, float* cosines, float* sines) {
  for (size_t j = 0; j < half; j++) {
    const float angle = static_cast<float>(position) * inv_freq[j];
    cosines[j] = static_cast<float>(std::cos(static_cast<double>(angle)));
    sines[j] = static_cast<float>(std::sin(static_cast<double>(angle)));
  }
}

const RopeTable* rope_table(const float* inv_freq, size_t half, size_t positions) {
  if (positions > kMaxTablePositions) return nullptr;
  thread_local RopeTable table;  // per calling JS thread (inference may run in a worker thread)
  const bool same = table.inv_freq.size() == half && std::equal(inv_freq, inv_freq + half, table.inv_freq.begin());
  if (same && table.positions >= positions) return &table;
  table.inv_freq.assign(inv_freq, inv_freq + half);
  table.positions = std::max(positions, same ? 2 * table.positions : size_t{0});
  table.positions = std::min(std::max(table.positions, size_t{256}), kMaxTablePositions);
  table.cosines.resize(table.positions * half);
  table.sines.resize(table.positions * half);
  for (size_t p = 0; p < table.positions; p++) angles(static_cast<int32_t>(p), inv_freq, half, &table.cosines[p * half], &table.sines[p * half]);
  return &table;
}
}  // namespace

void rope_rotate(const float* x, size_t tokens, size_t heads, size_t head_dim, const int32_t* positions, const float* inv_freq, bool inverse, bool accumulate,
                 float* out) {
  const size_t half = head_dim / 2;
  int32_t max_position = 0;
  for (size_t t = 0; t < tokens; t++) max_position = std::max(max_position, positions[t]);
  const RopeTable* table = rope_table(inv_freq, half, static_cast<size_t>(max_position) + 1);
  const float direction = inverse ? -1.0f : 1.0f;
  pool().parallel_for(tokens, [&](size_t t0, size_t t1) {
    std::vector<float> own_cos(half), own_sin(half);
    for (size_t t = t0; t < t1; t++) {
      const float* cosines = own_cos.data();
      const float* sines = own_sin.data();
      if (table) {
        cosines = &table->cosines[static_cast<size_t>(positions[t]) * half];
        sines = &table->sines[static_cast<size_t>(positions[t]) * half];
      } else {
        angles(positions[t], inv_freq, half, own_cos.data(), own_sin.data());
      }
      for (size_t h = 0; h < heads; h++) {
        const size_t base = (t * heads + h) * head_dim;
        const float* in = x + base;
        float* o = out + base;
        for (size_t j = 0; j < half; j++) {
          const float first = in[j], second = in[j + half], sine = direction * sines[j];
          const float a = first * cosines[j] - second * sine, b = second * cosines[j] + first * sine;
          if (accumulate) {
            o[j] += a;
            o[j + half] += b;
          } else {
            o[j] = a;
            o[j + half] = b;
          }
        }
      }
    }
  });
}

void axpy_parallel(float factor, const float* x, float* y, size_t n, bool fresh) {
  constexpr size_t kChunk = 1 << 14;
  const VectorKernels& v = vector_kernels();
  pool().parallel_for((n + kChunk - 1) / kChunk, [&](size_t c0, size_t c1) {
    const size_t begin = c0 * kChunk, end = std::min(n, c1 * kChunk);
    if (fresh) std::fill(y + begin, y + end, 0.0f);
    v.axpy(factor, x + begin, y + begin, end - begin);
  });
}

void add_parallel(const float* a, const float* b, float* out, size_t n) {
  constexpr size_t kChunk = 1 << 14;
  const VectorKernels& v = vector_kernels();
  pool().parallel_for((n + kChunk - 1) / kChunk, [&](size_t c0, size_t c1) {
    const size_t begin = c0 * kChunk, end = std::min(n, c1 * kChunk);
    std::copy(a + begin, a + end, out + begin);
    v.axpy(1.0f, b + begin, out + begin, end - begin);
  });
}

void embedding_backward(const int32_t* ids, size_t tokens, const float* dy, size_t width, float* dtable) {
  const VectorKernels& v = vector_kernels();
  pool().parallel_for((width + kColumnBlock - 1) / kColumnBlock, [&](size_t b0, size_t b1) {
    const size_t c0 = b0 * kColumnBlock, c1 = std::min(width, b1 * kColumnBlock);
    for (size_t t = 0; t < tokens; t++) v.axpy(1.0f, dy + t * width + c0, dtable + static_cast<size_t>(ids[t]) * width + c0, c1 - c0);
  });
}

}  // namespace olmoe
