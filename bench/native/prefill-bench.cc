// Microbenchmark of prefill's many-token matmul paths outside Node, one thread, weights in cache:
//   g++ -O3 -std=c++17 -pthread -Inative/src bench/native/prefill-bench.cc \ (one line)
//       native/src/{kernels,experts,quant,q8,qdot,qdot-avx2,qdot-vnni,qgemm-vnni,qgemm-r16,qgemm-r16-avx2,packed,mapping,qgemm-amx,amx,simd,pool,train-vector,train-vector-avx2,train-vector-avx512}.cc -o /tmp/prefill-bench
//   /tmp/prefill-bench [dtype=4] [tokens=128] [reps=5]
// Prints GFLOP/s (2 per multiply-add) of (a) the float tile path on dequantized rows (gemm_tiles on activations
// rounded to q8), (b) the integer path of qgemm.h (quantize once, then qgemm_rows: AMX int8 tiles where the
// CPU has them, else the VNNI tiles for q4_0 / q8_0, else qdot_rows), (b') the VNNI tiles or qdot_rows alone,
// (b'') quantizing the activations alone, (c) qdot_rows (decode's
// kernel) for a 192 × 2048 weight matrix, best of reps. Weights are random; the machine's other load shows as noise.
#include <algorithm>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "gemm.h"
#include "kernels.h"
#include "pool.h"
#include "q8.h"
#include "qdot.h"
#include "qgemm.h"
#include "quant.h"
#include "simd.h"

using namespace olmoe;

static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// Random bytes with every block's f16 scales set to values in [2^-8, 2^-7) (no inf / NaN scales).
static std::vector<uint8_t> random_weights(DType dtype, size_t rows, size_t in, uint32_t seed) {
  std::vector<uint8_t> w(row_bytes(dtype, in) * rows);
  std::mt19937 rng(seed);
  for (auto& b : w) b = static_cast<uint8_t>(rng());
  struct Layout { DType dtype; size_t bytes; std::vector<size_t> scales; };
  const Layout layouts[] = {{DType::Q4_0, 18, {0}}, {DType::Q8_0, 34, {0}}, {DType::Q4_K, 144, {0, 2}}, {DType::Q5_K, 176, {0, 2}},
                            {DType::Q6_K, 210, {208}}, {DType::F16, 2, {0}}};
  for (const Layout& l : layouts) {
    if (l.dtype != dtype) continue;
    for (size_t at = 0; at < w.size(); at += l.bytes)
      for (size_t s : l.scales) {
        const uint16_t h = static_cast<uint16_t>(0x1C00 | (rng() & (dtype == DType::F16 ? 0x83FF : 0x3FF)));
        std::memcpy(&w[at + s], &h, 2);
      }
  }
  return w;
}

int main(int argc, char** argv) {
  const DType dtype = static_cast<DType>(argc > 1 ? std::atoi(argv[1]) : 4);
  const size_t tokens = argc > 2 ? std::atoi(argv[2]) : 128;
  const int reps = argc > 3 ? std::atoi(argv[3]) : 5;
  const size_t in = 2048, rows = 192;
  set_threads(1);
  std::vector<float> x(tokens * in), out(tokens * rows), out2(tokens * rows);
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  auto w = random_weights(dtype, rows, in, 1);
  const double flops = 2.0 * tokens * rows * in;
  auto time = [&](auto fn) {
    double best = 1e9;
    for (int r = 0; r < reps; r++) {
      const double t0 = now();
      fn();
      best = std::min(best, now() - t0);
    }
    return flops / best * 1e-9;
  };
  std::printf("dtype %d, %zu tokens, %zu x %zu, 1 thread, SIMD %s\n", static_cast<int>(dtype), tokens, rows, in, simd_level());
  std::vector<float> rounded, transposed(padded_tokens(tokens) * in);
  std::printf("float tiles (gemm_tiles): %.1f GFLOP/s\n", time([&] {
    transpose_tokens(rounded_rows(dtype, x.data(), tokens, in, rounded), in, tokens, in, transposed.data(), padded_tokens(tokens));
    gemm_tiles(transposed.data(), padded_tokens(tokens), tokens, in, w.data(), dtype, 0, rows, Output{out.data(), rows});
  }));
  std::printf("  of which the tiles (activations transposed once): %.1f GFLOP/s\n", time([&] {
    gemm_tiles(transposed.data(), padded_tokens(tokens), tokens, in, w.data(), dtype, 0, rows, Output{out.data(), rows});
  }));
  if (!is_quantized(dtype)) return 0;
  std::vector<uint8_t> buffer;
  const size_t stride = q8_row_bytes(dtype, in);
  auto args = [&](float* o) { return QDotArgs{dtype, nullptr, stride, tokens, w.data(), row_bytes(dtype, in), rows, in, o, 1, rows}; };
  std::printf("integer GEMM (qgemm_rows): %.1f GFLOP/s\n", time([&] {
    QDotArgs a = args(out2.data());
    a.act = quantize_rows(dtype, x.data(), tokens, in, buffer);
    qgemm_rows(a);
  }));
  std::printf("  of which quantize_rows: %.1f GFLOP/s-equivalent\n", time([&] { quantize_rows(dtype, x.data(), tokens, in, buffer); }));
  std::printf("VNNI tiles / qdot_rows without AMX: %.1f GFLOP/s\n", time([&] {
    QDotArgs a = args(out.data());
    a.act = quantize_rows(dtype, x.data(), tokens, in, buffer);
    if ((dtype == DType::Q4_0 || dtype == DType::Q8_0) && cpu().level == Simd::Avx512 && cpu().vnni) qgemm_rows_vnni(a);
    else qdot_rows(a);
  }));
  double diff = 0, scale = 0;
  for (size_t i = 0; i < out.size(); i++) diff = std::max(diff, double(std::fabs(out[i] - out2[i]))), scale = std::max(scale, double(std::fabs(out[i])));
  std::printf("  max |VNNI − qgemm| = %.3g (max |y| %.3g)\n", diff, scale);
  std::printf("qdot_rows (decode kernel): %.1f GFLOP/s\n", time([&] {
    QDotArgs a = args(out2.data());
    a.act = quantize_rows(dtype, x.data(), tokens, in, buffer);
    qdot_rows(a);
  }));
  return 0;
}
