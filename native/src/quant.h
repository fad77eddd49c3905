// GGUF block-quantized weights (layouts as ggml's; see src/core/quant.ts for the formats).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels.h"

namespace olmoe {

bool is_quantized(DType dtype);
// float32 value of every f16 bit pattern (256 KiB, built on first use).
const float* half_table();
size_t block_elements(DType dtype);
// Bytes of one row of n values (n a multiple of the block size for quantized types).
size_t row_bytes(DType dtype, size_t n);
// Dequantize n values (whole blocks) into dst.
void dequantize_row(DType dtype, const uint8_t* src, size_t n, float* dst);

}  // namespace olmoe
