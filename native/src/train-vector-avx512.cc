// The training inner loops (train-vector.inc) compiled for AVX-512; chosen at run time by vector_kernels().
#include <cmath>
#include <cstdint>
#include <cstring>

#include "train-vector.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
namespace olmoe::vector_avx512 {
#include "train-vector.inc"
}  // namespace olmoe::vector_avx512
#pragma GCC pop_options
#endif
