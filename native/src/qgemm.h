// Many-token products of quantized weights on integer dot products (prefill, and the grouped experts' larger token
// groups): the numbers of qdot.h (q8 activation blocks, per-block integer dots, float scales), in register tiles
// that load each weight block once for several tokens and each activation block once for several weight rows.
// The tiles are AVX-512 VNNI for q4_0 and q8_0 (qgemm-vnni.cc); the K-quants and the AVX2 level use qdot_rows
// (one row × four tokens, or 2 × 4), which also beats the float tiles there.
#pragma once
#include "qdot.h"

namespace olmoe {

// Whether many-token products of dtype take the integer path (qgemm_rows) rather than dequantized float tiles: every
// quantized dtype at the AVX2 and AVX-512 levels, where it measured 1.1–2× the float tiles (bench/native/
// prefill-bench.cc); the scalar level keeps the tiles.
bool integer_gemm(DType dtype);
// From this many tokens on, q4_0 / q8_0 at the VNNI level use the tiles of qgemm-vnni.cc; fewer (decode) keep
// qdot_rows' row streams, tuned for reading weights from DRAM.
constexpr size_t kGemmMinTokens = 4;
// qdot_rows' contract (QDotArgs) for any token count: the tiles of qgemm-vnni.cc where they apply, else qdot_rows.
void qgemm_rows(const QDotArgs& args);
void qgemm_rows_vnni(const QDotArgs& args);
// The AMX int8 tiles of qgemm-amx.cc, every quantized dtype, from kAmxMinTokens tokens on (avx512 level only): a
// 16-token tile ran even with the VNNI kernels at 8–9 tokens and ahead from 10 (bench/native/prefill-bench.cc,
// q4_0 / q4_k / q6_k, one thread: 124 vs 139, 144 vs 130 GFLOP/s for q4_0 at 8 and 10 tokens).
constexpr size_t kAmxMinTokens = 10;
bool qgemm_amx_available();
void qgemm_rows_amx(const QDotArgs& args);
// The many-token kernel qgemm_rows runs for dtype at this SIMD level: "amx-int8", "avx512-vnni-16rows" (the packed
// types of packed.h, and q4_0 / q4_k / q6_k where they are repacked), "avx2-16rows" (the same at the AVX2 level, or on
// AVX-512 without VNNI), "avx512-vnni", "integer-dot" or "float-tiles" (scalar level).
const char* qgemm_kernel(DType dtype);

}  // namespace olmoe
