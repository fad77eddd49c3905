// Fused dequantize-and-dot of several tokens against one quantized weight row (batched decode).
#pragma once
#include <cstddef>

#include "kernels.h"

namespace olmoe {

// out[j * ts] = X[j] · dequantize(row) for tokens j < n (X rows have stride `in`). Returns false, writing
// nothing, where there is no fused kernel for this dtype or CPU (the caller then dots token by token).
bool dot_tokens(const float* X, size_t n, size_t in, const void* row, DType dtype, float* out, size_t ts);

// The same over `rows` consecutive weight rows (stride row_bytes): out[r * rs + j * ts]. Rows are taken four at a
// time, so each activation vector loaded serves four rows.
bool dot_rows_tokens(const float* X, size_t n, size_t in, const void* W, size_t rows, size_t row_bytes, DType dtype, float* out, size_t rs, size_t ts);

}  // namespace olmoe
