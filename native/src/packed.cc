// packed.h: the q4_0 repacking, its scalar kernel twin, and the chunks packed weights live in.
#include "packed.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "pool.h"
#include "q8.h"
#include "qgemm.h"
#include "simd.h"

namespace olmoe {

bool q4_0_packing() {
  static const bool on = [] {
    const char* env = std::getenv("OLMOE_PACK");
    if (env && std::strcmp(env, "0") == 0) return false;
#if defined(__x86_64__)
    const CpuFeatures& features = cpu();
    return features.level == Simd::Avx512 && features.vnni && !qgemm_amx_available();
#else
    return false;
#endif
  }();
  return on;
}

void pack_q4_0_r16(const uint8_t* src, size_t rows, size_t n, uint8_t* dst) {
  const size_t blocks = n / 32, stride = blocks * 18;
  pool().parallel_for(rows / 16, [&](size_t g0, size_t g1) {
    for (size_t g = g0; g < g1; g++)
      for (size_t b = 0; b < blocks; b++) {
        uint8_t* out = dst + (g * blocks + b) * kGroupBlockBytes;
        for (size_t r = 0; r < 16; r++) {
          const uint8_t* block = src + (16 * g + r) * stride + b * 18;
          std::memcpy(out + 2 * r, block, 2);
          for (size_t s = 0; s < 4; s++) std::memcpy(out + 32 + 64 * s + 4 * r, block + 2 + 4 * s, 4);
        }
      }
  });
}

namespace {

// Row r of a group's block b back in q4_0's 18 bytes.
void unpack_block(const uint8_t* group_block, size_t r, uint8_t* block) {
  std::memcpy(block, group_block + 2 * r, 2);
  for (size_t s = 0; s < 4; s++) std::memcpy(block + 2 + 4 * s, group_block + 32 + 64 * s + 4 * r, 4);
}

}  // namespace

void qgemm_rows_r16(const QDotArgs& a) {
#if defined(__x86_64__)
  if (cpu().level == Simd::Avx512 && cpu().vnni) return qgemm_rows_r16_vnni(a);
#endif
  // Scalar twin: each row's blocks unpacked to q4_0, then qdot_rows_scalar's q4_0 row.
  const size_t blocks = a.n / 32;
  thread_local std::vector<uint8_t> row;
  row.resize(blocks * 18);
  for (size_t r = 0; r < a.rows; r++) {
    const uint8_t* group = a.w + (r / 16) * 16 * a.w_stride;
    for (size_t b = 0; b < blocks; b++) unpack_block(group + b * kGroupBlockBytes, r % 16, row.data() + b * 18);
    qdot_rows_scalar({DType::Q4_0, a.act, a.act_stride, a.tokens, row.data(), a.w_stride, 1, a.n, a.out + r * a.rs, a.rs, a.ts});
  }
}

namespace {

constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kChunk = size_t{64} << 20;

struct Chunk {
  uint8_t* base;
  size_t size, used;
  size_t live;
};

std::mutex chunk_mutex;
Chunk* current = nullptr;

Chunk* new_chunk(size_t at_least) {
  const size_t size = (std::max(at_least, kChunk) + kHugePage - 1) / kHugePage * kHugePage;
  void* reserved = mmap(nullptr, size + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (reserved == MAP_FAILED) return nullptr;
  const uintptr_t start = reinterpret_cast<uintptr_t>(reserved), aligned = (start + kHugePage - 1) & ~(kHugePage - 1);
  if (aligned > start) munmap(reserved, aligned - start);
  if (start + kHugePage > aligned) munmap(reinterpret_cast<void*>(aligned + size), start + kHugePage - aligned);
#ifdef MADV_HUGEPAGE
  madvise(reinterpret_cast<void*>(aligned), size, MADV_HUGEPAGE);
#endif
  return new Chunk{reinterpret_cast<uint8_t*>(aligned), size, 0, 0};
}

}  // namespace

void* packed_allocate(size_t bytes, void** handle) {
  std::lock_guard<std::mutex> lock(chunk_mutex);
  const size_t rounded = (bytes + 63) / 64 * 64;
  if (!current || current->size - current->used < rounded) {
    Chunk* fresh = new_chunk(rounded);
    if (!fresh) return nullptr;
    if (current && current->live == 0) {
      munmap(current->base, current->size);
      delete current;
    }
    current = fresh;
  }
  void* piece = current->base + current->used;
  current->used += rounded;
  current->live++;
  *handle = current;
  return piece;
}

void packed_free(void* handle) {
  std::lock_guard<std::mutex> lock(chunk_mutex);
  Chunk* chunk = static_cast<Chunk*>(handle);
  if (--chunk->live > 0 || chunk == current) return;
  munmap(chunk->base, chunk->size);
  delete chunk;
}

}  // namespace olmoe
