#include "pool.h"

#include <chrono>
#include <memory>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define OLMOE_PAUSE() _mm_pause()
#else
#define OLMOE_PAUSE() std::this_thread::yield()
#endif

namespace olmoe {

namespace {
std::unique_ptr<ThreadPool> global_pool;
constexpr auto kSpin = std::chrono::microseconds(2000);

std::pair<size_t, size_t> chunk(size_t n, int parts, int index) {
  return {n * index / parts, n * (index + 1) / parts};
}
}  // namespace

ThreadPool::ThreadPool(int threads) {
  for (int i = 1; i < threads; i++) workers_.emplace_back([this, i] { work(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
}

void ThreadPool::work(int index) {
  size_t seen = 0;
  for (;;) {
    auto spin_until = std::chrono::steady_clock::now() + kSpin;
    while (generation_.load(std::memory_order_acquire) == seen && !stop_ && std::chrono::steady_clock::now() < spin_until) OLMOE_PAUSE();
    if (generation_.load(std::memory_order_acquire) == seen && !stop_) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_.load() != seen; });
    }
    if (stop_) return;
    seen = generation_.load(std::memory_order_acquire);
    auto [begin, end] = chunk(job_size_, threads(), index);
    if (begin < end) (*job_)(begin, end);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn) {
  if (workers_.empty() || n < 2) {
    if (n > 0) fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> one_job(submit_);
  job_ = &fn;
  job_size_ = n;
  pending_.store(static_cast<int>(workers_.size()), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_release);
  }
  wake_.notify_all();
  auto [begin, end] = chunk(n, threads(), 0);
  if (begin < end) fn(begin, end);
  while (pending_.load(std::memory_order_acquire) != 0) OLMOE_PAUSE();
}

ThreadPool& pool() {
  if (!global_pool) global_pool = std::make_unique<ThreadPool>(static_cast<int>(std::thread::hardware_concurrency()));
  return *global_pool;
}

void set_threads(int threads) {
  if (threads < 1) threads = 1;
  if (global_pool && global_pool->threads() == threads) return;
  global_pool.reset();
  global_pool = std::make_unique<ThreadPool>(threads);
}

}  // namespace olmoe
