#include "pool.h"

#include <algorithm>
#include <chrono>
#include <memory>

namespace olmoe {

namespace {
std::unique_ptr<ThreadPool> global_pool;
constexpr auto kSpin = std::chrono::microseconds(2000);
constexpr size_t kMaxItems = size_t{1} << 31;

// The chunk claimed at `begin` of a job of n items over `threads` threads: a 1/(2·threads) share of what is left,
// at least one item ("guided" scheduling). The first chunks are long (long row streams for the prefetchers, few
// claims), the last ones single items, so the threads finish within one item of each other: with a fixed four
// quarters (two per thread) decode's jobs of 8–64 items ended with one thread alone on a quarter, at half the
// memory bandwidth, while the other waited.
size_t chunk_end(size_t n, size_t begin, size_t threads) {
  const size_t share = (n - begin + 2 * threads - 1) / (2 * threads);
  return begin + (share > 0 ? share : 1);
}
}  // namespace

ThreadPool::ThreadPool(int threads) {
  try {
    for (int i = 1; i < threads; i++) workers_.emplace_back([this] { work(); });
  } catch (...) {
    stop();  // the system refused a thread: join the ones started (a joinable std::thread must not be destroyed)
    throw;
  }
}

ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& worker : workers_) worker.join();
  workers_.clear();
}

void ThreadPool::work() {
  size_t seen = 0;
  for (;;) {
    // Spin for kSpin before sleeping, reading the clock only every 64 pauses (clock_gettime on every pause was ~6 %
    // of a decode's samples).
    const auto spin_until = std::chrono::steady_clock::now() + kSpin;
    for (unsigned spins = 1; generation_.load(std::memory_order_acquire) == seen && !stop_; spins++) {
      spin_pause();
      if (spins % 64 == 0 && std::chrono::steady_clock::now() >= spin_until) break;
    }
    if (generation_.load(std::memory_order_acquire) == seen && !stop_) {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_.load() != seen; });
    }
    if (stop_) return;
    seen = generation_.load(std::memory_order_acquire);
    run_chunks(seen);
  }
}

// Claim and run chunks of job `generation` until none is left. The job's function and sizes are read only after
// a successful claim, while the caller still waits for that chunk, so a late worker never touches a finished job.
void ThreadPool::run_chunks(size_t generation) {
  const uint64_t tag = static_cast<uint64_t>(generation & 0xffffffffu) << 32;
  uint64_t current = claim_.load(std::memory_order_acquire);
  for (;;) {
    if ((current & ~uint64_t{0xffffffffu}) != tag) return;  // another job's claim word
    const size_t begin = static_cast<size_t>(current & 0xffffffffu);
    // (a stale size or chunk bound read here fails the compare-exchange below: the job it belongs to is closed)
    const size_t n = job_size_.load(std::memory_order_relaxed);
    if (begin >= n) return;
    const size_t end = begin + std::min(chunk_end(n, begin, static_cast<size_t>(threads())) - begin, job_max_chunk_.load(std::memory_order_relaxed));
    if (!claim_.compare_exchange_weak(current, tag | end, std::memory_order_acq_rel, std::memory_order_acquire)) continue;
    (*job_)(begin, end);
    finished_.fetch_add(end - begin, std::memory_order_acq_rel);
    current = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::parallel_for(size_t n, const std::function<void(size_t, size_t)>& fn, size_t max_chunk) {
  if (workers_.empty() || n < 2) {
    if (n > 0) fn(0, n);
    return;
  }
  if (n >= kMaxItems) {  // claim words hold 32-bit positions: split into kMaxItems units of whole items
    const size_t per = (n + kMaxItems - 1) / kMaxItems;
    return parallel_for((n + per - 1) / per, [&](size_t u0, size_t u1) { fn(u0 * per, std::min(n, u1 * per)); }, std::max<size_t>(1, max_chunk / per));
  }
  std::lock_guard<std::mutex> one_job(submit_);
  job_ = &fn;
  job_size_.store(n, std::memory_order_relaxed);
  job_max_chunk_.store(std::max<size_t>(1, max_chunk), std::memory_order_relaxed);
  finished_.store(0, std::memory_order_relaxed);
  size_t generation;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation = generation_.load(std::memory_order_relaxed) + 1;
    claim_.store(static_cast<uint64_t>(generation & 0xffffffffu) << 32, std::memory_order_release);
    generation_.store(generation, std::memory_order_release);
  }
  wake_.notify_all();
  run_chunks(generation);
  while (finished_.load(std::memory_order_acquire) != n) spin_pause();
  // Close the job before its sizes change: a worker still holding this job's claim word now fails its
  // compare-exchange, even if it reads the next job's size.
  claim_.store(static_cast<uint64_t>(generation & 0xffffffffu) << 32 | 0xffffffffu, std::memory_order_release);
}

ThreadPool& pool() {
  if (!global_pool) global_pool = std::make_unique<ThreadPool>(static_cast<int>(std::thread::hardware_concurrency()));
  return *global_pool;
}

bool set_threads(int threads, std::string* error) {
  if (threads < 1) threads = 1;
  if (global_pool && global_pool->threads() == threads) return true;
  global_pool.reset();
  try {
    global_pool = std::make_unique<ThreadPool>(threads);
    return true;
  } catch (const std::exception& e) {
    if (error) *error = e.what();
    global_pool = std::make_unique<ThreadPool>(1);  // the caller's thread alone needs no new thread
    return false;
  }
}

}  // namespace olmoe
