// Integer dot products of q8 activations (q8.h) with quantized weight rows, for q4_0, q8_0, q4_k, q5_k and q6_k: the
// matmul path of decode (one token, or the few tokens routed to one expert). Per weight block the codes are dotted
// as integers (exact), then scaled by the weight's and the activation's block scales in float:
//   q4_0: d_w·d_x·Σ (n − 8)·q            q8_0: d_w·d_x·Σ w·q
//   q4_k, q5_k: d·d_x·Σ_j sc_j·Σ n·q − dmin·d_x·Σ_j m_j·Σ q   (sub-blocks j of 32)
//   q6_k: d·d_x·Σ_j sc_j·Σ (v − 32)·q                             (groups j of 16)
// The reference backend's twin (src/backends/reference/quant-matmul.ts) computes the same sums.
// Levels: AVX-512 VNNI (vpdpbusd, vpdpwssd on 256-bit vectors), AVX2 (vpmaddubsw + vpmaddwd) and scalar, chosen by
// cpu() (simd.h), which OLMOE_SIMD can force lower.
#pragma once
#include <cstddef>
#include <cstdint>

#include "kernels.h"

namespace olmoe {

struct QDotArgs {
  DType dtype;
  const uint8_t* act;  // `tokens` activation rows quantized for dtype (quantize_q8), act_stride bytes apart
  size_t act_stride, tokens;
  const uint8_t* w;  // `rows` weight rows of n values, w_stride bytes apart
  size_t w_stride, rows, n;
  float* out;  // out[r * rs + t * ts]
  size_t rs, ts;
};

void qdot_rows(const QDotArgs& args);
// Prefetch the first lines of the row streams qdot_rows will read for these rows (the next work item's, while the
// current one computes: decode jumps between experts, where the hardware prefetchers start cold). Its effect was
// within the noise of the busy machine it was measured on (bench/native/q4-bench.cc); the in-stream prefetch of
// qdot-x86.h is what measurably helped.
void qdot_prefetch(DType dtype, const uint8_t* w, size_t w_stride, size_t rows);

// The same per level (qdot.cc, qdot-avx2.cc, qdot-vnni.cc); qdot_rows picks one.
void qdot_rows_scalar(const QDotArgs& args);
void qdot_rows_avx2(const QDotArgs& args);
void qdot_rows_vnni(const QDotArgs& args);

}  // namespace olmoe
