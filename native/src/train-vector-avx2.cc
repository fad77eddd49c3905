// The training inner loops (train-vector.inc) compiled for AVX2 + FMA; chosen at run time by vector_kernels().
#include <cmath>
#include <cstdint>
#include <cstring>

#include "train-vector.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace olmoe::vector_avx2 {
#include "train-vector.inc"
}  // namespace olmoe::vector_avx2
#pragma GCC pop_options
#endif
