// A persistent thread pool: parallel_for splits [0, n) into contiguous chunks (long first, single items last: see
// chunk_end in pool.cc) that the caller and the workers claim in order, so a worker the OS has not scheduled yet
// (another process busy on the core) delays nothing: whoever is running takes its chunks. Idle workers spin briefly
// before sleeping, because decode issues hundreds of short jobs per token and a condition-variable wake-up costs tens
// of microseconds.
#pragma once
#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace olmoe {

// One step of a spin-wait (the pool's idle workers and waiting caller, and jobs whose items wait on each other).
inline void spin_pause() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#else
  std::this_thread::yield();
#endif
}

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  int threads() const { return static_cast<int>(workers_.size()) + 1; }
  // fn(begin, end) over contiguous chunks of [0, n), each at most max_chunk items; blocks until all are done.
  void parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn, size_t max_chunk = SIZE_MAX);

 private:
  void work();
  void stop();
  void run_chunks(size_t generation);
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::mutex submit_;  // one job at a time: JS worker threads of one process share this pool
  std::condition_variable wake_;
  const std::function<void(size_t, size_t)>* job_ = nullptr;
  std::atomic<size_t> job_size_{0};
  std::atomic<size_t> job_max_chunk_{SIZE_MAX};
  std::atomic<size_t> generation_{0};
  // (generation << 32) | first unclaimed item: a claim succeeds only for the job it was meant for.
  std::atomic<uint64_t> claim_{0};
  std::atomic<size_t> finished_{0};
  std::atomic<bool> stop_{false};
};

ThreadPool& pool();
// Replace the pool; false (with the system's reason) when the threads could not be started: one thread remains.
bool set_threads(int threads, std::string* error = nullptr);

}  // namespace olmoe
