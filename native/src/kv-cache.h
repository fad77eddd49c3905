// The KV cache's storage: each position's keys (or values) of one layer as one row of Hkv·Hd values in the cache's
// type, rounded once when stored, bit-identically to src/backends/reference/kv-cache.ts:
//   F32: the values;  F16: IEEE half, round to nearest even;
//   Q8_0: GGUF blocks of 32 {f16 d, int8 q[32]}, d = amax/127, q = roundf(x · 1/d) (llama.cpp's quantize_row_q8_0),
//         the row padded with zeros to whole blocks; a block holding ±∞ or NaN stores d = NaN.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels.h"

namespace olmoe {

// Bytes of one stored row of `width` values (F32, F16 or Q8_0).
size_t kv_row_bytes(DType type, size_t width);
// `count` rows of `width` floats → their stored bytes (count · kv_row_bytes), parallel over rows for long prompts.
void kv_store(const float* rows, size_t count, size_t width, DType type, uint8_t* out);
// Values [first, first + n) of one stored row as float32 (F16C / AVX-512 conversions where the CPU has them).
void kv_load(DType type, const uint8_t* row, size_t first, size_t n, float* out);

}  // namespace olmoe
