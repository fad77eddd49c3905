#include "amx.h"

#include <cstdlib>
#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace olmoe {

namespace {

#if defined(__x86_64__)
bool request_tile_state() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(edx & (1u << 24))) return false;  // AMX-TILE
  const char* env = std::getenv("OLMOE_AMX");
  if (env && std::string(env) == "0") return false;
#if defined(SYS_arch_prctl)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;
#endif
}

bool has_kind(AmxKind kind) {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
  return kind == AmxKind::Bf16 ? (edx & (1u << 22)) != 0 : (edx & (1u << 25)) != 0;
}
#endif

}  // namespace

bool amx_granted(AmxKind kind) {
#if defined(__x86_64__)
  static const bool tiles = request_tile_state();
  static const bool bf16 = tiles && has_kind(AmxKind::Bf16), int8 = tiles && has_kind(AmxKind::Int8);
  return kind == AmxKind::Bf16 ? bf16 : int8;
#else
  (void)kind;
  return false;
#endif
}

#if defined(__x86_64__)
__attribute__((target("amx-tile"))) void amx_use(const TileConfig& config) {
  thread_local const TileConfig* loaded = nullptr;  // the configuration is per thread (saved with it on a switch)
  if (loaded == &config) return;
  _tile_loadconfig(&config);
  loaded = &config;
}
#else
void amx_use(const TileConfig&) {}
#endif

}  // namespace olmoe
