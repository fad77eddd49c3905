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

// Zeroed anonymous memory of at least `bytes`, aligned to 2 MiB and advised for transparent huge pages (THP in
// "madvise" mode gives none to malloc'd memory; the packed weights); nullptr on failure. huge_free with the same
// `bytes` returns it.
void* huge_allocate(size_t bytes);
// `bytes` rounded up to whole 2 MiB pages: what huge_allocate maps.
size_t huge_size(size_t bytes);
void huge_free(void* memory, size_t bytes);

}  // namespace olmoe
