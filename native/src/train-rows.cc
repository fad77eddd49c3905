// Backward of the per-row ops (RMSNorm, RoPE, embedding gather) and the accumulation the tape uses, on the thread
// pool. Reductions over rows (the gain's and the table's gradients) are split by column, never by row, so each
// element is summed in row order whatever the thread count.
#include <algorithm>
#include <cmath>
#include <vector>

#include "pool.h"
#include "train-ops.h"

namespace olmoe {

namespace {
// Columns per work item of a reduction over rows: a few cache lines, enough items for two threads to share.
constexpr size_t kColumnBlock = 64;
}  // namespace

void rmsnorm_backward(const float* x, const float* weight, const float* dy, size_t rows, size_t width, float eps, float* dx, float* dw) {
  std::vector<float> inv_rms(rows);
  pool().parallel_for(rows, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) {
      const float* in = x + r * width;
      const float* g = dy + r * width;
      double squares = 0, gx = 0;
      for (size_t i = 0; i < width; i++) {
        squares += static_cast<double>(in[i]) * in[i];
        gx += static_cast<double>(g[i]) * weight[i] * in[i];
      }
      const double s = 1.0 / std::sqrt(squares / width + eps);
      inv_rms[r] = static_cast<float>(s);
      if (!dx) continue;
      const float scale = static_cast<float>(s), correction = static_cast<float>(s * s * s * gx / width);
      float* out = dx + r * width;
      for (size_t i = 0; i < width; i++) out[i] += scale * g[i] * weight[i] - in[i] * correction;
    }
  });
  if (!dw) return;
  pool().parallel_for((width + kColumnBlock - 1) / kColumnBlock, [&](size_t b0, size_t b1) {
    for (size_t b = b0; b < b1; b++) {
      const size_t c0 = b * kColumnBlock, c1 = std::min(width, c0 + kColumnBlock);
      for (size_t r = 0; r < rows; r++) {
        const float s = inv_rms[r];
        const float* in = x + r * width;
        const float* g = dy + r * width;
        for (size_t i = c0; i < c1; i++) dw[i] += g[i] * in[i] * s;
      }
    }
  });
}

void rope_rotate(const float* x, size_t tokens, size_t heads, size_t head_dim, const int32_t* positions, const float* inv_freq, bool inverse_accumulate,
                 float* out) {
  const size_t half = head_dim / 2;
  pool().parallel_for(tokens, [&](size_t t0, size_t t1) {
    std::vector<float> cosines(half), sines(half);
    for (size_t t = t0; t < t1; t++) {
      for (size_t j = 0; j < half; j++) {
        // float32 angle, cos and sin as PyTorch forms them (spec §3.5), like the forward kernel
        const float angle = static_cast<float>(positions[t]) * inv_freq[j];
        cosines[j] = static_cast<float>(std::cos(static_cast<double>(angle)));
        sines[j] = static_cast<float>(std::sin(static_cast<double>(angle))) * (inverse_accumulate ? -1.0f : 1.0f);
      }
      for (size_t h = 0; h < heads; h++) {
        const size_t base = (t * heads + h) * head_dim;
        const float* in = x + base;
        float* o = out + base;
        for (size_t j = 0; j < half; j++) {
          const float first = in[j], second = in[j + half];
          const float a = first * cosines[j] - second * sines[j], b = second * cosines[j] + first * sines[j];
          if (inverse_accumulate) {
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

void axpy_parallel(float factor, const float* x, float* y, size_t n) {
  constexpr size_t kChunk = 1 << 14;
  pool().parallel_for((n + kChunk - 1) / kChunk, [&](size_t c0, size_t c1) {
    const size_t end = std::min(n, c1 * kChunk);
    if (factor == 1.0f) {
      for (size_t i = c0 * kChunk; i < end; i++) y[i] += x[i];
    } else {
      for (size_t i = c0 * kChunk; i < end; i++) y[i] += factor * x[i];
    }
  });
}

void embedding_backward(const int32_t* ids, size_t tokens, const float* dy, size_t width, float* dtable) {
  pool().parallel_for((width + kColumnBlock - 1) / kColumnBlock, [&](size_t b0, size_t b1) {
    const size_t c0 = b0 * kColumnBlock, c1 = std::min(width, b1 * kColumnBlock);
    for (size_t t = 0; t < tokens; t++) {
      float* row = dtable + static_cast<size_t>(ids[t]) * width;
      const float* g = dy + t * width;
      for (size_t i = c0; i < c1; i++) row[i] += g[i];
    }
  });
}

}  // namespace olmoe
