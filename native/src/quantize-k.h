// k-quant writers (q4_k, q5_k, q6_k): bitwise the TypeScript reference's (src/core/quant.ts), on the thread pool.
#pragma once
#include <cstddef>
#include <cstdint>

namespace olmoe {

enum class KQuant { Q4K, Q5K, Q6K };

// Quantize blocks × 256 values of x into out (144, 176 or 210 bytes per block).
bool quantize_k(KQuant type, const float* x, size_t blocks, uint8_t* out);

}  // namespace olmoe
