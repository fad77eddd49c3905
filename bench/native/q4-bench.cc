// Microbenchmark of decode's (one token) matmul paths outside Node, for any weight dtype (codes as DType in
// native/src/kernels.h: 2 f16, 3 q8_0, 4 q4_0, 5 q4_k, 6 q5_k, 7 q6_k, 8 / 9 / 10 q4_0 / q4_k / q6_k repacked 16 rows to a vector):
//   g++ -O3 -std=c++17 -pthread -Inative/src bench/native/q4-bench.cc native/src/{kernels,experts,quant,q8,qdot,qdot-avx2,qdot-vnni,qgemm-vnni,qgemm-r16,qgemm-r16-avx2,packed,mapping,qgemm-amx,amx,simd,pool,train-vector,train-vector-avx2,train-vector-avx512}.cc \
//       -o /tmp/q4-bench   (OLMOE_SIMD=avx2|scalar /tmp/q4-bench … times the lower levels)
//   /tmp/q4-bench [dtype=4] [reps=200] [threads: 1 or 2, default both] [expert layers=16]
// Prints G weights/s of matmul (tokens = 1) one thread in cache (a 256 × 2048 matrix, best of reps), then 1 and
// 2 threads streaming ~0.5 GB of 1024 × 2048 matrices from DRAM, then the expert layer of OLMoE-1B-7B decode
// (experts(), one token, top-8 of 64) over 16 layers of distinct weights (fewer layers let a large L3 keep some of
// them between repetitions; 16 layers of q8_0 experts take 6.9 GB). Weights are random; DRAM buffers are
// mapped with MADV_HUGEPAGE like the model's. Other load on the machine shows up as outliers: take the best.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include <sys/mman.h>

#include "kernels.h"
#include "packed.h"
#include "pool.h"
#include "quant.h"

using namespace olmoe;
static void experts_fn(const ExpertArgs& a) { olmoe::experts(a); }

static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

static std::vector<uint8_t> random_weights(DType dtype, size_t rows, size_t in, uint32_t seed) {
  if (is_packed(dtype)) {  // q4_0 / q4_k / q6_k, then repacked 16 rows to a vector (packed.h)
    const DType file = dtype == DType::Q4_0R16 ? DType::Q4_0 : dtype == DType::Q4_KR16 ? DType::Q4_K : DType::Q6_K;
    auto plain = random_weights(file, rows, in, seed);
    std::vector<uint8_t> packed(row_bytes(dtype, in) * rows);
    pack_rows(file, plain.data(), rows, in, packed.data());
    return packed;
  }
  const size_t bytes = row_bytes(dtype, in) * rows;
  std::vector<uint8_t> w(bytes);
  std::mt19937 rng(seed);
  for (auto& b : w) b = static_cast<uint8_t>(rng());
  const size_t block = dtype == DType::Q4_0 ? 18 : dtype == DType::Q8_0 ? 34 : 0;
  if (block) {
    for (size_t at = 0; at < bytes; at += block) {  // f16 scale in [2^-8, 2^-7)
      const uint16_t h = static_cast<uint16_t>(0x1C00 | (rng() & 0x3FF));
      std::memcpy(&w[at], &h, 2);
    }
  } else if (dtype == DType::F16) {
    for (size_t at = 0; at < bytes; at += 2) {
      const uint16_t h = static_cast<uint16_t>(0x1C00 | (rng() & 0x83FF));
      std::memcpy(&w[at], &h, 2);
    }
  }
  return w;
}

int main(int argc, char** argv) {
  const DType dtype = static_cast<DType>(argc > 1 ? std::atoi(argv[1]) : 4);
  const int reps = argc > 2 ? std::atoi(argv[2]) : 200;
  const size_t in = 2048;
  std::vector<float> x(in * 4);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);

  // In cache, one thread.
  {
    set_threads(1);
    const size_t rows = 256;
    auto w = random_weights(dtype, rows, in, 1);
    std::vector<float> out(rows);
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
      const double t0 = now();
      for (int k = 0; k < 10; k++) matmul(x.data(), 1, in, w.data(), dtype, rows, out.data());
      best = std::min(best, (now() - t0) / 10);
    }
    std::printf("in cache, 1 thread: %.1f G weights/s (%.2f us per 256 rows)\n", rows * in / best * 1e-9, best * 1e6);
  }
  // From DRAM: 1 GiB of q4_0-equivalent weights as 64 matrices of 1024 × 2048 (an expert's gate), then 2048 × 1024.
  {
    const size_t rows = 1024, matrices = 448;
    const size_t bytes = row_bytes(dtype, in) * rows;
    auto one = random_weights(dtype, rows, in, 2);
    // Mapped 2 MiB-aligned with MADV_HUGEPAGE, like the model's weights (native/src/mapping.cc).
    const size_t total = bytes * matrices, huge = size_t(2) << 20, mapped = (total + 2 * huge) / huge * huge;
    char* raw = static_cast<char*>(mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    uint8_t* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(raw) + huge - 1) / huge * huge);
    madvise(base, total, MADV_HUGEPAGE);
    struct { uint8_t* p; size_t n; uint8_t& operator[](size_t i) { return p[i]; } size_t size() const { return n; } } big{base, total};
    for (size_t m = 0; m < matrices; m++) std::memcpy(&big[m * bytes], one.data(), bytes);
    std::vector<float> out(rows);
    const int only = argc > 3 ? std::atoi(argv[3]) : 0;  // 1 or 2: that thread count only
    for (int threads : {1, 2}) {
      if (only && threads != only) continue;
      set_threads(threads);
      double best = 1e9;
      for (int r = 0; r < std::max(5, reps / 20); r++) {
        const double t0 = now();
        for (size_t m = 0; m < matrices; m++) matmul(x.data(), 1, in, &big[m * bytes], dtype, rows, out.data());
        best = std::min(best, now() - t0);
      }
      std::printf("DRAM (%.0f MB), %d thread(s): %.1f G weights/s, %.1f GB/s\n", big.size() / 1e6, threads, rows * in * matrices / best * 1e-9,
                  big.size() / best * 1e-9);
    }
  }
  // Decode's expert layer: one token, top-8 of 64 experts (gate and up 1024 × 2048, down 2048 × 1024), over
  // `layers` layers of distinct weights so that each call streams from DRAM like decode does.
  {
    const size_t hidden = 2048, ffn = 1024, experts = 64, top_k = 8, layers = argc > 4 ? std::atoi(argv[4]) : 16;
    const size_t matrix = row_bytes(dtype, hidden) * ffn;  // gate/up; down has the same size
    const size_t total = matrix * 3 * experts * layers, huge = size_t(2) << 20, mapped = (total + 2 * huge) / huge * huge;
    char* raw = static_cast<char*>(mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    uint8_t* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(raw) + huge - 1) / huge * huge);
    madvise(base, total, MADV_HUGEPAGE);
    auto one = random_weights(dtype, ffn, hidden, 3);
    for (size_t m = 0; m < 3 * experts * layers; m++) std::memcpy(base + m * matrix, one.data(), matrix);
    std::vector<const void*> gate(experts * layers), up(experts * layers), down(experts * layers);
    for (size_t e = 0; e < experts * layers; e++) {
      gate[e] = base + (3 * e) * matrix;
      up[e] = base + (3 * e + 1) * matrix;
      down[e] = base + (3 * e + 2) * matrix;
    }
    std::vector<int32_t> ids(top_k);
    std::vector<float> weights(top_k, 0.125f), out(hidden);
    const int only = argc > 3 ? std::atoi(argv[3]) : 0;
    for (int threads : {1, 2}) {
      if (only && threads != only) continue;
      set_threads(threads);
      double best = 1e9;
      for (int r = 0; r < std::max(5, reps / 20); r++) {
        const double t0 = now();
        for (int step = 0; step < 16; step++) {
          const size_t layer = step % layers;
          for (size_t k = 0; k < top_k; k++) ids[k] = static_cast<int32_t>((step * 13 + k * 7) % experts);
          std::sort(ids.begin(), ids.end());
          ExpertArgs a{x.data(), 1, hidden, ffn, top_k, dtype, dtype, gate.data() + layer * experts, up.data() + layer * experts, down.data() + layer * experts,
                       ids.data(), weights.data(), out.data()};
          experts_fn(a);
        }
        best = std::min(best, (now() - t0) / 16);
      }
      std::printf("experts decode (1 token, top-8 of 64), %d thread(s): %.1f us per layer, %.1f G weights/s\n", threads, best * 1e6,
                  3 * top_k * ffn * hidden / best * 1e-9);
    }
  }
  return 0;
}
