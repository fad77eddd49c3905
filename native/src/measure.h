// The machine's limits, measured the way decode and prefill use it (the thread pool's threads, the SIMD level the
// kernels run at), for `olmoe bench`: decode is bound by memory read bandwidth, prefill by FMA throughput.
#pragma once
#include <cstddef>

namespace olmoe {

// Bytes per second reading `bytes` of memory (a buffer far larger than the caches), every pool thread summing its
// own contiguous chunks; the best of `repeats` repeats, each a plain pass and (with SIMD) one that prefetches every
// line ahead (measure.cc). 0 when the buffer cannot be allocated. With `keep` the buffer stays mapped for the next call
// of the same size (which then skips mapping and touching it); a call without it, or of another size, unmaps it.
double read_bandwidth(size_t bytes, int repeats, bool keep = false);
// FP32 multiply-adds per second × 2 (FLOP/s): independent FMA chains in registers on every pool thread; best of
// `repeats` runs.
double fp32_peak(int repeats);

}  // namespace olmoe
