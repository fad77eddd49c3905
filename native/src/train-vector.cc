// The training inner loops for the baseline instruction set, and the choice among the three compilations of
// train-vector.inc by the instruction set the inference kernels chose (simd_level(): CPU, or OLMOE_SIMD).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>

#include "kernels.h"
#include "train-vector.h"

namespace olmoe {
namespace vector_base {
#include "train-vector.inc"
}  // namespace vector_base
#if defined(__x86_64__)
namespace vector_avx512 {
const VectorKernels& kernels_here();
}
namespace vector_avx2 {
const VectorKernels& kernels_here();
}
#endif

const VectorKernels& vector_kernels() {
  static const VectorKernels& chosen = [&]() -> const VectorKernels& {
    const std::string level = simd_level();
#if defined(__x86_64__)
    if (level == "avx512") return vector_avx512::kernels_here();
    if (level == "avx2") return vector_avx2::kernels_here();
#endif
    return vector_base::kernels_here();
  }();
  return chosen;
}

}  // namespace olmoe
