// The instruction set the kernels run with: chosen once, at first use, from the CPU's features. OLMOE_SIMD=avx512,
// avx2 or scalar forces a level at or below what the CPU has, so that one machine can test every path (a level the
// CPU lacks falls back to the best it has). src/backends/native/simd.ts rejects other values before the addon runs.
#pragma once

namespace olmoe {

enum class Simd { Scalar = 0, Avx2 = 1, Avx512 = 2 };

struct CpuFeatures {
  Simd level;
  const char* name;  // "avx512", "avx2" or "scalar"
  bool vnni;         // AVX-512 VNNI (vpdpbusd, vpdpwssd), used at the avx512 level
  bool bf16;         // AVX-512 BF16 (vdpbf16ps), used at the avx512 level
  // Row-major integer dot products on 512-bit vectors (qdot-vnni.cc) rather than 256-bit ones: q4_k / q5_k / q6_k rows,
  // and q8_0 rows × one token (decode). By default on AMD CPUs with VNNI, where 512-bit operations run at full width
  // (on Intel the 256-bit kernels keep a third vector port busy, and AMX takes the many-token products);
  // OLMOE_WIDE_ROWS=0 or 1 forces it off or on (on only where VNNI exists), so that one machine can test both kernels.
  bool wide_rows;
};

const CpuFeatures& cpu();

// Whether the streaming kernels (decode's weight products, decode attention) prefetch their streams in software ahead
// of the hardware's prefetchers. On by default; off on AMD family 19h (Zen 3 and Zen 4), where the prefetches
// stalled the kernels instead: on Zen 4 the packed q4_0 decode tile streamed 29.5 → 35.2 GB/s of a 36 GB/s read bound
// without them, and 34.8 → 54.0 of 64 in the machine's fast phase (bench/native/stream-bench.cc, 2 threads, alternating
// in one process); on Zen 3 (AVX2, OLMoE-1B-7B, 2 threads, `olmoe bench` alternating) Q4_0 decode ran at 28–34 tok/s
// without them against 24–25 with, Q8_0 at 19 against 16–18 (F16 8.4–9.0 against 8.7–10.1, Q4_K_M within the noise);
// on Zen 5 and an Intel Xeon they had made the same kernels 3–20 % faster (README, earlier sessions).
// The other row-major decode kernels (qdot-x86.h's 256-bit rows, the K-quant rows of qdot-vnni.cc: on Zen 4 decode's
// q5_k, and q4_0 / q4_k / q6_k under OLMOE_PACK=0) keep their prefetch either way: not measured without it. OLMOE_PREFETCH=0 or 1 forces it off or on.
bool stream_prefetch();
// Sets it for this process (bench/native harnesses alternate both ways in one process); kernels read it once a call.
void set_stream_prefetch(bool on);

}  // namespace olmoe
