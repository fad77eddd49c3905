// Read-only memory maps of weight files, shared per file and released when the last slice is collected.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace olmoe {

struct Mapping;

// Maps `path` (once per path) and returns the address of byte `offset`; `length` bytes must lie inside the file.
// On failure returns nullptr and sets `error`. Each successful call must be paired with release().
const char* map_slice(const std::string& path, size_t offset, size_t length, Mapping** handle, std::string* error);
void release(Mapping* handle);
// Drop this process's page mappings of the whole pages inside [address, address + length) when they lie in a live
// mapping (the bytes stay valid: touching them maps them again from the page cache). Returns whether they did.
bool release_pages(const void* address, size_t length);
// Rows `ids` of the table [address, address + length) (rows of `row_bytes`) read from the mapped file into `out`
// (count × row_bytes bytes) with pread: no page of the mapping is touched, so none becomes resident or has to be
// released (a decode token's embedding row). False when the table lies in no live mapping, an id is outside it or a
// read fails.
bool read_rows(const void* address, size_t length, size_t row_bytes, const int32_t* ids, size_t count, uint8_t* out);

// Fault in the whole pages inside [address, address + length) of anonymous memory, writable, in one call
// (MADV_POPULATE_WRITE, Linux 5.14), then written once each (by the pool's threads from 16 pages on; call it from a
// JavaScript thread, not from inside a pool job): on the virtual machine measured, where a first write to a
// page trapped for ~12–15 µs, ~1 µs a page populated and ~5.5 µs for its first write, after which stores run at memory
// speed. Returns false where the kernel cannot (the pages then fault in when written, as before).
bool populate_pages(void* address, size_t length);

// Transparent huge pages for the large anonymous blocks (packed weights, KV caches), with OLMOE_HUGE_PAGES=1: a 2 MiB
// page is one TLB entry and one run for the hardware's stream prefetchers, where a 4 KiB page is a new start at every
// 4 KiB (AMD EPYC Zen 4, 2 threads, loads alone over a KV cache's rows: 29.3 → 34.6 GB/s; Q4_0 decode 5–10 % faster in
// the machine's fast phase). Off by default, because a huge page can cost far more to fault in than its 512 small
// ones. With the kernel's default THP defrag setting ("madvise") a fault in an advised region waits for memory
// compaction when no free 2 MiB block is left (59 ms a fault on a long-running machine, addon.cc allocate), so blocks
// are advised only from 4 MiB on and while /proc/buddyinfo shows free 2 MiB blocks for them and 256 MiB more. Even
// then, on the virtual machine measured (virtio-balloon present), some 256 MiB chunks took 170–340 ms to fault in
// where the others took 17–20 ms and small pages ~70 ms, and the peer benchmark's Q4_K_M load went from 2.8–3.0 s to
// 9.7–10.3 s: free 2 MiB blocks there were likely memory the host had taken back.
// The count of free 2 MiB blocks (whole blocks of larger orders counted in 2 MiB), 0 where /proc/buddyinfo is absent.
size_t free_huge_blocks();
// Whether a block of `bytes` is advised for huge pages (OLMOE_HUGE_PAGES=1, and the conditions above).
bool huge_pages_wanted(size_t bytes);
// Zeroed anonymous memory of huge_size(bytes), aligned to 2 MiB, advised for huge pages where huge_pages_wanted;
// nullptr on failure. huge_free with the same `bytes` returns it.
void* huge_allocate(size_t bytes);
// Memory from huge_allocate(bytes) grown to new_bytes: its pages moved (not copied) to the start of a new block of
// new_bytes, the rest zero; nullptr (the old memory untouched) on failure.
void* huge_grow(void* memory, size_t bytes, size_t new_bytes);
// `bytes` rounded up to whole 2 MiB pages: what huge_allocate maps.
size_t huge_size(size_t bytes);
void huge_free(void* memory, size_t bytes);

}  // namespace olmoe
