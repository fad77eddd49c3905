// packed.h: the q4_0, q4_k and q6_k repacking, the scalar twin of their kernels, and the chunks packed weights live in.
#include "packed.h"

#include <sys/mman.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "mapping.h"
#include "pool.h"
#include "q8.h"
#include "qgemm.h"
#include "quant.h"
#include "simd.h"

namespace olmoe {

DType packed_type(DType dtype) {
  static const bool on = [] {
    const char* env = std::getenv("OLMOE_PACK");
    if (env && std::strcmp(env, "0") == 0) return false;
#if defined(__x86_64__)
    const CpuFeatures& features = cpu();
    return features.level != Simd::Scalar && !qgemm_amx_available();
#else
    return false;
#endif
  }();
  return on ? packed_form(dtype) : dtype;
}

namespace {

// transpose_dwords (packed.h) by four-byte copies.
void transpose_dwords_scalar(const uint8_t* rows, size_t stride, uint8_t* out) {
  for (size_t r = 0; r < 16; r++)
    for (size_t s = 0; s < 4; s++) std::memcpy(out + 64 * s + 4 * r, rows + r * stride + 4 * s, 4);
}

#if defined(__x86_64__)
// Four rows to a vector (a 128-bit lane each), then per s two two-source permutes: ~40 vector operations where the
// scalar copies took 64 (with Q4_0 OLMoE-1B-7B's packing the largest user-space part of its load).
__attribute__((target("avx512f"))) void transpose_dwords_avx512(const uint8_t* rows, size_t stride, uint8_t* out) {
  __m512i quads[4];  // quads[k]: rows 4k..4k+3, dword 4j + s = row 4k + j's dword s
  for (int k = 0; k < 4; k++) {
    const uint8_t* r = rows + 4 * k * stride;
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r)));
    for (int j = 1; j < 4; j++) v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r + j * stride)), j);
    quads[k] = v;
  }
  for (int s = 0; s < 4; s++) {
    const __m512i pick = _mm512_setr_epi32(s, 4 + s, 8 + s, 12 + s, 16 + s, 20 + s, 24 + s, 28 + s, s, 4 + s, 8 + s, 12 + s, 16 + s, 20 + s, 24 + s, 28 + s);
    const __m512i low = _mm512_permutex2var_epi32(quads[0], pick, quads[1]), high = _mm512_permutex2var_epi32(quads[2], pick, quads[3]);
    _mm512_storeu_si512(out + 64 * s, _mm512_mask_blend_epi32(0xFF00, low, high));
  }
}

// Rows r and r + 4 to a vector (a 128-bit lane each), then a 4 × 4 transpose of dwords in each lane: the lanes of the
// result for dword s hold rows 8m..8m+3 and 8m+4..8m+7, the 32 bytes vector s takes at 32m.
__attribute__((target("avx2"))) void transpose_dwords_avx2(const uint8_t* rows, size_t stride, uint8_t* out) {
  for (int m = 0; m < 2; m++) {
    __m256i v[4];
    for (int i = 0; i < 4; i++) {
      const uint8_t* r = rows + (8 * m + i) * stride;
      v[i] = _mm256_loadu2_m128i(reinterpret_cast<const __m128i*>(r + 4 * stride), reinterpret_cast<const __m128i*>(r));
    }
    const __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
    const __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
    const __m256i s[4] = {_mm256_unpacklo_epi64(t0, t2), _mm256_unpackhi_epi64(t0, t2), _mm256_unpacklo_epi64(t1, t3), _mm256_unpackhi_epi64(t1, t3)};
    for (int k = 0; k < 4; k++) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 64 * k + 32 * m), s[k]);
  }
}
#endif

}  // namespace

TransposeDwords transpose_dwords() {
#if defined(__x86_64__)
  if (cpu().level == Simd::Avx512) return transpose_dwords_avx512;
  if (cpu().level == Simd::Avx2) return transpose_dwords_avx2;
#endif
  return transpose_dwords_scalar;
}

namespace {

// fn(out, rows, stride) for every 16-row group and block column: `rows` is the group's first row's block in the file
// layout (the others `stride` bytes apart), `out` the group's packed block.
template <typename Fn>
void pack_group_blocks(const uint8_t* src, size_t rows, size_t blocks, size_t block_bytes, uint8_t* dst, size_t group_block_bytes, const Fn& fn) {
  const size_t stride = blocks * block_bytes;
  pool().parallel_for(rows / 16, [&](size_t g0, size_t g1) {
    for (size_t g = g0; g < g1; g++)
      for (size_t b = 0; b < blocks; b++) fn(dst + (g * blocks + b) * group_block_bytes, src + 16 * g * stride + b * block_bytes, stride);
  });
}

// fn(out, block, r) for every 16-row group, block column and row r of the group: `block` is row 16g + r's block in the
// file layout (`block_bytes` each, `blocks` per row), `out` the group's packed block (`group_block_bytes`).
template <typename Fn>
void pack_groups(const uint8_t* src, size_t rows, size_t blocks, size_t block_bytes, uint8_t* dst, size_t group_block_bytes, const Fn& fn) {
  pack_group_blocks(src, rows, blocks, block_bytes, dst, group_block_bytes, [&](uint8_t* out, const uint8_t* first, size_t stride) {
    for (size_t r = 0; r < 16; r++) fn(out, first + r * stride, r);
  });
}

void pack_q4_0_r16(const uint8_t* src, size_t rows, size_t n, uint8_t* dst) {
  const TransposeDwords transpose = transpose_dwords();
  pack_group_blocks(src, rows, n / 32, 18, dst, kGroupBlockBytes, [&](uint8_t* out, const uint8_t* block, size_t stride) {
    for (size_t r = 0; r < 16; r++) std::memcpy(out + 2 * r, block + r * stride, 2);
    transpose(block + 2, stride, out + 32);
  });
}

// q4_k's 6-bit scale and min of sub-block j from its 12 packed bytes (llama.cpp's get_scale_min_k4).
void scale_min(const uint8_t* q, int j, uint8_t* scale, uint8_t* min) {
  if (j < 4) {
    *scale = q[j] & 63, *min = q[j + 4] & 63;
  } else {
    *scale = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *min = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

void pack_q4_k_r16(const uint8_t* src, size_t rows, size_t n, uint8_t* dst) {
  const TransposeDwords transpose = transpose_dwords();
  pack_group_blocks(src, rows, n / 256, 144, dst, kGroupSuperBytes, [&](uint8_t* out, const uint8_t* block, size_t stride) {
    for (size_t r = 0; r < 16; r++) {
      const uint8_t* row = block + r * stride;
      std::memcpy(out + 2 * r, row, 2);
      std::memcpy(out + 32 + 2 * r, row + 2, 2);
      for (size_t v = 0; v < 3; v++) std::memcpy(out + kSuperScales + 64 * v + 4 * r, row + 4 + 4 * v, 4);
    }
    for (size_t c = 0; c < 8; c++) transpose(block + 16 + 16 * c, stride, out + kSuperCodes + 256 * c);
  });
}

// Value 4s + t of scale group 4k + i of a row (lane r, byte t) in the packed q6_k codes: the byte of the low nibble
// vector (i / 2 ? second : first), nibble i % 2, and the high-bits vector's byte, bits 2i..2i+1 (packed.h).
size_t six_low_at(size_t k, size_t s, size_t i, size_t r, size_t t) { return kSuper6Codes + 192 * (4 * k + s) + 64 * (i / 2) + 4 * r + t; }
size_t six_high_at(size_t k, size_t s, size_t r, size_t t) { return kSuper6Codes + 192 * (4 * k + s) + 128 + 4 * r + t; }

// A row's block is first decoded to its 256 codes (0..63; llama.cpp's dequantize_row_q6_K: per half of 128, value
// 32g + l takes ql[l + 32·(g & 1)]'s low (g < 2) or high nibble and bits 2g..2g+1 of qh[l]), 32 values at a time, then
// each packed byte is written once. Decoding each value on its own and rewriting nibbles in place packed at 0.25 GB/s
// on one thread (AMD EPYC Zen 5): ~2 s of Q4_K_M's load, whose head and half of its ffn_down and attn_v are q6_k.
void pack_q6_k_r16(const uint8_t* src, size_t rows, size_t n, uint8_t* dst) {
  pack_groups(src, rows, n / 256, 210, dst, kGroupSuper6Bytes, [](uint8_t* out, const uint8_t* block, size_t r) {
    std::memcpy(out + 2 * r, block + 208, 2);
    for (size_t j = 0; j < 16; j++) out[kSuper6Scales + 16 * j + r] = block[192 + j];
    uint8_t codes[256];
    for (size_t half = 0; half < 2; half++) {
      const uint8_t *ql = block + 64 * half, *qh = block + 128 + 32 * half;
      uint8_t* code = codes + 128 * half;
      for (size_t l = 0; l < 32; l++) {
        code[l] = static_cast<uint8_t>((ql[l] & 0xF) | ((qh[l] & 3) << 4));
        code[32 + l] = static_cast<uint8_t>((ql[32 + l] & 0xF) | (((qh[l] >> 2) & 3) << 4));
        code[64 + l] = static_cast<uint8_t>((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
        code[96 + l] = static_cast<uint8_t>((ql[32 + l] >> 4) | (((qh[l] >> 6) & 3) << 4));
      }
    }
    for (size_t k = 0; k < 4; k++)
      for (size_t s = 0; s < 4; s++)
        for (size_t t = 0; t < 4; t++) {
          const uint8_t* v = codes + 64 * k + 4 * s + t;  // value 4s + t of scale groups 4k + i: v[16 i]
          out[six_low_at(k, s, 0, r, t)] = static_cast<uint8_t>((v[0] & 0xF) | ((v[16] & 0xF) << 4));
          out[six_low_at(k, s, 2, r, t)] = static_cast<uint8_t>((v[32] & 0xF) | ((v[48] & 0xF) << 4));
          out[six_high_at(k, s, r, t)] = static_cast<uint8_t>((v[0] >> 4) | ((v[16] >> 4) << 2) | ((v[32] >> 4) << 4) | ((v[48] >> 4) << 6));
        }
  });
}

// The scalar twin of the Q6_KR16 tiles: Σ_j sc_j·(Σ v·q − 32·Σq) over the 16 scale groups, times d·d_x.
float q6_k_packed_row(const uint8_t* group, size_t r, const Q8Block256* x, size_t blocks, const float* halves) {
  float sum = 0;
  for (size_t b = 0; b < blocks; b++) {
    const uint8_t* block = group + b * kGroupSuper6Bytes;
    int dots = 0;
    for (size_t j = 0; j < 16; j++) {
      const size_t k = j / 4, i = j % 4;
      int dot = -32 * x[b].sums16[j];
      for (size_t l = 0; l < 16; l++) {
        const size_t s = l / 4, t = l % 4;
        const int low = (block[six_low_at(k, s, i, r, t)] >> (4 * (i % 2))) & 0xF, high = (block[six_high_at(k, s, r, t)] >> (2 * i)) & 3;
        dot += (low | (high << 4)) * x[b].q[16 * j + l];
      }
      dots += static_cast<int8_t>(block[kSuper6Scales + 16 * j + r]) * dot;
    }
    uint16_t d;
    std::memcpy(&d, block + 2 * r, 2);
    sum += static_cast<float>(dots) * (halves[d] * x[b].d);
  }
  return sum;
}

// The scalar twin of the Q4_KR16 tiles: qdot.cc's q45_k_row over the packed fields.
float q4_k_packed_row(const uint8_t* group, size_t r, const Q8Block256* x, size_t blocks, const float* halves) {
  float sum = 0;
  for (size_t b = 0; b < blocks; b++) {
    const uint8_t* block = group + b * kGroupSuperBytes;
    uint8_t packed[12];
    for (size_t v = 0; v < 3; v++) std::memcpy(packed + 4 * v, block + kSuperScales + 64 * v + 4 * r, 4);
    int dots = 0, mins = 0;
    for (int j = 0; j < 8; j++) {
      uint8_t scale, min;
      scale_min(packed, j, &scale, &min);
      int dot = 0;
      for (int l = 0; l < 32; l++) {
        const uint8_t byte = block[kSuperCodes + 64 * (8 * (j / 2) + l / 4) + 4 * r + l % 4];
        dot += ((j % 2 ? byte >> 4 : byte) & 0xF) * x[b].q[32 * j + l];
      }
      dots += scale * dot;
      mins += min * x[b].sums32[j];
    }
    uint16_t d, dmin;
    std::memcpy(&d, block + 2 * r, 2);
    std::memcpy(&dmin, block + 32 + 2 * r, 2);
    const float dx = x[b].d;
    sum += static_cast<float>(dots) * (halves[d] * dx) - static_cast<float>(mins) * (halves[dmin] * dx);
  }
  return sum;
}

// Row r of a group's block b back in q4_0's 18 bytes.
void unpack_block(const uint8_t* group_block, size_t r, uint8_t* block) {
  std::memcpy(block, group_block + 2 * r, 2);
  for (size_t s = 0; s < 4; s++) std::memcpy(block + 2 + 4 * s, group_block + 32 + 64 * s + 4 * r, 4);
}

}  // namespace

void qgemm_rows_r16(const QDotArgs& a) {
#if defined(__x86_64__)
  if (cpu().level == Simd::Avx512 && cpu().vnni) return qgemm_rows_r16_vnni(a);
  if (cpu().level != Simd::Scalar) return qgemm_rows_r16_avx2(a);
#endif
  if (a.dtype == DType::Q4_KR16 || a.dtype == DType::Q6_KR16) {
    const auto row = a.dtype == DType::Q4_KR16 ? q4_k_packed_row : q6_k_packed_row;
    const float* halves = half_table();
    for (size_t r = 0; r < a.rows; r++)
      for (size_t t = 0; t < a.tokens; t++)
        a.out[r * a.rs + t * a.ts] = row(a.w + (r / 16) * 16 * a.w_stride, r % 16, reinterpret_cast<const Q8Block256*>(a.act + t * a.act_stride), a.n / 256, halves);
    return;
  }
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

void pack_rows(DType dtype, const uint8_t* src, size_t rows, size_t n, uint8_t* dst) {
  if (dtype == DType::Q4_K) return pack_q4_k_r16(src, rows, n, dst);
  if (dtype == DType::Q6_K) return pack_q6_k_r16(src, rows, n, dst);
  pack_q4_0_r16(src, rows, n, dst);
}

void* packed_chunk_allocate(size_t bytes) { return huge_allocate(bytes); }

void packed_chunk_free(void* memory, size_t bytes) { huge_free(memory, bytes); }

}  // namespace olmoe
