// mmap(PROT_READ, MAP_PRIVATE) of whole files: pages are read on first touch and stay in the page cache, so
// loading costs about as much as touching the pages and resident memory stays near the file size.
// A file truncated underneath a live mapping makes accesses past its new end fault (SIGBUS): checkpoints must
// not be rewritten in place while a model is loaded (olmoe's own writers write a new file and rename it, which
// leaves existing mappings on the old inode intact).
#include "mapping.h"
#include "pool.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>

namespace olmoe {

struct Mapping {
  std::string key;
  void* address = nullptr;
  size_t size = 0;
  int references = 0;
  int fd = -1;  // kept open for read_rows (the mapping's own inode, also after the path is replaced)
};

namespace {
std::mutex mutex;
std::map<std::string, Mapping*> mappings;

constexpr size_t kHugePage = size_t{2} << 20;
// huge_pages_wanted: blocks from 4 MiB on (smaller ones gain little), and only while this much memory stays free in
// whole 2 MiB blocks after them.
constexpr size_t kHugeFrom = size_t{4} << 20;
constexpr size_t kHugeReserve = size_t{256} << 20;

// Map the file at a 2 MiB-aligned address and ask for huge pages: with large page-cache folios the kernel can
// then map 2 MiB at a time, and decode, which streams weights, pays far fewer TLB misses (measured on anonymous
// memory here: 28.5 → 39.8 GB/s for the expert weights of a decode step).
void* map_aligned(int fd, size_t size) {
  void* reserved = mmap(nullptr, size + kHugePage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserved == MAP_FAILED) return MAP_FAILED;
  const uintptr_t start = reinterpret_cast<uintptr_t>(reserved);
  const uintptr_t aligned = (start + kHugePage - 1) & ~(kHugePage - 1);
  void* address = mmap(reinterpret_cast<void*>(aligned), size, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
  if (address == MAP_FAILED) {
    munmap(reserved, size + kHugePage);
    return MAP_FAILED;
  }
  if (aligned > start) munmap(reserved, aligned - start);
  const uintptr_t end = aligned + size, reserved_end = start + size + kHugePage;
  if (reserved_end > end) munmap(reinterpret_cast<void*>(end), reserved_end - end);
#ifdef MADV_HUGEPAGE
  madvise(address, size, MADV_HUGEPAGE);
#endif
  return address;
}

Mapping* open_mapping(const std::string& path, const std::string& key, std::string* error) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = "cannot open: " + std::string(std::strerror(errno));
    return nullptr;
  }
  struct stat info;
  if (fstat(fd, &info) != 0 || !S_ISREG(info.st_mode) || info.st_size == 0) {
    *error = "not a non-empty regular file";
    close(fd);
    return nullptr;
  }
  void* address = map_aligned(fd, static_cast<size_t>(info.st_size));
  if (address == MAP_FAILED) {
    *error = "mmap failed: " + std::string(std::strerror(errno));
    close(fd);
    return nullptr;
  }
  auto* mapping = new Mapping{key, address, static_cast<size_t>(info.st_size), 0, fd};
  mappings[key] = mapping;
  return mapping;
}

// Unmap, close and forget a mapping no slice holds (the caller holds `mutex`).
void unmap(Mapping* mapping) {
  munmap(mapping->address, mapping->size);
  close(mapping->fd);
  mappings.erase(mapping->key);
  delete mapping;
}
}  // namespace

// A replaced file (same path, new inode or size or time) gets a new mapping; a live one is never reused for it.
std::string identity(const std::string& path) {
  struct stat info;
  if (stat(path.c_str(), &info) != 0) return path;
  return std::to_string(info.st_dev) + ":" + std::to_string(info.st_ino) + ":" + std::to_string(info.st_size) + ":" +
         std::to_string(info.st_mtim.tv_sec) + "." + std::to_string(info.st_mtim.tv_nsec);
}

const char* map_slice(const std::string& path, size_t offset, size_t length, Mapping** handle, std::string* error) {
  std::lock_guard<std::mutex> lock(mutex);
  const std::string key = identity(path);
  auto found = mappings.find(key);
  Mapping* mapping = found != mappings.end() ? found->second : open_mapping(path, key, error);
  if (!mapping) return nullptr;
  if (offset > mapping->size || length > mapping->size - offset) {
    *error = "tensor bytes [" + std::to_string(offset) + ", " + std::to_string(offset + length) + ") lie past the end of the " +
             std::to_string(mapping->size) + "-byte file";
    if (mapping->references == 0) unmap(mapping);
    return nullptr;
  }
  mapping->references++;
  *handle = mapping;
  return static_cast<const char*>(mapping->address) + offset;
}

namespace {

// The live mapping [begin, end) lies inside, or null (the caller holds `mutex`).
Mapping* mapping_of(uintptr_t begin, uintptr_t end) {
  for (const auto& [key, mapping] : mappings) {
    const uintptr_t start = reinterpret_cast<uintptr_t>(mapping->address);
    if (begin >= start && end <= start + mapping->size) return mapping;
  }
  return nullptr;
}

}  // namespace

bool release_pages(const void* address, size_t length) {
  std::lock_guard<std::mutex> lock(mutex);
  const uintptr_t begin = reinterpret_cast<uintptr_t>(address), end = begin + length;
  if (!mapping_of(begin, end)) return false;
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t first = (begin + page - 1) & ~(page - 1), last = end & ~(page - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_DONTNEED);
  return true;
}

bool read_rows(const void* address, size_t length, size_t row_bytes, const int32_t* ids, size_t count, uint8_t* out) {
  std::lock_guard<std::mutex> lock(mutex);
  const uintptr_t begin = reinterpret_cast<uintptr_t>(address);
  const Mapping* mapping = mapping_of(begin, begin + length);
  if (!mapping) return false;
  const size_t offset = begin - reinterpret_cast<uintptr_t>(mapping->address);
  for (size_t i = 0; i < count; i++) {
    if (ids[i] < 0 || (static_cast<size_t>(ids[i]) + 1) * row_bytes > length) return false;
    for (size_t done = 0; done < row_bytes;) {
      const ssize_t got = pread(mapping->fd, out + i * row_bytes + done, row_bytes - done, static_cast<off_t>(offset + static_cast<size_t>(ids[i]) * row_bytes + done));
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      done += static_cast<size_t>(got);
    }
  }
  return true;
}

void release(Mapping* mapping) {
  std::lock_guard<std::mutex> lock(mutex);
  if (--mapping->references > 0) return;
  unmap(mapping);
}

bool populate_pages(void* address, size_t length) {
#ifndef MADV_POPULATE_WRITE
  constexpr int MADV_POPULATE_WRITE = 23;  // Linux 5.14; older headers lack it, older kernels answer EINVAL
#endif
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE)), begin = reinterpret_cast<uintptr_t>(address);
  const uintptr_t first = (begin + page - 1) & ~(page - 1), last = (begin + length) & ~(page - 1);
  if (last <= first) return true;
  const bool populated = madvise(reinterpret_cast<void*>(first), last - first, MADV_POPULATE_WRITE) == 0;
  // Then one byte of each page written (read and written back: a page may hold rows already stored). On the virtual
  // machine measured the populated page still trapped at its first write: a decode step's 32 KV rows (OLMoE-1B-7B,
  // f16, a 4 KiB page each) took 11–20 µs apiece to store, 1–2 µs once written here, where the writes cost ~5.5 µs a
  // page in one pass (Q4_K_M, 2 threads, AMD EPYC: 1.1–2.7 % faster decode, alternating in one process).
  if (populated) {
    const auto touch = [&](size_t p0, size_t p1) {
      for (size_t p = p0; p < p1; p++) {
        volatile uint8_t* byte = reinterpret_cast<volatile uint8_t*>(first + p * page);
        *byte = *byte;
      }
    };
    const size_t pages = (last - first) / page;
    // by the pool's threads: each takes its own traps (2 threads: 6.1 → 3.5 µs a page over 2,048 pages)
    if (pages >= 16) pool().parallel_for(pages, touch);
    else touch(0, pages);
  }
  return populated;
}

size_t huge_size(size_t bytes) { return (bytes + kHugePage - 1) / kHugePage * kHugePage; }

size_t free_huge_blocks() {
  // "Node 0, zone   Normal  c0 c1 … c10": free blocks of 2^order pages per order; order 9 is 2 MiB with 4 KiB pages
  FILE* file = std::fopen("/proc/buddyinfo", "r");
  if (!file) return 0;
  const long page = sysconf(_SC_PAGESIZE);
  int huge_order = 0;
  while ((static_cast<size_t>(page) << huge_order) < kHugePage) huge_order++;
  size_t blocks = 0;
  char line[512];
  while (std::fgets(line, sizeof line, file)) {
    const char* zone = std::strstr(line, "zone");
    if (!zone) continue;
    char* at = const_cast<char*>(zone) + 4;
    while (*at == ' ') at++;
    while (*at && *at != ' ') at++;  // the zone's name
    for (int order = 0;; order++) {
      char* end;
      const unsigned long long count = std::strtoull(at, &end, 10);
      if (end == at) break;
      at = end;
      if (order >= huge_order) blocks += static_cast<size_t>(count) << (order - huge_order);
    }
  }
  std::fclose(file);
  return blocks;
}

bool huge_pages_wanted(size_t bytes) {
  static const bool asked = [] {
    const char* env = std::getenv("OLMOE_HUGE_PAGES");
    return env && std::strcmp(env, "1") == 0;
  }();
  return asked && bytes >= kHugeFrom && free_huge_blocks() * kHugePage >= bytes + bytes / 4 + kHugeReserve;
}

namespace {

// Zeroed anonymous memory of huge_size(bytes) at a 2 MiB-aligned address, not advised; nullptr on failure.
void* map_aligned_anonymous(size_t bytes) {
  const size_t size = huge_size(bytes);
  // (no MAP_NORESERVE: the kernel's overcommit check refuses a size beyond memory, as malloc's would)
  void* reserved = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (reserved == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(reserved), aligned = (start + kHugePage - 1) & ~(kHugePage - 1);
  if (aligned > start) munmap(reserved, aligned - start);
  if (start + kHugePage > aligned) munmap(reinterpret_cast<void*>(aligned + size), start + kHugePage - aligned);
  return reinterpret_cast<void*>(aligned);
}

// [memory, memory + huge_size(bytes)) advised for huge pages where huge_pages_wanted.
void advise_huge(void* memory, size_t bytes) {
#ifdef MADV_HUGEPAGE
  if (huge_pages_wanted(huge_size(bytes))) madvise(memory, huge_size(bytes), MADV_HUGEPAGE);
#endif
}

}  // namespace

void* huge_allocate(size_t bytes) {
  void* memory = map_aligned_anonymous(bytes);
  if (memory) advise_huge(memory, bytes);
  return memory;
}

void* huge_grow(void* memory, size_t bytes, size_t new_bytes) {
  void* target = map_aligned_anonymous(new_bytes);
  if (!target) return nullptr;
  // The old pages move to the start of the new range (both 2 MiB-aligned: its huge pages move whole); the rest of the
  // range stays fresh memory. Advised after the move, which brings the old range's own (unadvised) mapping along.
  if (mremap(memory, huge_size(bytes), huge_size(bytes), MREMAP_MAYMOVE | MREMAP_FIXED, target) == MAP_FAILED) {
    huge_free(target, new_bytes);
    return nullptr;
  }
  advise_huge(target, new_bytes);
  return target;
}

void huge_free(void* memory, size_t bytes) {
  if (memory) munmap(memory, huge_size(bytes));
}

}  // namespace olmoe
