// Read-only memory maps of weight files, shared per file and released when the last slice is collected.
#pragma once
#include <cstddef>
#include <string>

namespace olmoe {

struct Mapping;

// Maps `path` (once per path) and returns the address of byte `offset`; `length` bytes must lie inside the file.
// On failure returns nullptr and sets `error`. Each successful call must be paired with release().
const char* map_slice(const std::string& path, size_t offset, size_t length, Mapping** handle, std::string* error);
void release(Mapping* handle);

}  // namespace olmoe
