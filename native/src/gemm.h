// Internal interface shared by the kernel files: the instruction-set primitives and the GEMM drivers.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels.h"

namespace olmoe {

// The primitives of the instruction set chosen at startup (AVX-512, AVX2+FMA or scalar).
struct Kernels {
  const char* name;
  void (*widen)(const void*, DType, size_t, float*);
  float (*dot)(const float*, const float*, size_t);
  float (*dot_widen)(const float*, const void*, DType, size_t);
  void (*axpy)(float, const float*, float*, size_t);
  // result[r·64 + t] = Σ_i Xt[i·npad + t]·w[r][i] (+ result[r·64 + t] itself when accumulating).
  void (*tile)(const float* Xt, size_t npad, size_t in, const float* const* w, int rows, int vectors, float* result, bool accumulate);
  int tile_rows;  // weight rows per tile
  int lanes;      // tokens per vector
  size_t tile_tokens;  // tokens per tile call (≤ 64: result rows have stride 64)
  // gemm_dot for float weights, each row chunk widened once for up to 4 tokens: 2 or more tokens, or one token over at
  // least kFewTokensMinRows rows (4 row streams); null: per-token dots.
  void (*few_tokens)(const float*, size_t, size_t, const void*, DType, size_t, size_t, float*, size_t, size_t);
};


const Kernels& kernels();

// From this many tokens on, activations are transposed once and multiplied by tiles (tokens in vector lanes);
// below it each weight row is streamed once per token (decode).
constexpr size_t kMinTileTokens = 4;
// The same for float weights where the instruction set has a few-tokens kernel (Kernels::few_tokens).
constexpr size_t kMinTileTokensFew = 16;
// One token (decode) of float weights takes Kernels::few_tokens' four row streams from this many rows on (8 per stream).
constexpr size_t kFewTokensMinRows = 32;
constexpr size_t kRowBlock = 48;  // rows per parallel work item (tile path, and the dot path of float weights)
// The same for quantized weights at the scalar level only: at the AVX2 and AVX-512 levels they never take the float
// tiles, but the integer path (qgemm.h) at every token count.
constexpr size_t kMinTileTokensQuantized = 16;
size_t min_tile_tokens(DType dtype);
// Rows per work item on the dot path of quantized weights (decode): qdot reads four runs of a quarter of the item's
// rows each, and the hardware prefetchers need runs of some length to ramp up (48-row items gave runs of 12 rows,
// 7–14 KB: the expert layer of bench/native/q4-bench.cc took 1.3 ms instead of 0.8 ms).
constexpr size_t kStreamRowBlock = 256;
constexpr size_t kTokenBlock = 64;  // tokens per block of transposed activations (64 × 2048 floats = 512 KiB)

inline size_t padded_tokens(size_t n) { return (n + 15) / 16 * 16; }

// Transposed activations are stored in blocks of kTokenBlock tokens: block b holds tokens [64b, 64b + bw) as
// [features][bw], so a tile reads one contiguous run per input feature (no large strides, few TLB misses).
inline size_t block_width(size_t npad, size_t block) { return std::min(kTokenBlock, npad - block * kTokenBlock); }

// Grow-only scratch buffers reused across calls: fresh allocations of tens of MB cost more in page faults than
// the arithmetic they hold (measured: 100 MB of new vectors took 335 ms here). Contents are not cleared.
template <typename T>
T* scratch(std::vector<T>& buffer, size_t size) {
  if (buffer.size() < size) buffer.resize(size);
  return buffer.data();
}

// The same, 64-byte aligned (read and written with full-width vector loads and stores).
inline float* aligned_scratch(std::vector<float>& buffer, size_t size) {
  if (buffer.size() < size + 16) buffer.resize(size + 16);
  const uintptr_t address = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<float*>((address + 63) & ~uintptr_t{63});
}

// Rows t < n of X (row stride x_stride, `in` features) into token-blocked transposed form, zero-padded to npad.
void transpose_tokens(const float* X, size_t x_stride, size_t n, size_t in, float* Xt, size_t npad);

// Where a tile's results go: row-major out[token * stride + row], or blocked-transposed like the inputs.
struct Output {
  float* data;
  size_t stride = 0;    // row-major: floats per token
  bool blocked = false;  // blocked-transposed with `npad` tokens and `features` rows
  size_t npad = 0, features = 0;
  // Where (row, first) is stored and the distance between consecutive tokens; `first` starts a run that stays
  // within one token block.
  std::pair<float*, size_t> run(size_t row, size_t first) const {
    if (!blocked) return {data + first * stride + row, stride};
    const size_t block = first / kTokenBlock;
    return {data + block * kTokenBlock * features + row * block_width(npad, block) + first % kTokenBlock, 1};
  }
};

// out[r][t] for rows [r0, r1) and tokens < n: Xt blocked-transposed activations, W row-major weights.
void gemm_tiles(const float* Xt, size_t npad, size_t n, size_t in, const void* W, DType dtype, size_t r0, size_t r1, const Output& out);
// The same by streaming each weight row once per token, X row-major; out[r * rs + t * ts]. Quantized weights go
// through gemm_qdot on X quantized here (per call: callers that split rows over work items quantize once instead).
void gemm_dot(const float* X, size_t n, size_t in, const void* W, DType dtype, size_t r0, size_t r1, float* out, size_t rs, size_t ts);

// Quantized weights on the dot path: rows [r0, r1) against n activation rows already quantized for dtype
// (quantize_rows: q8.h blocks, act_stride bytes apart); out[r * rs + t * ts].
void gemm_qdot(const uint8_t* Xq, size_t act_stride, size_t n, size_t in, const void* W, DType dtype, size_t r0, size_t r1, float* out, size_t rs,
               size_t ts);
// Rows t < n of X quantized for dtype into buffer (q8_row_bytes(dtype, in) bytes each).
const uint8_t* quantize_rows(DType dtype, const float* X, size_t n, size_t in, std::vector<uint8_t>& buffer);
// X itself for float dtypes; for quantized ones a copy in buffer with each row rounded to q8 (the tile path's input).
const float* rounded_rows(DType dtype, const float* X, size_t n, size_t in, std::vector<float>& buffer);

}  // namespace olmoe
