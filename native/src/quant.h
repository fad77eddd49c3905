// GGUF block-quantized weights (layouts as ggml's; see src/core/quant.ts for the formats).
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels.h"

namespace olmoe {

bool is_quantized(DType dtype);
size_t block_elements(DType dtype);
// Bytes of one row of n values (n a multiple of the block size for quantized types).
size_t row_bytes(DType dtype, size_t n);
// Dequantize n values (whole blocks) into dst.
void dequantize_row(DType dtype, const uint8_t* src, size_t n, float* dst);
// x · dequantize(w) over n values; fused (no row buffer) for q8_0 and q4_0 with AVX-512.
float dot_quantized(const float* x, const uint8_t* w, DType dtype, size_t n, float (*dot)(const float*, const float*, size_t));
// out[r · out_stride] = x · dequantize(row r) for rows r < rows of w (row r at w + r · stride). With AVX-512, q4_0
// rows go four at a time through one kernel, one row from each quarter of the range (four sequential streams).
void dot_rows_quantized(const float* x, const uint8_t* w, size_t stride, DType dtype, size_t n, size_t rows, float* out, size_t out_stride,
                        float (*dot)(const float*, const float*, size_t));

}  // namespace olmoe
