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

}  // namespace olmoe
