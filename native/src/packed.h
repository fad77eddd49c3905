// q4_0 weights repacked for the AVX-512 VNNI kernels of qgemm-r16.cc and the AVX2 ones of qgemm-r16-avx2.cc (DType::Q4_0R16), and the memory they live in.
// Layout: rows in groups of 16 (rows % 16 == 0), each group its blocks in order; block b of a group is 288 bytes,
// the same as 16 q4_0 blocks: the 16 rows' f16 scales, then four 64-byte vectors whose 32-bit lane r holds bytes
// 4s..4s+3 of row r's 16 code bytes (vector s: codes 4s..4s+3 in the low nibbles, 4s+16..4s+19 in the high).
// A group starts where its first row started in q4_0 (16 rows take the same bytes), so ranges of rows that start
// at multiples of 16 keep their byte offsets.
#pragma once
#include <cstddef>
#include <cstdint>

#include "qdot.h"

namespace olmoe {

constexpr size_t kGroupBlockBytes = 16 * 18;
// q4_k (Q4_KR16), per group of 16 rows and superblock of 256 values, 2304 bytes (as 16 q4_k blocks): the d and dmin
// of the 16 rows (f16), their 12 bytes of packed 6-bit scales and mins as in the file, in three vectors whose 32-bit
// lane r holds bytes 0..3, 4..7 and 8..11 of row r (the kernel unpacks all 16 rows' scales and mins with a few byte
// operations, after which lane r holds row r's four scales or mins of sub-blocks 0..3 or 4..7), then 32 vectors of
// codes, vector 8p + s holding in lane r bytes 4s..4s+3 of row r's 32 code bytes of sub-block pair p (sub-block 2p in
// the low nibbles, 2p + 1 in the high). Row ranges start at multiples of 16 rows × 144 bytes per 256.
constexpr size_t kGroupSuperBytes = 2304, kSuperScales = 64, kSuperCodes = 256;

// q6_k (Q6_KR16), per group and superblock 3360 bytes (as 16 q6_k blocks): the 16 rows' d (f16), their int8 scales
// ([scale group][row], 16 × 16), then the codes v (0..63) as 4 quads k of scale groups 4k..4k+3 × 4 steps s, three
// vectors each, whose 32-bit lane r holds values 4s..4s+3 of those groups of row r: the low nibbles of groups 4k and
// 4k + 1 (low, high nibble), of 4k + 2 and 4k + 3, then the four groups' high two bits (bits 2i..2i+1: group 4k + i).
constexpr size_t kGroupSuper6Bytes = 3360, kSuper6Scales = 32, kSuper6Codes = 288;

inline bool is_packed(DType dtype) { return dtype == DType::Q4_0R16 || dtype == DType::Q4_KR16 || dtype == DType::Q6_KR16; }
// Streams a one-token product of a packed type reads at once: runs of consecutive groups, tile group k walking run k
// (qgemm-r16.cc `runs`; qdot_prefetch warms their starts).
constexpr int decode_streams(DType packed) { return packed == DType::Q4_0R16 ? 4 : 2; }
// 16 bytes of each of 16 rows (`stride` apart) → four 64-byte vectors at out, vector s's 32-bit lane r holding bytes
// 4s..4s+3 of row r (every packed type's codes, and q8_0's prefill groups in qgemm-vnni.cc): two-source permutes at the
// AVX-512 level, four-byte copies below.
using TransposeDwords = void (*)(const uint8_t* rows, size_t stride, uint8_t* out);
TransposeDwords transpose_dwords();
// The packed form of q4_0, q4_k and q6_k (any CPU: pack_rows and the scalar twin run everywhere), else dtype itself.
inline DType packed_form(DType dtype) {
  switch (dtype) {
    case DType::Q4_0: return DType::Q4_0R16;
    case DType::Q4_K: return DType::Q4_KR16;
    case DType::Q6_K: return DType::Q6_KR16;
    default: return dtype;
  }
}
// The packed type weights of `dtype` are repacked to here (packed_form at the AVX2 and AVX-512 levels without AMX,
// whose tiles take the file layouts; OLMOE_PACK=0 declines), else dtype itself.
DType packed_type(DType dtype);
// rows × n weights of `dtype` (q4_0, q4_k or q6_k; rows % 16 == 0, n a whole number of blocks) into dst
// (row_bytes(packed type, n) · rows bytes), parallel over groups.
void pack_rows(DType dtype, const uint8_t* src, size_t rows, size_t n, uint8_t* dst);
// qdot_rows' contract for the packed types (rows and the row range's start multiples of 16): the VNNI tiles where
// the CPU has them (qgemm-r16.cc), else the AVX2 ones (qgemm-r16-avx2.cc), else a scalar twin.
void qgemm_rows_r16(const QDotArgs& args);
void qgemm_rows_r16_vnni(const QDotArgs& args);
void qgemm_rows_r16_avx2(const QDotArgs& args);

// Memory for packed weights, in chunks the addon hands out in pieces (one ArrayBuffer per chunk, each weight a view
// into it: V8 then sees one external allocation per chunk, where an ArrayBuffer per weight had it run a full
// mark-compact for "external memory pressure" ~60 times while OLMoE-1B-7B Q4_0 loaded). On transparent huge pages only
// with OLMOE_HUGE_PAGES=1 (mapping.h huge_allocate): decode's tiles then stream from 2 MiB pages (Q4_0 decode 58.9 /
// 63.7 → 66.8 / 65.4 tok/s in a fast phase of the AMD EPYC Zen 4, no change in a slow one), but loading can take
// several times longer (Q4_K_M 2.8–3.0 → 9.7–10.3 s in the peer benchmark there; 4.5 → 8.5–12.7 s for Q4_0 in an
// earlier session, with every chunk advised).
// A piece that does not fit in a chunk's rest starts a new chunk; the rest's pages are never written and stay virtual.
constexpr size_t kPackedChunk = size_t{256} << 20;
// Zeroed anonymous memory of `bytes` (its pages faulted in as they are written), or nullptr.
void* packed_chunk_allocate(size_t bytes);
void packed_chunk_free(void* memory, size_t bytes);

}  // namespace olmoe
