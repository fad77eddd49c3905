// How a decode-sized product (one token × a 2,048 × 2,048 packed matrix, as o_proj) streams depending on what ran
// just before it, alternating in one process (the machine's bandwidth changes by the minute):
//   g++ -O3 -std=c++17 -pthread -mavx512f -Inative/src bench/native/gap-bench.cc native/src/{kernels,experts,quant,q8,qdot,qdot-avx2,qdot-vnni,qgemm-vnni,qgemm-r16,qgemm-r16-avx2,packed,mapping,qgemm-amx,amx,simd,pool,train-vector,train-vector-avx2,train-vector-avx512,measure,attention,kv-cache,elementwise}.cc \
//       -o /tmp/gap-bench
//   /tmp/gap-bench [file dtype: 5 q4_k (default), 7 q6_k, 4 q4_0] [rounds=40]   (KV4K=1: the cache in 4 KiB pages)
// Before each timed product (16 a round per case, each from another of 48 matrices: from DRAM): nothing (back to back),
// a 4.7 MB read of other memory, 100 µs of the threads spinning idle, or the decode attention kernel over one layer of
// a 576-position f16 cache (4.7 MB of keys and values). Prints µs and GB/s (medians over rounds).
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "kernels.h"
#include "mapping.h"
#include "measure.h"
#include "packed.h"
#include "pool.h"
#include "q8.h"
#include "qgemm.h"
#include "quant.h"

using namespace olmoe;

static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

int main(int argc, char** argv) {
  const DType file = static_cast<DType>(argc > 1 ? std::atoi(argv[1]) : 5);
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 40;
  if (file != DType::Q4_K && file != DType::Q6_K && file != DType::Q4_0) return std::fprintf(stderr, "dtype: 4 (q4_0), 5 (q4_k) or 7 (q6_k)\n"), 1;
  const size_t rows = 2048, in = 2048, matrices = 48;
  set_threads(2);
  const DType packed = packed_form(file);
  const size_t matrix = row_bytes(packed, in) * rows;
  std::mt19937 rng(5);
  std::vector<uint8_t> source(row_bytes(file, in) * rows), one(matrix);
  for (auto& b : source) b = static_cast<uint8_t>(rng());
  for (size_t r = 0; r < rows; r++) {  // a small f16 scale in each row's first block (random bytes may be NaN)
    const uint16_t d = 0x1400;
    std::memcpy(&source[r * row_bytes(file, in)], &d, 2);
  }
  pack_rows(file, source.data(), rows, in, one.data());
  auto* weights = static_cast<uint8_t*>(huge_allocate(matrices * matrix));
  if (weights == nullptr) return std::fprintf(stderr, "cannot map the weights\n"), 1;
  for (size_t m = 0; m < matrices; m++) std::memcpy(weights + m * matrix, one.data(), matrix);
  std::vector<float> x(in), out(rows);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  std::vector<uint8_t> xq(q8_row_bytes(packed, in));
  quantize_q8(packed, x.data(), in, xq.data());

  // 16 layers of an f16 cache (keys then values, 576 positions × 2,048) and 16 other buffers of 4.7 MB to read
  const size_t positions = 576, width = 2048, layers = 16, layer_bytes = 2 * positions * width * 2;
  const bool small_pages = std::getenv("KV4K") != nullptr;
  auto* cache = static_cast<uint16_t*>(small_pages ? std::aligned_alloc(4096, layers * layer_bytes) : huge_allocate(layers * layer_bytes));
  auto* other = static_cast<float*>(huge_allocate(layers * layer_bytes));
  if (cache == nullptr || other == nullptr) return std::fprintf(stderr, "cannot map the buffers\n"), 1;
  if (small_pages) madvise(cache, layers * layer_bytes, MADV_NOHUGEPAGE);
  for (size_t i = 0; i < layers * layer_bytes / 2; i++) cache[i] = static_cast<uint16_t>(0x3000 + i % 7);
  for (size_t i = 0; i < layers * layer_bytes / 4; i++) other[i] = 1.0f;
  std::vector<float> q(width), attended(width);
  for (auto& v : q) v = normal(rng);
  size_t next_matrix = 0, next_layer = 0;
  float sink = 0;
  const auto read_other = [&] {
    const float* base = other + (next_layer++ % layers) * (layer_bytes / 4);
    const size_t n = layer_bytes / 4;
    pool().parallel_for(4, [&](size_t c0, size_t c1) {
      __m512 acc = _mm512_setzero_ps();
      for (size_t i = c0 * n / 4; i < c1 * n / 4; i += 16) acc = _mm512_add_ps(acc, _mm512_loadu_ps(base + i));
      if (_mm512_reduce_add_ps(acc) == 1.5f) sink += 1;
    });
  };
  const auto attend = [&] {
    const uint16_t* keys = cache + (next_layer++ % layers) * (layer_bytes / 2);
    attention({q.data(), keys, keys + positions * width, DType::F16, 1, positions - 1, 16, 16, 128, attended.data()});
  };
  const auto spin = [](double microseconds) {
    const double end = now() + microseconds * 1e-6;
    while (now() < end) {
    }
  };
  const char* names[] = {"back to back", "after a 4.7 MB read", "after 100 us idle", "after attention"};
  constexpr int kCases = 4;
  std::vector<std::vector<double>> seconds(kCases);
  const double before = read_bandwidth(size_t{1} << 30, 3) / 1e9;
  for (int r = 0; r < rounds; r++)
    for (int k = 0; k < kCases; k++) {
      const int c = (r + k) % kCases;
      double total = 0;
      for (int rep = 0; rep < 16; rep++) {
        const uint8_t* w = weights + (next_matrix++ % matrices) * matrix;
        if (c == 1) read_other();
        if (c == 2) spin(100);
        if (c == 3) attend();
        const double t0 = now();
        pool().parallel_for(rows / 256, [&](size_t i0, size_t i1) {
          qgemm_rows({packed, xq.data(), xq.size(), 1, w + i0 * 256 * row_bytes(packed, in), row_bytes(packed, in), (i1 - i0) * 256, in, out.data() + i0 * 256, 1, 0});
        });
        total += now() - t0;
      }
      seconds[c].push_back(total / 16);
    }
  const double after = read_bandwidth(size_t{1} << 30, 3) / 1e9;
  std::printf("%s packed 2048 x 2048 (%.2f MB), 2 threads, %d rounds; read bandwidth %.1f GB/s before, %.1f after%s\n",
              file == DType::Q4_K ? "q4_k" : file == DType::Q6_K ? "q6_k" : "q4_0", matrix / 1e6, rounds, before, after, small_pages ? "; cache in 4 KiB pages" : "");
  for (int c = 0; c < kCases; c++) {
    auto s = seconds[c];
    std::sort(s.begin(), s.end());
    std::printf("  %-22s %6.1f us  %5.1f GB/s (median; best %.1f us)\n", names[c], s[s.size() / 2] * 1e6, matrix / s[s.size() / 2] * 1e-9, s[0] * 1e6);
  }
  return sink == 12345.0f ? 2 : 0;
}
