// Compute kernels of the native backend. Activations are float32; weights are f32, bf16, f16 or GGUF blocks, row-major
// [rows, in] as in PyTorch Linear, widened to float32 inside the kernels (never stored widened).
#pragma once
#include <cstddef>
#include <cstdint>

namespace olmoe {

// Matches DTYPE_CODES in src/backends/native/index.ts.
// Q4_0R16, Q4_KR16 and Q6_KR16 are no file types: q4_0, q4_k and q6_k repacked 16 rows to a vector (packed.h), which only
// qdot_rows / qgemm_rows read.
enum class DType : int { F32 = 0, BF16 = 1, F16 = 2, Q8_0 = 3, Q4_0 = 4, Q4_K = 5, Q5_K = 6, Q6_K = 7, Q4_0R16 = 8, Q4_KR16 = 9, Q6_KR16 = 10 };

// The instruction set chosen at startup: "avx512", "avx2" or "scalar" (OLMOE_SIMD=avx2|scalar forces a lower one).
const char* simd_level();

// out[j * out_stride + r] = X[j] · W[r] for tokens j < n and rows r in [row_begin, row_end).
void gemm_rows(const float* X, size_t n, size_t in_dim, const void* W, DType dtype, size_t row_begin, size_t row_end, float* out,
               size_t out_stride);

// n values of one stored row of `dtype` as float32 (the products' widening: bit-identical to the reference's
// dequantization, which test/native.test.ts checks through the embedding's rows).
void widen_row(DType dtype, const void* src, size_t n, float* dst);

// out [tokens, out_dim] = x [tokens, in_dim] · W[out_dim, in_dim]ᵀ, parallel over rows.
void matmul(const float* x, size_t tokens, size_t in_dim, const void* W, DType dtype, size_t out_dim, float* out);

// One product of `matmuls`: out [tokens, out_dim] = x · weightᵀ, the weight stored as dtype.
struct Product {
  const void* weight;
  size_t out_dim;
  float* out;
  DType dtype;
};

// Products per job of matmuls (longer lists run as several jobs).
constexpr size_t kMostProducts = 8;

// Whether products of dtypes a and b take the same input in one job of matmuls: the same dtype, or two k-quants on
// the same path (their input quantized to the same q8 blocks of 256, or rounded to them: Q4_K_M's Q4_K q and k beside
// a Q6_K v).
bool shared_input(DType a, DType b);

// matmul of one input by several weights (the attention's q, k and v): per set of products whose dtypes share their
// input (shared_input), the input quantized (decode's few tokens on quantized weights) or transposed (the tiles) once,
// and every weight's row blocks one job of the pool.
void matmuls(const float* x, size_t tokens, size_t in_dim, const Product* products, size_t count);

struct ExpertArgs {
  const float* x;  // [T, D]
  size_t tokens, hidden, ffn, top_k;
  DType dtype;       // gate and up
  DType down_dtype;  // down: dtype, or another quantized type when both take integer dot products (Q4_K_M's Q6_K downs)
  const void* const* gate;  // E pointers to [F, D]
  const void* const* up;    // E pointers to [F, D]
  const void* const* down;  // E pointers to [D, F]
  const int32_t* expert_ids;  // [T, K]
  const float* weights;       // [T, K]
  float* out;                 // [T, D]
};

// Σ_k w_k · down_e(silu(gate_e·x) ⊙ up_e·x), tokens grouped by expert (grouped GEMM), summed per token in
// ascending expert id like HF's index_add_ loop.
void experts(const ExpertArgs& args);

struct AttentionArgs {
  const float* q;       // [T, H·Hd]
  const void* keys;     // cache [S, Hkv·Hd] stored as kv_type (native/src/kv-cache.h), positions [0, start + T) filled
  const void* values;   // cache [S, Hkv·Hd]
  DType kv_type;        // F32, F16 or Q8_0
  size_t tokens, start, heads, kv_heads, head_dim;
  float* out;  // [T, H·Hd]
};

// Causal softmax(q·kᵀ/√Hd)·v over the cache, in blocks of positions (native/src/attention.cc), parallel over heads
// and blocks of queries.
void attention(const AttentionArgs& args);

// y = x / sqrt(mean(x²) + eps) · weight per row; NeoX rotary embedding; out = a + b (native/src/elementwise.cc).
void rmsnorm(const float* x, size_t rows, size_t width, const float* weight, float eps, float* out);
void rope(const float* x, size_t tokens, size_t heads, size_t head_dim, const int32_t* positions, const float* inv_freq, float* out);
void add(const float* a, const float* b, size_t n, float* out);
// Index of the first NaN or ±∞ of x[0, n), −1 if none (the model's check of decode's logits: ~2 µs for OLMoE's 50,304
// in cache, where a JavaScript scan took ~19).
ptrdiff_t first_non_finite(const float* x, size_t n);

}  // namespace olmoe
