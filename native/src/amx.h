// Intel AMX (Intel SDM vol. 1 ch. 18): eight tile registers of up to 16 rows × 64 bytes, shaped by a tile
// configuration that each thread loads (ldtilecfg) before its first tile instruction. Two kernels use them with
// different shapes — the training GEMM's bf16 tiles (train-gemm-bf16.inc) and the int8 tiles of quantized prefill
// (qgemm-amx.cc) — so a thread loads a configuration only when it differs from the one it last loaded.
// Linux hands out the tile state only on request (arch_prctl(ARCH_REQ_XCOMP_PERM), once per process).
#pragma once
#include <cstdint>

namespace olmoe {

struct alignas(64) TileConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

enum class AmxKind { Bf16, Int8 };

// The CPU has AMX-TILE and the kind's instructions (AMX-BF16: tdpbf16ps, AMX-INT8: tdpbssd), the kernel granted the
// tile state, and OLMOE_AMX=0 did not decline it. Checked once per process and kind.
bool amx_granted(AmxKind kind);

// Load `config` on this thread unless it is the one this thread last loaded (configs are static objects).
void amx_use(const TileConfig& config);

}  // namespace olmoe
