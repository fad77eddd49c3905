// Which phase the machine is in, sample by sample: the read bandwidth (measure.h, the pool's threads) beside the round
// trip of one cache line between two threads pinned to CPUs 0 and 1, each spinning until the other has written it.
//   g++ -O3 -std=c++17 -pthread -Inative/src bench/native/phase-probe.cc native/src/{measure,pool,simd}.cc -o /tmp/phase-probe
//   /tmp/phase-probe [samples=30] [pause ms=2000]
// On the AMD EPYC Zen 4 virtual machine (nineteenth session, 110 samples 2 s apart) the round trip was ~54 ns while the
// machine read below 40 GB/s and ~337 ns while it read 50–69 GB/s: in the fast phases the two vCPUs likely sit on
// different core complexes, each with its own path to memory. Timings taken beside a sample can be sorted by phase.
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "measure.h"
#include "pool.h"

namespace {

double seconds() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

// Nanoseconds for one round trip of a cache line between CPUs 0 and 1 (the mean over `trips`).
double round_trip_ns(int trips) {
  alignas(64) static std::atomic<int> line{0};
  line.store(0);
  std::thread other([&] {
    pin(1);
    for (int i = 0; i < trips; i++) {
      while (line.load(std::memory_order_acquire) != 2 * i + 1) {
      }
      line.store(2 * i + 2, std::memory_order_release);
    }
  });
  pin(0);
  const double started = seconds();
  for (int i = 0; i < trips; i++) {
    line.store(2 * i + 1, std::memory_order_release);
    while (line.load(std::memory_order_acquire) != 2 * i + 2) {
    }
  }
  const double elapsed = seconds() - started;
  other.join();
  return elapsed / trips * 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  const int samples = argc > 1 ? std::atoi(argv[1]) : 30, pause_ms = argc > 2 ? std::atoi(argv[2]) : 2000;
  olmoe::set_threads(2);
  for (int s = 0; s < samples; s++) {
    const double bandwidth = olmoe::read_bandwidth(size_t{1} << 29, 1, true) / 1e9;
    std::printf("read %5.1f GB/s   round trip %4.0f ns\n", bandwidth, round_trip_ns(200000));
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds(pause_ms));
  }
}
