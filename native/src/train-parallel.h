// Work items claimed one at a time by whichever thread is running: items of uneven size (causal attention blocks,
// experts of different loads) even out across threads and around a core another process holds. Each item is
// computed the same way whoever runs it, so results do not depend on the thread count.
#pragma once
#include <algorithm>
#include <atomic>
#include <cstddef>

#include "pool.h"

namespace olmoe {

template <typename Fn>
void parallel_items(size_t n, const Fn& fn) {
  const size_t workers = std::min(n, static_cast<size_t>(pool().threads()));
  if (workers <= 1) {
    for (size_t i = 0; i < n; i++) fn(i);
    return;
  }
  std::atomic<size_t> next{0};
  pool().parallel_for(workers, [&](size_t, size_t) {
    for (size_t i = next.fetch_add(1, std::memory_order_relaxed); i < n; i = next.fetch_add(1, std::memory_order_relaxed)) fn(i);
  });
}

}  // namespace olmoe
