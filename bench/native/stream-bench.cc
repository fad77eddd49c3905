// How fast decode's packed weights stream from DRAM, against loads-only readers of the same bytes, alternating in one
// process (the machine's bandwidth changes by the minute, so only same-process, interleaved numbers compare):
//   g++ -O3 -std=c++17 -pthread -Inative/src bench/native/stream-bench.cc native/src/{kernels,experts,quant,q8,qdot,qdot-avx2,qdot-vnni,qgemm-vnni,qgemm-r16,qgemm-r16-avx2,packed,mapping,qgemm-amx,amx,simd,pool,train-vector,train-vector-avx2,train-vector-avx512,measure}.cc \
//       -o /tmp/stream-bench
//   /tmp/stream-bench [file dtype: 5 q4_k (default), 7 q6_k, 4 q4_0] [rounds=20] [threads=2]
// Each round reads 24 matrices of 1024 × 2048 (a decode expert layer's gate, up and down of 8 experts) repacked 16 rows
// to a vector (packed.h), in work items of 128 rows over the thread pool, once per reader:
//   kernel        the decode tile (qgemm_rows_r16_vnni, one token): two runs of row groups, every line prefetched ahead
//   kernel nopf   the same without its software prefetch (set_stream_prefetch(false): what AMD Zen 4 runs, simd.h)
//   loads k+pf    the same bytes in the same order, loads only (no arithmetic), prefetched as the kernel does (k runs:
//                 two for q4_k and q6_k, 4096 bytes ahead; four for q4_0, 2048 ahead)
//   loads 2       the same, no software prefetch (the hardware's stream prefetchers alone)
//   loads 4       four runs of row groups, no software prefetch
// and prints GB/s (medians over rounds) beside the machine's read bandwidth (measure.h) before and after.
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "mapping.h"
#include "measure.h"
#include "packed.h"
#include "pool.h"
#include "q8.h"
#include "quant.h"
#include "simd.h"

using namespace olmoe;

static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Loads of every byte of a work item's row groups as S runs (group i of run k: i + k·run), line by line, optionally
// each line prefetched `ahead` bytes on as the tiles do; the xor keeps the loads. A group (16 packed rows) is whole
// lines for every type here; q4_0's 288-byte blocks are not, so lines are counted over the group, not per block (a
// per-block count read 32 bytes past the last group, beyond the mapping at the end of the buffer).
template <int S, bool Prefetch>
__attribute__((target("avx512f"))) void loads(const uint8_t* w, size_t group_bytes, size_t groups, size_t ahead, float* sink) {
  const size_t run = groups / S;
  __m512i acc = _mm512_setzero_si512();
  for (size_t i = 0; i < run; i++) {
    const uint8_t* g[S];
    for (int k = 0; k < S; k++) g[k] = w + (i + k * run) * group_bytes;
    for (size_t line = 0; line < group_bytes; line += 64) {
      if (Prefetch)
        for (int k = 0; k < S; k++) _mm_prefetch(reinterpret_cast<const char*>(g[k] + line + ahead), _MM_HINT_T0);
      for (int k = 0; k < S; k++) acc = _mm512_xor_si512(acc, _mm512_loadu_si512(g[k] + line));
    }
  }
  *sink += static_cast<float>(_mm512_reduce_add_epi32(acc));
}

int main(int argc, char** argv) {
  const DType file = static_cast<DType>(argc > 1 ? std::atoi(argv[1]) : 5);
  const int rounds = argc > 2 ? std::atoi(argv[2]) : 20, threads = argc > 3 ? std::atoi(argv[3]) : 2;
  if (file != DType::Q4_K && file != DType::Q6_K && file != DType::Q4_0) return std::fprintf(stderr, "dtype: 4 (q4_0), 5 (q4_k) or 7 (q6_k)\n"), 1;
  const DType packed = packed_form(file);
  set_threads(threads);
  const size_t in = 2048, rows = 1024, per_round = 24, matrices = per_round * 16;
  const size_t row = row_bytes(packed, in), matrix = row * rows, total = matrix * matrices;
  // 2 MiB-aligned, advised for transparent huge pages, as the packed weights themselves (packed_allocate)
  uint8_t* base = static_cast<uint8_t*>(huge_allocate(total));
  if (base == nullptr) return std::fprintf(stderr, "cannot map %zu bytes\n", total), 1;
  std::vector<uint8_t> source(row_bytes(file, in) * rows), one(matrix);
  std::mt19937 rng(3);
  for (auto& b : source) b = static_cast<uint8_t>(rng());
  pack_rows(file, source.data(), rows, in, one.data());
  for (size_t m = 0; m < matrices; m++) std::memcpy(base + m * matrix, one.data(), matrix);
  std::vector<float> x(in), out(rows);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  std::vector<uint8_t> act(q8_row_bytes(packed, in));
  quantize_q8(packed, x.data(), in, act.data());

  const size_t item_groups = 8, group_bytes = 16 * row;
  float sink = 0;
  const char* names[] = {"kernel", file == DType::Q4_0 ? "loads 4+pf" : "loads 2+pf", "loads 2", "loads 4", "kernel nopf"};
  auto read_round = [&](int reader, size_t first) {
    for (size_t m = first; m < first + per_round; m++) {
      const uint8_t* w = base + m * matrix;
      pool().parallel_for(rows / 16 / item_groups, [&](size_t i0, size_t i1) {
        const uint8_t* at = w + i0 * item_groups * group_bytes;
        const size_t groups = (i1 - i0) * item_groups;
        float local = 0;
        switch (reader) {
          case 4: case 0: qgemm_rows_r16({packed, act.data(), act.size(), 1, at, row, 16 * groups, in, out.data() + 16 * i0 * item_groups, 1, 0}); break;
          case 1:
            if (file == DType::Q4_0) loads<4, true>(at, group_bytes, groups, 2048, &local);
            else loads<2, true>(at, group_bytes, groups, 4096, &local);
            break;
          case 2: loads<2, false>(at, group_bytes, groups, 0, &local); break;
          case 3: loads<4, false>(at, group_bytes, groups, 0, &local); break;
        }
        if (local == 12345.0f) sink += local;
      });
    }
  };
  const double before = read_bandwidth(size_t{1} << 30, 3) / 1e9;
  std::vector<std::vector<double>> seconds(5);
  for (int r = 0; r < rounds; r++)
    for (int k = 0; k < 5; k++) {
      const int reader = (r + k) % 5;
      set_stream_prefetch(reader != 4);
      const size_t first = per_round * static_cast<size_t>((r * 5 + k * 3) % 16);
      const double t0 = now();
      read_round(reader, first);
      seconds[reader].push_back(now() - t0);
    }
  const double after = read_bandwidth(size_t{1} << 30, 3) / 1e9;
  std::printf("%s packed, %d threads, %d rounds; read bandwidth %.1f GB/s before, %.1f after\n", file == DType::Q4_K ? "q4_k" : file == DType::Q6_K ? "q6_k" : "q4_0",
              threads, rounds, before, after);
  for (int k = 0; k < 5; k++) {
    auto s = seconds[k];
    std::sort(s.begin(), s.end());
    std::printf("  %-11s %6.1f GB/s (median of %zu rounds; best %.1f)\n", names[k], per_round * matrix / s[s.size() / 2] * 1e-9, s.size(), per_round * matrix / s[0] * 1e-9);
  }
  return sink == 1.0f ? 2 : 0;
}
